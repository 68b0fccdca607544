"""Energy guidance of a clean-chunk policy by a differentiable cost on the raw action chunk."""

from __future__ import annotations

from collections.abc import Callable

import torch


def guided_denoiser(policy, cond: torch.Tensor, cost: Callable[[torch.Tensor], torch.Tensor], scale: float):
    """Energy guidance of a clean-chunk policy (``prediction_type='sample'``): the denoiser's clean-chunk estimate
    ``x0`` becomes ``x0 - scale * grad_x0 cost(unnormalize(x0))``, at every step of whichever sampler runs it
    (pass it as ``policy.sample(..., denoiser=...)``). ``cost(raw chunk [B, H, A]) -> [B]``; the gradient is taken
    through the cost and the action normalizer only, never through the network.

    This differs from :func:`steerlab.sampling.process.energy_guided` (the critic's guidance), which takes the
    gradient w.r.t. ``x_t`` through the network's clean-chunk prediction: on a clean-chunk policy trained on
    unimodal demonstrations that prediction hardly depends on ``x_t`` (16 noises spread its actions by ~1e-4,
    BENCHMARKS section 13b), so that gradient vanishes while this one does not."""
    ptype = getattr(policy.cfg, "prediction_type", None)
    if ptype != "sample":
        raise ValueError(f"energy guidance edits the clean-chunk estimate and needs prediction_type='sample'; this "
                         f"policy predicts {ptype!r} (use noise optimization, which works for every parameterization)")
    base = policy.denoiser(cond)

    def fn(x, t):
        x0 = base(x, t)
        with torch.enable_grad():
            y = x0.detach().requires_grad_()
            g, = torch.autograd.grad(cost(policy.unnormalize_actions(y)).sum(), y)
        return x0 - scale * g

    return fn


def sample_guided(policy, obs: torch.Tensor, z: torch.Tensor, cost: Callable[[torch.Tensor], torch.Tensor],
                  scale: float) -> torch.Tensor:
    """The raw chunk ``[B, H, A]`` that ``policy`` samples at the raw observation history ``obs`` from the initial
    noise ``z`` without per-step noise, its clean-chunk estimate guided by ``cost`` at ``scale``
    (:func:`guided_denoiser`)."""
    from steerlab.sampling import no_noise

    cond = policy.condition(obs).detach()
    fn = guided_denoiser(policy, cond, cost, scale)
    with torch.no_grad():
        return policy.unnormalize_actions(policy.sample(cond, z, noise=no_noise(), denoiser=fn))
