"""Diffusion and flow-matching policies over action chunks — one class, two generative processes.

- **diffusion** (diffusion_policy): epsilon-prediction, DDPM training with the squared-cosine schedule,
  sampled by DDPM ancestral, DDIM(eta) or RES.
- **flow** (pi0): velocity target ``u = noise - action`` on ``x_t = t noise + (1 - t) action``, training times
  ``t ~ Beta(a, b) * 0.999 + 0.001`` (pi0: a = 1.5, b = 1), sampled by Euler (pi0), Heun or RES from
  ``t = 1`` to ``t = 0``.

Both condition on the min-max-normalized observation history (flattened) and predict a min-max-normalized
chunk ``[B, horizon, A]`` of which the first ``n_action_steps`` are executed (receding horizon). The
denoiser is an MLP (low-dimensional tasks) or diffusion_policy's ConditionalUnet1D with FiLM.

For steering, :meth:`GenerativePolicy.sample` exposes the chain as a function of the initial noise ``z``,
the per-step noise source and the gradient mode (see :mod:`steerlab.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from steerlab.data.normalize import MinMax
from steerlab.nets.denoiser_mlp import DenoiserMLP
from steerlab.nets.unet1d import ConditionalUnet1D
from steerlab.policy import Policy
from steerlab.sampling import (
    NoiseSource, alphas_cumprod, eps_to_x0, fresh, inference_timesteps, karras_sigmas, no_noise, sample_ddim,
    sample_ddpm, sample_euler, sample_heun, sample_res, squaredcos_cap_v2, velocity_to_x0,
)

FLOW_TIME_SCALE = 1000.0  # flow times in [0, 1] are embedded as t * 1000, the range of diffusion indices


@dataclass(frozen=True)
class DenoiserConfig:
    arch: Literal["mlp", "unet"] = "mlp"
    """'mlp' (flattened chunk, residual MLP) or 'unet' (ConditionalUnet1D with FiLM)"""
    width: int = 256
    """MLP hidden width"""
    depth: int = 4
    """MLP dense layers in the residual stack (even)"""
    time_embed_dim: int = 64
    """size of the sinusoidal time embedding"""
    down_dims: tuple[int, ...] = (64, 128, 256)
    """UNet channel widths per level (diffusion_policy: 256, 512, 1024)"""
    kernel_size: int = 5
    n_groups: int = 8


@dataclass(frozen=True)
class DiffusionConfig:
    kind: Literal["diffusion"] = "diffusion"
    horizon: int = 16
    """predicted chunk length"""
    n_obs_steps: int = 2
    """observation history length"""
    n_action_steps: int = 8
    """actions executed from each chunk before predicting again"""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    num_train_timesteps: int = 100
    sampler: Literal["ddpm", "ddim", "res"] = "ddpm"
    """inference sampler"""
    num_inference_steps: int = 100
    eta: float = 0.0
    """DDIM stochasticity"""
    clip_sample: float | None = 1.0
    """clip the predicted clean chunk to [-c, c] in DDPM/DDIM (None: no clip)"""
    use_clipped_model_output: bool = False
    """DDIM with clip_sample: re-derive eps from the clipped clean chunk (diffusers'
    DDIMScheduler.step(use_clipped_model_output=True)); False keeps the model's eps (diffusers' default, which
    diffusion_policy uses)"""
    stats_samples: int | None = None
    """rows used for the normalizer statistics; None: all"""


@dataclass(frozen=True)
class FlowConfig:
    kind: Literal["flow"] = "flow"
    horizon: int = 16
    """predicted chunk length"""
    n_obs_steps: int = 2
    """observation history length"""
    n_action_steps: int = 8
    """actions executed from each chunk before predicting again"""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    time_beta: tuple[float, float] = (1.5, 1.0)
    """training times t ~ Beta(a, b) * 0.999 + 0.001 (t = 1 is noise)"""
    sampler: Literal["euler", "heun", "res"] = "euler"
    """inference sampler"""
    num_inference_steps: int = 10
    stats_samples: int | None = None
    """rows used for the normalizer statistics; None: all"""


GenerativeConfig = DiffusionConfig | FlowConfig


def build_denoiser(cfg: DenoiserConfig, horizon: int, act_dim: int, cond_dim: int) -> torch.nn.Module:
    if cfg.arch == "mlp":
        return DenoiserMLP(horizon, act_dim, cond_dim, cfg.width, cfg.depth, cfg.time_embed_dim)
    if cfg.arch == "unet":
        return ConditionalUnet1D(act_dim, cond_dim, cfg.time_embed_dim, tuple(cfg.down_dims), cfg.kernel_size, cfg.n_groups)
    raise ValueError(f"unknown denoiser arch {cfg.arch!r}; use 'mlp' or 'unet'")


class GenerativePolicy(Policy):
    def __init__(self, cfg: GenerativeConfig, obs_dim: int, act_dim: int):
        super().__init__()
        if cfg.n_action_steps > cfg.horizon:
            raise ValueError(f"n_action_steps ({cfg.n_action_steps}) cannot exceed horizon ({cfg.horizon})")
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.n_obs_steps, self.n_action_steps = cfg.n_obs_steps, cfg.n_action_steps
        self.net = build_denoiser(cfg.denoiser, cfg.horizon, act_dim, obs_dim * cfg.n_obs_steps)
        self.obs_norm = MinMax(obs_dim)
        self.act_norm = MinMax(act_dim)
        self.register_buffer("env_low", torch.zeros(act_dim))
        self.register_buffer("env_high", torch.ones(act_dim))
        if cfg.kind == "diffusion":
            self.abar = alphas_cumprod(squaredcos_cap_v2(cfg.num_train_timesteps))  # float64, not a parameter

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (self.cfg.horizon, self.act_dim)

    def fit_normalizers(self, obs: np.ndarray, action: np.ndarray, env_low: np.ndarray, env_high: np.ndarray,
                        episode_ends=None, seed: int = 0):
        self.obs_norm = MinMax.fit(obs, self.cfg.stats_samples, seed)
        self.act_norm = MinMax.fit(action, self.cfg.stats_samples, seed)
        self.env_low.copy_(torch.as_tensor(env_low, dtype=torch.float32))
        self.env_high.copy_(torch.as_tensor(env_high, dtype=torch.float32))

    # ------------------------------------------------------------------------------------------- the chain

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observation history ``[B, n_obs, Do]`` -> conditioning vector ``[B, n_obs * Do]``."""
        self.check_obs(obs, self.obs_dim)
        return self.obs_norm.normalize(obs).flatten(1)

    def denoiser(self, cond: torch.Tensor):
        """The network as the sampler sees it: ``eps_fn(x, t)`` (diffusion) or ``velocity_fn(x, t)`` (flow)."""
        if self.cfg.kind == "diffusion":
            return lambda x, t: self.net(x, t, cond.to(x.dtype))
        return lambda x, t: self.net(x, t * FLOW_TIME_SCALE, cond.to(x.dtype))

    def sample(self, cond: torch.Tensor, z: torch.Tensor, *, noise: NoiseSource | None = None, grad="none",
               sampler: str | None = None, num_steps: int | None = None, denoiser=None) -> torch.Tensor:
        """Normalized chunk ``[B, H, A]`` from the initial noise ``z [B, H, A]``.

        ``noise`` is the per-step noise source (default: ``fresh()`` for DDPM and stochastic DDIM, none for
        the ODE samplers); ``grad`` is ``none`` | ``full`` | ``checkpoint``; ``sampler`` / ``num_steps``
        override the config's inference sampler; ``denoiser`` replaces :meth:`denoiser` ``(cond)`` with a
        function of the same convention (e.g. one that adds a guidance term), run by whichever sampler applies.
        """
        cfg = self.cfg
        if z.shape[1:] != self.chunk_shape or z.shape[0] != cond.shape[0]:
            raise ValueError(f"z must be [B={cond.shape[0]}, {cfg.horizon}, {self.act_dim}], got {list(z.shape)}")
        name, n = sampler or cfg.sampler, num_steps or cfg.num_inference_steps
        fn = self.denoiser(cond) if denoiser is None else denoiser
        if cfg.kind == "diffusion":
            if name == "res":
                return sample_res(eps_to_x0(fn, self.abar), z, karras_sigmas(n, *self._sigma_range()), noise=noise, grad=grad)
            ts = inference_timesteps(cfg.num_train_timesteps, n)
            if name == "ddpm":
                return sample_ddpm(fn, z, self.abar, ts, noise=noise, grad=grad, clip_sample=cfg.clip_sample)
            if name == "ddim":
                return sample_ddim(fn, z, self.abar, ts, eta=cfg.eta, noise=noise, grad=grad, clip_sample=cfg.clip_sample,
                                   use_clipped_model_output=cfg.use_clipped_model_output)
        else:
            if name == "euler":
                return sample_euler(fn, z, n, noise=noise, grad=grad)
            if name == "heun":
                return sample_heun(fn, z, n, noise=noise, grad=grad)
            if name == "res":
                return sample_res(velocity_to_x0(fn), z, karras_sigmas(n, 1e-2, 1e2), noise=noise, grad=grad)
        raise ValueError(f"sampler {name!r} does not apply to a {cfg.kind} policy")

    def _sigma_range(self) -> tuple[float, float]:
        s = torch.sqrt((1 - self.abar) / self.abar)
        return float(s[0]), float(s[-1])

    def default_noise(self, generator: torch.Generator | None) -> NoiseSource:
        stochastic = self.cfg.kind == "diffusion" and (self.cfg.sampler == "ddpm" or self.cfg.eta > 0)
        return fresh(generator) if stochastic else no_noise()

    def unnormalize_actions(self, chunk: torch.Tensor) -> torch.Tensor:
        a = self.act_norm.unnormalize(chunk)
        return torch.maximum(torch.minimum(a, self.env_high), self.env_low)

    # ---------------------------------------------------------------------------------- Policy interface

    def compute_loss(self, batch, generator=None, step: int = 0):
        cond = self.condition(batch["obs"])
        x = self.act_norm.normalize(batch["action"])
        b = x.shape[0]
        n = torch.randn(x.shape, generator=generator, device=x.device)
        if self.cfg.kind == "diffusion":
            t = torch.randint(self.cfg.num_train_timesteps, (b,), generator=generator, device=x.device)
            ab = self.abar[t].to(x.dtype).view(b, 1, 1)
            pred = self.net(ab.sqrt() * x + (1 - ab).sqrt() * n, t.to(x.dtype), cond)
            target = n
        else:
            t = _beta(*self.cfg.time_beta, b, generator, x.device) * 0.999 + 0.001
            tt = t.view(b, 1, 1)
            pred = self.net(tt * n + (1 - tt) * x, t * FLOW_TIME_SCALE, cond)
            target = n - x
        w = batch["action_mask"].to(x.dtype).unsqueeze(-1)
        loss = (((pred - target) ** 2) * w).sum() / (w.sum() * x.shape[-1]).clamp(min=1)
        return loss, {"loss": loss.item()}

    def sample_chunk(self, obs: torch.Tensor, generator: torch.Generator | None = None,
                     z: torch.Tensor | None = None, noise: NoiseSource | None = None) -> torch.Tensor:
        """Normalized chunk for raw observations; ``z`` defaults to a draw from ``generator``."""
        cond = self.condition(torch.as_tensor(obs, dtype=torch.float32, device=self.env_low.device))
        if z is None:
            z = torch.randn((cond.shape[0], *self.chunk_shape), generator=generator, device=cond.device)
        return self.sample(cond, z, noise=noise or self.default_noise(generator), grad="none")

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None, z=None, noise=None):
        return self.unnormalize_actions(self.sample_chunk(obs, generator, z, noise))

    @torch.no_grad()
    def monitor(self, batch, generator=None) -> dict[str, float]:
        """MSE (normalized units) of the sampled chunk's executed part against the demonstration."""
        k = self.n_action_steps
        a = self.sample_chunk(batch["obs"], generator)[:, :k]
        x = self.act_norm.normalize(batch["action"][:, :k])
        w = batch["action_mask"][:, :k].to(x.dtype).unsqueeze(-1)
        return {"action_mse": float((((a - x) ** 2) * w).sum() / (w.sum() * x.shape[-1]).clamp(min=1))}


def _beta(a: float, b: float, n: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """``n`` draws of Beta(a, b) from ``generator`` by the exact inverse CDF, which exists in closed form when
    one parameter is 1: ``U^(1/a)`` for b = 1, ``1 - (1 - U)^(1/b)`` for a = 1 (torch's Beta sampler takes no
    generator, and seeded training needs one)."""
    u = torch.rand(n, generator=generator, device=device)
    if b == 1.0:
        return u ** (1.0 / a)
    if a == 1.0:
        return 1 - (1 - u) ** (1.0 / b)
    raise ValueError(f"time_beta=({a}, {b}) is not supported: one of the two parameters must be 1 (pi0 uses (1.5, 1))")
