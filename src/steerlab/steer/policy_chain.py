"""A generative policy's sampling chain as a function of its noise, for optimization and search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from steerlab.sampling import explicit, fresh, from_seed, no_noise

NOISE_MODES = ("none", "from_seed", "fresh", "explicit")


def chain_nfe(sampler: str, n_steps: int) -> int:
    """Denoiser evaluations of one chain: DDPM/DDIM/Euler n, Heun 2n, RES n + 1 (the final clean call)."""
    return {"ddpm": n_steps, "ddim": n_steps, "euler": n_steps, "heun": 2 * n_steps, "res": n_steps + 1}[sampler]


@dataclass
class PolicyChain:
    sample_fn: Callable
    """``sample_fn(z [B, H, A], step_noise [K, B, H, A] | None) -> chunk [B, H, A]`` (raw actions, clipped to the
    action bounds as executed)"""
    nfe: int
    shape: tuple[int, ...]
    n_noise_steps: int


def policy_sampler(policy, obs: torch.Tensor, *, noise_mode: str = "none", grad: str = "full",
                   sampler: str | None = None, num_steps: int | None = None, seed: int = 0) -> PolicyChain:
    """The chain of ``policy`` (a :class:`~steerlab.generative.policy.GenerativePolicy`) at the raw observation
    history ``obs [B, n_obs, Do]``.

    ``noise_mode``: ``none`` (deterministic, no injection), ``from_seed`` (per-step noise derived from z0),
    ``fresh`` (a generator re-seeded with ``seed`` on every call, so each iteration sees the same per-step
    noise, as ReNO does) or ``explicit`` (``step_noise`` must be passed to ``sample_fn``).
    """
    if not hasattr(policy, "sample"):
        raise TypeError(f"{type(policy).__name__} has no differentiable sampling chain; noise optimization needs a "
                        "diffusion or flow policy")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {noise_mode!r}; use one of {', '.join(NOISE_MODES)}")
    name = sampler or policy.cfg.sampler
    n = num_steps or policy.cfg.num_inference_steps
    cond = policy.condition(torch.as_tensor(obs, dtype=torch.float32)).detach()
    shape = (cond.shape[0], *policy.chunk_shape)

    def sample_fn(z, step_noise=None):
        if step_noise is not None:
            src = explicit(step_noise)
        elif noise_mode == "explicit":
            raise ValueError("noise_mode='explicit' needs the per-step noise tensor as sample_fn's second argument")
        else:
            src = {"none": no_noise, "from_seed": lambda: from_seed(seed),
                   "fresh": lambda: fresh(torch.Generator().manual_seed(seed))}[noise_mode]()
        return policy.unnormalize_actions(policy.sample(cond, z, noise=src, grad=grad, sampler=name, num_steps=n))

    return PolicyChain(sample_fn, chain_nfe(name, n), shape, n)
