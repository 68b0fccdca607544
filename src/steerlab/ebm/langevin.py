"""Langevin MCMC over actions, as pure functions (noise and randomness are arguments).

Two update rules over the same polynomial step-size schedule:

``form="ibc"`` — google-research/ibc ``agents/mcmc.py`` as written::

    eps_k = (eps0 - eps_final) * (1 - k / (K - 1)) ** power + eps_final
    d     = eps_k * (0.5 * clip(dE/da, +-grad_clip) + noise_scale * xi)      # xi ~ N(0, I)
    d     = clip(d, +-delta_action_clip * (hi - lo) / 2)                     # clips the full step
    a     = clip(a - d, lo, hi)

(the noise scales with eps, not sqrt(2 eps), and the drift is 0.5 eps dE/da: not textbook ULA, ibc #6).

``form="ula"`` — textbook unadjusted Langevin ``a = clip(a - eps_k dE/da + sqrt(2 eps_k) noise_scale xi)``,
with the delta clip applied only if ``delta_action_clip`` is given.
"""

from __future__ import annotations

from typing import Callable

import torch

GradFn = Callable[[torch.Tensor], torch.Tensor]


def langevin_step_size(k: int, num_steps: int, init: float = 0.1, final: float = 1e-5, power: float = 2.0) -> float:
    """IBC's polynomial schedule ``(init - final) * (1 - k / (K - 1)) ** power + final``; ``K == 1`` gives ``init``."""
    if num_steps <= 1:
        return float(init)
    return (init - final) * (1.0 - k / (num_steps - 1)) ** power + final


def langevin_step(
    a: torch.Tensor,
    grad_e: torch.Tensor,
    xi: torch.Tensor,
    step_size: float,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    noise_scale: float = 1.0,
    delta_action_clip: float | None = 0.1,
    grad_clip: float | None = None,
    form: str = "ibc",
) -> torch.Tensor:
    """One Langevin update of actions ``a [..., A]`` given ``grad_e = dE/da`` and the noise ``xi``."""
    if grad_clip is not None:
        grad_e = grad_e.clamp(-grad_clip, grad_clip)
    if form == "ibc":
        d = step_size * (0.5 * grad_e + noise_scale * xi)
    elif form == "ula":
        d = step_size * grad_e - (2.0 * step_size) ** 0.5 * noise_scale * xi
    else:
        raise ValueError(f"unknown Langevin form {form!r}; use 'ibc' or 'ula'")
    if delta_action_clip is not None:
        half = delta_action_clip * (hi - lo) / 2.0
        d = torch.maximum(torch.minimum(d, half), -half)
    return torch.maximum(torch.minimum(a - d, hi), lo)


def langevin(
    grad_energy: GradFn,
    a: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    num_steps: int = 100,
    step_size_init: float = 0.1,
    step_size_final: float = 1e-5,
    power: float = 2.0,
    noise_scale: float = 1.0,
    delta_action_clip: float | None = 0.1,
    grad_clip: float | None = None,
    form: str = "ibc",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run a Langevin chain from ``a [..., A]`` and return the final actions.

    Args:
        grad_energy: ``a -> dE/da`` (same shape); ``E = -f`` for IBC logits ``f``.
        lo, hi: action bounds broadcastable to ``a`` (normalized sampling bounds for IBC).
        noise: optional explicit noise ``[num_steps, *a.shape]``; otherwise drawn from ``generator``.
            ``noise_scale=0`` gives a deterministic chain.

    The chain is not differentiated: every step's result is detached (IBC's ``stop_chain_grad``).
    """
    if noise is not None and noise.shape != (num_steps, *a.shape):
        raise ValueError(f"noise must have shape {[num_steps, *a.shape]}, got {list(noise.shape)}")
    a = a.detach()
    for k in range(num_steps):
        eps = langevin_step_size(k, num_steps, step_size_init, step_size_final, power)
        if noise is not None:
            xi = noise[k]
        elif noise_scale != 0.0:
            xi = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        else:
            xi = torch.zeros_like(a)
        g = grad_energy(a).detach()
        a = langevin_step(
            a, g, xi, eps, lo, hi, noise_scale=noise_scale, delta_action_clip=delta_action_clip, grad_clip=grad_clip, form=form
        ).detach()
    return a
