"""Differentiable samplers as plain functions (the style of k-diffusion's ``sampling.py``).

Every sampler starts from unit Gaussian noise ``z`` (the learnable seed ``z0`` of noise optimization) and
returns the clean sample. None of them holds state or switches gradients off on its own: ``grad`` chooses

- ``"none"``: the chain runs under ``torch.no_grad`` (plain inference);
- ``"full"``: ordinary autograd through every step (memory grows with the number of steps);
- ``"checkpoint"``: each step under ``torch.utils.checkpoint`` (non-reentrant), so the backward pass keeps one
  step's activations at a time and recomputes them (memory flat in the number of steps).

Stochastic steps draw their noise from a :class:`~steerlab.sampling.noise.NoiseSource` passed as ``noise``;
the draw happens outside the checkpointed step, so recomputation sees the same noise.

Denoiser conventions (bind the conditioning with a closure or ``functools.partial``):

- ``eps_fn(x, t) -> eps`` for DDPM/DDIM; ``t`` a float tensor ``[B]`` of training timestep indices.
  DDPM and DDIM are tables of :class:`ChainStep` run by :func:`sample_vp` (also what the diffusers adapter
  builds from a scheduler's arrays), so the ``x0`` / ``v`` prediction types of :func:`vp_prediction` fit too.
- ``velocity_fn(x, t) -> v`` for flows; pi0's convention ``x_t = t * noise + (1 - t) * x_data``, so ``t = 1`` is
  noise, ``t = 0`` data and ``v = noise - x_data``.
- ``x0_fn(x, sigma) -> x0`` for RES (EDM form ``x = x0 + sigma * n``); :func:`eps_to_x0` and
  :func:`velocity_to_x0` adapt the other two.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from steerlab.sampling.noise import NoiseSource, fresh, no_noise

GradMode = Literal["none", "full", "checkpoint"]
Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _context(grad: GradMode):
    if grad not in ("none", "full", "checkpoint"):
        raise ValueError(f"unknown gradient mode {grad!r}; use none, full or checkpoint")
    return torch.no_grad() if grad == "none" else contextlib.nullcontext()


def _run(grad: GradMode, step, *args):
    if grad == "checkpoint" and torch.is_grad_enabled():
        return checkpoint(step, *args, use_reentrant=False)
    return step(*args)


def _tvec(value: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)


# ---------------------------------------------------------------------------------------------- DDPM / DDIM


@dataclass(frozen=True)
class ChainStep:
    """One step of a chain given as a table: ``x_next = update(x, step) + sd * xi`` with ``xi`` the noise
    source's draw for this step (drawn only where ``sd > 0``).

    DDPM/DDIM steps (:func:`sample_vp`): ``t`` is the model's timestep and ``abar`` the cumulative alpha there
    (which turns the model output into ``x0`` and ``eps``); ``update = c_x0 x0 + c_x x + c_eps eps``.
    :func:`sample_steps` reads only ``sd``, so other step types fit it too (the diffusers adapter's flow
    steps)."""

    t: float
    abar: float = 1.0
    c_x0: float = 0.0
    c_x: float = 0.0
    c_eps: float = 0.0
    sd: float = 0.0


def sample_steps(update: Callable, z: torch.Tensor, steps: list, *, noise: NoiseSource | None = None,
                 grad: GradMode = "full") -> torch.Tensor:
    """Run the chain ``steps`` (objects with an ``sd`` attribute, e.g. :class:`ChainStep`) from ``x = z``: step
    ``k`` is ``update(x, steps[k]) + sd * noise.draw(k)``, each step under the gradient mode ``grad`` (the draw
    outside the checkpointed function)."""
    noise = no_noise() if noise is None else noise
    with _context(grad):
        x = z
        for k, st in enumerate(steps):
            xi = noise.draw(k, z, x) if st.sd > 0 else None

            def step(x, xi, st=st):
                out = update(x, st)
                return out if xi is None else out + st.sd * xi

            x = _run(grad, step, x, xi)
    return x


PredictionType = Literal["epsilon", "sample", "v_prediction"]


def vp_split(out: torch.Tensor, x: torch.Tensor, sa, sb, prediction_type: PredictionType = "epsilon"):
    """``(x0, eps)`` implied by a VP model's output ``out`` at ``x = sa x0 + sb eps`` (``sa = sqrt(abar)``,
    ``sb = sqrt(1 - abar)``, floats or broadcastable tensors): ``out`` is ``eps``, ``x0`` (``sample``) or
    ``v = sa eps - sb x0`` (``v_prediction``)."""
    if prediction_type == "epsilon":
        return (x - sb * out) / sa, out
    if prediction_type == "sample":
        return out, (x - sa * out) / sb
    if prediction_type == "v_prediction":
        return sa * x - sb * out, sa * out + sb * x
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use epsilon, sample or v_prediction")


def vp_prediction(model_fn: Fn, prediction_type: PredictionType = "epsilon", clip_sample: float | None = None,
                  use_clipped_model_output: bool = False):
    """``predict(x, t, abar) -> (x0, eps)`` for a VP model ``model_fn(x, t)`` (:func:`vp_split`).
    ``clip_sample`` clamps ``x0`` to ``±clip_sample``; ``eps`` stays the model's (as diffusers'
    ``DDIMScheduler.step`` by default) unless ``use_clipped_model_output``, which re-derives it from the clipped
    ``x0``."""
    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use epsilon, sample or v_prediction")

    def predict(x, t, ab):
        sa, sb = math.sqrt(ab), math.sqrt(1 - ab)
        x0, eps = vp_split(model_fn(x, _tvec(t, x)), x, sa, sb, prediction_type)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
            if use_clipped_model_output:
                eps = (x - sa * x0) / sb
        return x0, eps

    return predict


def sample_vp(predict, z: torch.Tensor, steps: list[ChainStep], *, noise: NoiseSource | None = None,
              grad: GradMode = "full") -> torch.Tensor:
    """A DDPM/DDIM-family chain from its table: ``x_next = c_x0 x0 + c_x x + c_eps eps + sd xi`` with
    ``(x0, eps) = predict(x, step.t, step.abar)`` (:func:`vp_prediction`)."""

    def update(x, st):
        x0, eps = predict(x, st.t, st.abar)
        out = st.c_x0 * x0
        if st.c_x:
            out = out + st.c_x * x
        if st.c_eps:
            out = out + st.c_eps * eps
        return out

    return sample_steps(update, z, steps, noise=noise, grad=grad)


def ddpm_step(t: float, a_t: float, a_p: float, *, noisy: bool, large_variance: bool = False) -> ChainStep:
    """DDPM's step from ``abar_t = a_t`` to ``abar_t' = a_p``: the posterior mean of ``q(x_t' | x_t, x0)``,
    ``sqrt(a_p) beta / (1 - a_t) x0 + sqrt(1 - beta) (1 - a_p) / (1 - a_t) x_t`` with ``beta = 1 - a_t / a_p``,
    plus (``noisy``) the posterior std ``sqrt((1 - a_p) / (1 - a_t) beta)`` (floored at 1e-10 as diffusers does)
    or, with ``large_variance``, ``sqrt(beta)``."""
    beta = 1 - a_t / a_p
    var = beta if large_variance else max((1 - a_p) / (1 - a_t) * beta, 1e-20)
    return ChainStep(t, a_t, c_x0=math.sqrt(a_p) * beta / (1 - a_t), c_x=math.sqrt(1 - beta) * (1 - a_p) / (1 - a_t),
                     sd=math.sqrt(var) if noisy else 0.0)


def ddim_step(t: float, a_t: float, a_p: float, eta: float) -> ChainStep:
    """DDIM's step ``x_t' = sqrt(a_p) x0 + sqrt(1 - a_p - s^2) eps + s xi`` with
    ``s = eta sqrt((1 - a_p)/(1 - a_t) (1 - a_t / a_p))``."""
    s = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
    return ChainStep(t, a_t, c_x0=math.sqrt(a_p), c_eps=math.sqrt(max(1 - a_p - s * s, 0.0)), sd=s)


def inference_pairs(abar: torch.Tensor, timesteps: list[int]):
    """``(t, abar_t, abar_t')`` along the descending ``timesteps``, ``abar`` = 1 after the last."""
    ab = abar.double().tolist()
    nxt = [*timesteps[1:], -1]
    return [(t, ab[t], ab[tp] if tp >= 0 else 1.0) for t, tp in zip(timesteps, nxt)]


def sample_ddpm(eps_fn: Fn, z: torch.Tensor, abar: torch.Tensor, timesteps: list[int], *,
                noise: NoiseSource | None = None, grad: GradMode = "full",
                clip_sample: float | None = None) -> torch.Tensor:
    """DDPM ancestral sampling over the descending training indices ``timesteps`` (e.g. from
    :func:`~steerlab.sampling.schedules.inference_timesteps`), starting at ``x = z``. Each step predicts
    ``x0`` (clipped to ``±clip_sample`` if given), takes the posterior mean of ``q(x_t' | x_t, x0)`` and adds
    ``sqrt(posterior variance) * noise`` (``noise`` source step ``k``; none on the final step)."""
    steps = [ddpm_step(t, a_t, a_p, noisy=k + 1 < len(timesteps))
             for k, (t, a_t, a_p) in enumerate(inference_pairs(abar, timesteps))]
    return sample_vp(vp_prediction(eps_fn, clip_sample=clip_sample), z, steps,
                     noise=fresh() if noise is None else noise, grad=grad)


def sample_ddim(eps_fn: Fn, z: torch.Tensor, abar: torch.Tensor, timesteps: list[int], *, eta: float = 0.0,
                noise: NoiseSource | None = None, grad: GradMode = "full",
                clip_sample: float | None = None, use_clipped_model_output: bool = False) -> torch.Tensor:
    """DDIM with stochasticity ``eta`` (0: the deterministic probability-flow discretization; 1: DDPM-like),
    :func:`ddim_step` along ``timesteps``. With ``clip_sample``, ``x0`` is clipped and ``eps`` stays the model's
    (diffusers' ``DDIMScheduler.step`` default, which diffusion_policy uses) unless ``use_clipped_model_output``
    re-derives it from the clipped ``x0``."""
    noise = (no_noise() if eta == 0 else fresh()) if noise is None else noise
    steps = [ddim_step(t, a_t, a_p, eta) for t, a_t, a_p in inference_pairs(abar, timesteps)]
    return sample_vp(vp_prediction(eps_fn, clip_sample=clip_sample, use_clipped_model_output=use_clipped_model_output),
                     z, steps, noise=noise, grad=grad)


# ---------------------------------------------------------------------------------------------------- flows


def flow_times(n_steps: int) -> list[float]:
    """``n_steps + 1`` times from 1 (noise) to 0 (data), uniform as pi0's Euler integration."""
    if n_steps < 1:
        raise ValueError(f"need at least one step, got {n_steps}")
    return [1 - i / n_steps for i in range(n_steps + 1)]


def _churn_flow(x, xi, t, t_hat):
    """Move ``x_t`` up the path to ``t_hat > t``: exact forward noising of ``x_t = t n + (1 - t) x0``."""
    c = (1 - t_hat) / (1 - t)
    return c * x + math.sqrt(max(t_hat**2 - (c * t) ** 2, 0.0)) * xi


def _flow_sampler(velocity_fn, z, n_steps, noise, grad, s_churn, heun):
    times = flow_times(n_steps)
    noise = no_noise() if noise is None else noise
    gamma = min(s_churn / n_steps, math.sqrt(2) - 1) if s_churn > 0 else 0.0
    with _context(grad):
        x = z
        for k in range(n_steps):
            t, tn = times[k], times[k + 1]
            t_hat = min(t * (1 + gamma), 1.0) if t < 1 else t
            xi = noise.draw(k, z, x) if t_hat > t else None

            def step(x, xi, t=t, tn=tn, t_hat=t_hat):
                if xi is not None:
                    x = _churn_flow(x, xi, t, t_hat)
                v = velocity_fn(x, _tvec(t_hat, x))
                x_next = x + (tn - t_hat) * v
                if heun:
                    v2 = velocity_fn(x_next, _tvec(tn, x))
                    x_next = x + (tn - t_hat) * 0.5 * (v + v2)
                return x_next

            x = _run(grad, step, x, xi)
    return x


def sample_euler(velocity_fn: Fn, z: torch.Tensor, n_steps: int, *, noise: NoiseSource | None = None,
                 grad: GradMode = "full", s_churn: float = 0.0) -> torch.Tensor:
    """Euler integration of the flow ODE from ``t = 1`` (``x = z``) to ``t = 0`` in ``n_steps`` uniform steps
    (pi0's sampler). ``s_churn > 0`` adds EDM-style churn: before each step ``t`` is raised to
    ``t (1 + gamma)``, ``gamma = min(s_churn / n, sqrt2 - 1)``, by exact forward noising with ``noise``."""
    return _flow_sampler(velocity_fn, z, n_steps, noise, grad, s_churn, heun=False)


def sample_heun(velocity_fn: Fn, z: torch.Tensor, n_steps: int, *, noise: NoiseSource | None = None,
                grad: GradMode = "full", s_churn: float = 0.0) -> torch.Tensor:
    """Heun's 2nd-order method (trapezoidal predictor-corrector) for the flow ODE; 2 velocity calls a step."""
    return _flow_sampler(velocity_fn, z, n_steps, noise, grad, s_churn, heun=True)


# ------------------------------------------------------------------------------------------------------ RES


def eps_to_x0(eps_fn: Fn, abar: torch.Tensor) -> Fn:
    """An EDM ``x0_fn(x, sigma)`` from a VP epsilon model: ``x_vp = x / sqrt(1 + sigma^2)``,
    ``abar = 1/(1 + sigma^2)``, continuous timestep by interpolating ``log sigma`` over the training table."""
    log_sig = (0.5 * torch.log((1 - abar.double()) / abar.double())).numpy()  # increasing in t

    def x0_fn(x, sigma):
        s = sigma.double()
        t = torch.from_numpy(np.interp(torch.log(s).cpu().numpy(), log_sig, np.arange(len(log_sig))))
        eps = eps_fn(x / torch.sqrt(1 + s**2).to(x.dtype).view(-1, *[1] * (x.dim() - 1)), t.to(x.dtype).to(x.device))
        return x - sigma.to(x.dtype).view(-1, *[1] * (x.dim() - 1)) * eps

    return x0_fn


def abar_at(abar: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``abar`` (float64) at timesteps ``t`` that may be fractional, as :func:`eps_to_x0` calls the model:
    ``log sigma = 0.5 log((1 - abar) / abar)`` interpolated linearly between training indices (the inverse of
    that function's mapping), so integer ``t`` gives ``abar[t]``."""
    ab = abar.double()
    if len(ab) == 1:
        return ab.expand(t.shape).to(t.device)
    log_sig = 0.5 * torch.log((1 - ab) / ab).to(t.device)
    tt = t.double().clamp(0, len(ab) - 1)
    i0 = tt.floor().long().clamp(max=len(ab) - 2)
    w = tt - i0
    return torch.sigmoid(-2 * (log_sig[i0] * (1 - w) + log_sig[i0 + 1] * w))


def velocity_to_x0(velocity_fn: Fn) -> Fn:
    """An EDM ``x0_fn(x, sigma)`` from a flow velocity model: ``t = sigma/(1 + sigma)``, ``x_t = x/(1 + sigma)``,
    ``x0 = x_t - t v``."""

    def x0_fn(x, sigma):
        s = sigma.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        t = s / (1 + s)
        xt = x / (1 + s)
        return xt - t * velocity_fn(xt, t.reshape(-1))

    return x0_fn


def sample_res(x0_fn: Fn, z: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSource | None = None,
               grad: GradMode = "full", s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
               s_noise: float = 1.0) -> torch.Tensor:
    """Cosmos' RES sampler: a 2nd-order multistep exponential integrator in x0-prediction form over the
    descending ``sigmas`` (e.g. :func:`~steerlab.sampling.schedules.karras_sigmas`), starting at
    ``x = sigmas[0] * z``, solver arithmetic in float64.

    With ``h = log(s / t)`` between the current sigma ``s`` and the next ``t``: the first step is Euler,
    ``x_t = (t/s) x_s + (1 - t/s) x0_s``; later steps extrapolate ``x0`` linearly in ``lambda = -log sigma``
    through the previous prediction (Adams-Bashforth, "2ab"):
    ``x_t = e^-h x_s + h (b1 x0_s + b2 x0_prev)``, ``b1 = phi1 + r phi2``, ``b2 = -r phi2``,
    ``phi1 = (1 - e^-h)/h``, ``phi2 = (h - 1 + e^-h)/h^2``, ``r = h / h_prev`` (exact when ``x0`` is linear in
    ``lambda``).
    Optional EDM churn for ``s_tmin <= sigma <= s_tmax``: ``sigma_hat = sigma (1 + gamma)``,
    ``gamma = min(s_churn/(N+1), sqrt(1.2) - 1)``, ``x += sqrt(sigma_hat^2 - sigma^2) s_noise xi``.
    Ends with one clean call ``x0_fn(x, sigma_min)``; NFE = ``len(sigmas)``."""
    noise = no_noise() if noise is None else noise
    sig = sigmas.double().tolist()
    n = len(sig) - 1
    gamma = min(s_churn / (n + 1), math.sqrt(1.2) - 1) if s_churn > 0 else 0.0
    dtype = z.dtype

    def D(x, s):
        return x0_fn(x.to(dtype), torch.full((x.shape[0],), s, dtype=torch.float64, device=x.device)).double()

    with _context(grad):
        x = z.double() * sig[0]
        prev = None  # (x0 prediction, sigma at which it was made)
        for k in range(n):
            s, t = sig[k], sig[k + 1]
            s_hat = s * (1 + gamma) if gamma > 0 and s_tmin <= s <= s_tmax else s
            xi = noise.draw(k, z, z) if s_hat > s else None

            def step(x, xi, s=s, s_hat=s_hat, t=t, prev_x0=None if prev is None else prev[0],
                     prev_s=None if prev is None else prev[1]):
                if xi is not None:
                    x = x + math.sqrt(s_hat**2 - s**2) * s_noise * xi.double()
                x0 = D(x, s_hat)
                h = math.log(s_hat / t)
                eh = math.exp(-h)
                if prev_x0 is None:
                    x_next = eh * x + (1 - eh) * x0
                else:
                    phi1 = -math.expm1(-h) / h
                    phi2 = (h - 1 + eh) / h**2
                    r = h / math.log(prev_s / s_hat)
                    x_next = eh * x + h * ((phi1 + r * phi2) * x0 - r * phi2 * prev_x0)
                return x_next, x0

            if grad == "checkpoint" and torch.is_grad_enabled():
                x, x0 = checkpoint(step, x, xi, use_reentrant=False)
            else:
                x, x0 = step(x, xi)
            prev = (x0, s_hat)
        out = D(x, sig[-1])
    return out.to(dtype)

