"""A steerlab chain from a diffusers scheduler: noise optimization and search on a diffusers-based policy.

:func:`chain_from_scheduler` reads a ``DDPMScheduler``, ``DDIMScheduler`` or ``FlowMatchEulerDiscreteScheduler``
(its config and the arrays ``set_timesteps`` fills: ``alphas_cumprod``, ``timesteps``, ``sigmas``) into a
:class:`DiffusersChain`, a frozen table of steps. :func:`sample_diffusers` runs that table with a model
callable ``model(x_t, t) -> output`` (``t`` a float tensor ``[B]`` holding the scheduler's timestep, what a
diffusers pipeline passes the network) as a pure function of the initial noise ``z0`` and the per-step noise
source, with the gradient modes of :mod:`steerlab.sampling` (``none`` / ``full`` / ``checkpoint``).
:func:`diffusers_sampler` wraps both as a :class:`~steerlab.steer.policy_chain.PolicyChain` whose
``sample_fn(z, step_noise)`` is what :func:`~steerlab.steer.noise_opt.optimize_noise` and the searches of
:mod:`steerlab.steer.search` take.

The scheduler's ``step()`` is never called while sampling: ``FlowMatchEulerDiscreteScheduler.step`` advances
an internal step index, so a checkpointed step recomputed in the backward pass would read the wrong sigma.
The updates are computed from the arrays instead, as diffusers' ``step()`` computes them:

- DDPM: ``x0`` from the model output (``prediction_type``), clipped to ``±clip_sample_range`` with
  ``clip_sample``; posterior mean towards the next timestep of ``timesteps`` (``abar = 1`` after the last);
  noise ``sqrt(variance) * xi`` on every step whose timestep is > 0 (``variance_type`` ``fixed_small`` /
  ``fixed_small_log``: the posterior variance floored at 1e-20; ``fixed_large``: ``beta_t``).
- DDIM: the previous timestep is ``t - num_train_timesteps // num_inference_steps``
  (``final_alpha_cumprod`` below 0), the step's ``eta`` and ``use_clipped_model_output`` are arguments here as
  they are of ``step()``; noise ``std * xi`` where ``eta > 0``.
- FlowMatch Euler: ``x + (sigma_next - sigma) * v`` over ``sigmas``; with ``stochastic_sampling``,
  ``(1 - sigma_next) (x - sigma v) + sigma_next * xi``.

Step ``k``'s noise ``xi`` is the noise source's draw ``k`` (``fresh`` / ``from_seed`` / ``explicit`` as
everywhere in steerlab): an explicit tensor ``[K, *z0.shape]`` has one entry per inference step, used or not.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch

from steerlab.sampling import NoiseSource, ddim_step, ddpm_step, no_noise, sample_steps, sample_vp, vp_prediction
from steerlab.sampling.samplers import GradMode, PredictionType, _tvec

SchedulerKind = Literal["ddpm", "ddim", "flow"]
SCHEDULERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "FlowMatchEulerDiscreteScheduler": "flow"}
DDPM_VARIANCES = ("fixed_small", "fixed_small_log", "fixed_large")


class UnsupportedSchedulerError(ValueError):
    """A scheduler, or a value of one of its config fields, that the adapter does not reproduce."""


@dataclass(frozen=True)
class FlowStep:
    """One FlowMatch Euler step from ``sigma`` to ``sigma_next`` at model timestep ``t``; ``sd`` is the
    injected noise's scale (``sigma_next`` with stochastic sampling, else 0)."""

    t: float
    sigma: float
    sigma_next: float
    sd: float = 0.0


@dataclass(frozen=True)
class DiffusersChain:
    """The table a scheduler's sampling loop walks, read once from the scheduler (see the module doc)."""

    kind: SchedulerKind
    steps: tuple = field(repr=False)
    """:class:`~steerlab.sampling.ChainStep` (DDPM/DDIM) or :class:`FlowStep` (flow), one per inference step"""
    prediction_type: PredictionType = "epsilon"
    clip_sample: float | None = None
    use_clipped_model_output: bool = False
    stochastic: bool = False
    """whether any step injects noise"""

    @property
    def timesteps(self) -> tuple[float, ...]:
        return tuple(s.t for s in self.steps)

    @property
    def n_noise_steps(self) -> int:
        return len(self.steps)


def _require(cfg, name: str, ok, allowed: str):
    value = cfg.get(name)
    if not ok(value):
        raise UnsupportedSchedulerError(f"scheduler config field {name}={value!r} is not supported by the "
                                        f"steerlab diffusers adapter (supported: {allowed})")


