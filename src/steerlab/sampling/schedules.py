"""Noise schedules, in float64: DDPM's squared-cosine betas and the Karras (EDM) sigma ladder."""

from __future__ import annotations

import math

import torch


def squaredcos_cap_v2(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas ``[T]`` of the cosine schedule (Nichol & Dhariwal; diffusers' ``squaredcos_cap_v2``):
    ``beta_i = min(1 - abar(i+1)/abar(i), max_beta)`` with ``abar(t) = cos((t/T + 0.008)/1.008 * pi/2)**2``."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")

    def abar(t: float) -> float:
        return math.cos((t / num_train_timesteps + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - abar(i + 1) / abar(i), max_beta) for i in range(num_train_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``abar_t = prod_{i<=t} (1 - beta_i)``, float64 ``[T]``."""
    return torch.cumprod(1 - betas.double(), 0)


def inference_timesteps(num_train_timesteps: int, num_inference_steps: int) -> list[int]:
    """Descending training indices visited by a sampler with ``num_inference_steps`` steps, evenly spaced
    as diffusers' "leading" spacing: ``[(n-1)*r, ..., r, 0]`` with ``r = T // n``."""
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}")
    r = num_train_timesteps // num_inference_steps
    return [k * r for k in reversed(range(num_inference_steps))]


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """``n + 1`` descending sigmas ``sigma_i = (smax^(1/rho) + i/n (smin^(1/rho) - smax^(1/rho)))^rho``,
    ``i = 0..n`` (so the ladder ends at ``sigma_min``), float64."""
    if n < 1:
        raise ValueError(f"need at least one step, got n={n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(n + 1, dtype=torch.float64) / n
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + i * (b - a)) ** rho
