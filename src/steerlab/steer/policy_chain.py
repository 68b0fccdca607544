"""A generative policy's sampling chain as a function of its noise, for optimization and search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from steerlab.envs.particle import flatten_obs
from steerlab.sampling import NoiseSource, chain_nfe, explicit, fresh, from_seed, no_noise
from steerlab.sampling.noise import NOISE_MODES
from steerlab.tasks import get_task

__all__ = ["NOISE_MODES", "PolicyChain", "chain_nfe", "check_noise_mode", "initial_noise", "initial_observations",
           "policy_sampler", "step_noise_seed", "step_noise_source"]


def check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {noise_mode!r}; use one of {', '.join(NOISE_MODES)}")


def step_noise_seed(seed: int) -> int:
    """The seed of the ``fresh`` per-step noise stream for ``seed``: a stream independent of
    ``torch.Generator().manual_seed(seed)``, which draws z0 (:func:`initial_noise`), so the noise injected at a
    step is never a copy of z0."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1, np.uint64)[0] >> 1)


def step_noise_source(noise_mode: str, seed: int = 0, step_noise: torch.Tensor | None = None) -> NoiseSource:
    """The per-step noise of a chain call: ``step_noise`` if given (explicit), else by ``noise_mode`` --
    ``none``; ``from_seed`` (derived from z0 on purpose); ``fresh`` from a generator re-seeded on every call
    with :func:`step_noise_seed`, so each call sees the same draws and they are independent of z0."""
    check_noise_mode(noise_mode)
    if step_noise is not None:
        return explicit(step_noise)
    if noise_mode == "explicit":
        raise ValueError("noise_mode='explicit' needs the per-step noise tensor as sample_fn's second argument")
    if noise_mode == "from_seed":
        return from_seed(seed)
    if noise_mode == "fresh":
        return fresh(torch.Generator().manual_seed(step_noise_seed(seed)))
    return no_noise()


def initial_noise(shape: tuple[int, ...], n_noise_steps: int, seed: int, with_step_noise: bool = False):
    """``(z0, step_noise | None)`` drawn from ``torch.Generator().manual_seed(seed)``: z0 ``shape`` first, then
    (``with_step_noise``) an explicit per-step tensor ``[n_noise_steps, *shape]``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g)
    return z, (torch.randn((n_noise_steps, *shape), generator=g) if with_step_noise else None)


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
    ``fresh`` (a generator re-seeded from ``seed`` on every call, so each iteration sees the same per-step
    noise, as ReNO does, drawn independently of a z0 drawn with the same ``seed``) or ``explicit``
    (``step_noise`` must be passed to ``sample_fn``); see :func:`step_noise_source`.
    """
    if not hasattr(policy, "sample"):
        raise TypeError(f"{type(policy).__name__} has no differentiable sampling chain; noise optimization needs a "
                        "diffusion or flow policy")
    check_noise_mode(noise_mode)
    name = sampler or policy.cfg.sampler
    n = num_steps or policy.cfg.num_inference_steps
    cond = policy.condition(torch.as_tensor(obs, dtype=torch.float32)).detach()
    shape = (cond.shape[0], *policy.chunk_shape)

    def sample_fn(z, step_noise=None):
        src = step_noise_source(noise_mode, seed, step_noise)
        return policy.unnormalize_actions(policy.sample(cond, z, noise=src, grad=grad, sampler=name, num_steps=n))

    return PolicyChain(sample_fn, chain_nfe(name, n), shape, n)


def initial_observations(cfg, policy, seeds: list[int]):
    """The first observation of the run's env (``cfg.env``, ``cfg.n_dim``) at each of ``seeds``: the flattened
    observations repeated over the policy's observation horizon ``[len(seeds), n_obs_steps, obs_dim]``, and the
    observation dicts as the env returned them."""
    env = get_task(cfg.env).make_env(cfg.n_dim)
    obs = [env.reset(seed=int(s))[0] for s in seeds]
    env.close()
    flat = torch.as_tensor(np.stack([flatten_obs(o) for o in obs]), dtype=torch.float32)
    return flat[:, None].repeat(1, policy.n_obs_steps, 1), obs