def chain_from_scheduler(scheduler, num_inference_steps: int | None = None, *, eta: float = 0.0,
                         use_clipped_model_output: bool = False, **set_timesteps_kwargs) -> DiffusersChain:
    """The chain of ``scheduler`` with ``num_inference_steps`` steps (``set_timesteps`` is called on a copy, with
    ``set_timesteps_kwargs`` such as FlowMatch's ``mu``; None: the scheduler's current timesteps, after your own
    ``set_timesteps``). ``eta`` and ``use_clipped_model_output`` are DDIM's ``step()`` arguments and must stay at
    their defaults for the other schedulers. Raises :class:`UnsupportedSchedulerError` naming the field for a
    config the adapter does not reproduce."""
    name = type(scheduler).__name__
    if name not in SCHEDULERS:
        raise UnsupportedSchedulerError(f"{name} is not supported by the steerlab diffusers adapter; use one of "
                                        f"{', '.join(SCHEDULERS)}")
    kind = SCHEDULERS[name]
    cfg = dict(scheduler.config)
    if kind != "ddim" and (eta != 0.0 or use_clipped_model_output):
        raise UnsupportedSchedulerError(f"eta and use_clipped_model_output are DDIMScheduler.step arguments; {name} "
                                        "has neither")
    if num_inference_steps is not None or set_timesteps_kwargs:
        scheduler = copy.deepcopy(scheduler)
        scheduler.set_timesteps(num_inference_steps, **set_timesteps_kwargs)
    elif kind != "ddpm" and getattr(scheduler, "num_inference_steps", None) is None:
        raise UnsupportedSchedulerError(f"{name}.set_timesteps has not been called: pass num_inference_steps")
    timesteps = [float(t) for t in scheduler.timesteps.tolist()]
    if kind == "flow":
        return _flow_chain(scheduler, cfg, timesteps)

    _require(cfg, "thresholding", lambda v: not v, "False")
    _require(cfg, "prediction_type", lambda v: v in ("epsilon", "sample", "v_prediction"),
             "epsilon, sample, v_prediction")
    ab = scheduler.alphas_cumprod.double().tolist()
    ts = [int(t) for t in timesteps]
    if kind == "ddpm":
        _require(cfg, "variance_type", lambda v: v in DDPM_VARIANCES, ", ".join(DDPM_VARIANCES))
        nxt = [*ts[1:], -1]
        steps = [ddpm_step(t, ab[t], ab[tp] if tp >= 0 else 1.0, noisy=t > 0,
                           large_variance=cfg["variance_type"] == "fixed_large") for t, tp in zip(ts, nxt)]
    else:
        if eta < 0:
            raise ValueError(f"DDIM eta must be >= 0, got {eta}")
        ratio = cfg["num_train_timesteps"] // scheduler.num_inference_steps
        final = float(scheduler.final_alpha_cumprod)
        steps = [ddim_step(t, ab[t], ab[t - ratio] if t - ratio >= 0 else final, eta) for t in ts]
    clip = float(cfg["clip_sample_range"]) if cfg.get("clip_sample") else None
    return DiffusersChain(kind, tuple(steps), cfg["prediction_type"], clip, use_clipped_model_output,
                          any(s.sd > 0 for s in steps))


def _flow_chain(scheduler, cfg, timesteps) -> DiffusersChain:
    _require(cfg, "invert_sigmas", lambda v: not v, "False")
    sig = scheduler.sigmas.double().tolist()
    if len(sig) != len(timesteps) + 1:
        raise UnsupportedSchedulerError(f"expected len(sigmas) = len(timesteps) + 1, got {len(sig)} and "
                                        f"{len(timesteps)}")
    stochastic = bool(cfg.get("stochastic_sampling"))
    steps = tuple(FlowStep(t, sig[k], sig[k + 1], sig[k + 1] if stochastic else 0.0) for k, t in enumerate(timesteps))
    return DiffusersChain("flow", steps, stochastic=stochastic and any(s.sd > 0 for s in steps))


def sample_diffusers(chain: DiffusersChain, model, z: torch.Tensor, *, noise: NoiseSource | None = None,
                     grad: GradMode = "full") -> torch.Tensor:
    """The clean sample of ``chain`` from ``x = z`` (the scheduler's ``init_noise_sigma`` is 1 for all three),
    ``model(x_t, t)`` called once per step; ``noise`` defaults to none (deterministic; for a stochastic chain,
    pass ``fresh`` / ``from_seed`` / ``explicit``)."""
    noise = no_noise() if noise is None else noise
    if chain.kind == "flow":
        def update(x, st):
            v = model(x, _tvec(st.t, x))
            if st.sd > 0:
                return (1 - st.sigma_next) * (x - st.sigma * v)
            return x + (st.sigma_next - st.sigma) * v

        return sample_steps(update, z, list(chain.steps), noise=noise, grad=grad)
    predict = vp_prediction(model, chain.prediction_type, chain.clip_sample, chain.use_clipped_model_output)
    return sample_vp(predict, z, list(chain.steps), noise=noise, grad=grad)


def diffusers_sampler(model, scheduler, shape: tuple[int, ...], num_inference_steps: int | None = None, *,
                      noise_mode: str = "none", seed: int = 0, grad: GradMode = "full", eta: float = 0.0,
                      use_clipped_model_output: bool = False, postprocess=None, **set_timesteps_kwargs):
    """A :class:`~steerlab.steer.policy_chain.PolicyChain` for noise optimization and search: ``sample_fn(z,
    step_noise=None)`` runs :func:`sample_diffusers` on ``z`` of ``shape`` with the per-step noise of
    ``noise_mode`` (as :func:`~steerlab.steer.policy_chain.policy_sampler`: ``none``, ``from_seed``, ``fresh``
    re-seeded from ``seed`` on every call, or ``explicit`` with ``step_noise [K, *shape]``) and applies
    ``postprocess`` (e.g. unnormalizing actions) to the sample."""
    from steerlab.steer.policy_chain import PolicyChain, check_noise_mode, step_noise_source

    chain = chain_from_scheduler(scheduler, num_inference_steps, eta=eta,
                                 use_clipped_model_output=use_clipped_model_output, **set_timesteps_kwargs)
    check_noise_mode(noise_mode)
    post = postprocess or (lambda x: x)

    def sample_fn(z, step_noise=None):
        src = step_noise_source(noise_mode, seed, step_noise)
        return post(sample_diffusers(chain, model, z, noise=src, grad=grad))

    return PolicyChain(sample_fn, chain.n_noise_steps, tuple(shape), chain.n_noise_steps)
