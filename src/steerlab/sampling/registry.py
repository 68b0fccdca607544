"""The sampler registry: every named sampler, the processes it serves, its cost and how to run it.

:func:`run_sampler` is the one entry point policies use: a process (:mod:`steerlab.sampling.process`), a sampler
name, the network as ``model_fn(x, t)`` in the process's time convention, the initial noise ``z``, the number of
steps, a per-step :class:`~steerlab.sampling.noise.NoiseSource` and a gradient mode. Adding a sampler is one
function plus one :func:`register_sampler` call::

    register_sampler(SamplerSpec("my-sampler", ("flow",), nfe=lambda n: n, run=my_run))

where ``my_run(process, model_fn, z, n_steps, noise, grad, **options)`` returns the clean sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from steerlab.sampling.noise import NoiseSource, fresh, no_noise
from steerlab.sampling.process import DiffusionProcess, FlowProcess
from steerlab.sampling.samplers import (
    GradMode, ddim_step, ddpm_step, inference_pairs, sample_euler, sample_heun, sample_res, sample_vp,
)
from steerlab.sampling.schedules import inference_timesteps, karras_sigmas


@dataclass(frozen=True)
class SamplerSpec:
    """A named sampler: ``processes`` it serves (``"diffusion"``, ``"flow"``), denoiser calls ``nfe(n_steps)``,
    ``run(process, model_fn, z, n_steps, noise, grad, **options)``, the options it takes (with defaults) and
    ``stochastic(options)``: whether it injects per-step noise (then its default noise source is ``fresh``)."""

    name: str
    processes: tuple[str, ...]
    nfe: Callable[[int], int]
    run: Callable[..., torch.Tensor]
    options: tuple[str, ...] = ()
    stochastic: Callable[[dict], bool] = lambda options: False
    doc: str = ""


SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    if spec.name in SAMPLERS:
        raise ValueError(f"sampler {spec.name!r} is already registered")
    SAMPLERS[spec.name] = spec
    return spec


def get_sampler(name: str, process=None) -> SamplerSpec:
    """The spec of ``name``; with ``process``, also checks that the sampler serves it."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; registered: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    if process is not None and process.kind not in spec.processes:
        usable = [n for n, s in SAMPLERS.items() if process.kind in s.processes]
        raise ValueError(f"sampler {name!r} does not apply to a {process.kind} process; use one of {', '.join(usable)}")
    return spec


def samplers_for(kind: str) -> tuple[str, ...]:
    """Names of the registered samplers that serve processes of ``kind``."""
    return tuple(n for n, s in SAMPLERS.items() if kind in s.processes)


def chain_nfe(name: str, n_steps: int) -> int:
    """Denoiser evaluations of one chain of ``n_steps`` steps of sampler ``name``."""
    return get_sampler(name).nfe(n_steps)


def _options(spec: SamplerSpec, options: dict) -> dict:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"sampler {spec.name!r} takes no option(s) {unknown}; its options: {list(spec.options) or 'none'}")
    return options


def is_stochastic(name: str, **options) -> bool:
    spec = get_sampler(name)
    return spec.stochastic(_options(spec, options))


def default_noise(name: str, generator: torch.Generator | None = None, **options) -> NoiseSource:
    """The per-step noise a plain call of sampler ``name`` uses: ``fresh(generator)`` for a stochastic one,
    none otherwise."""
    return fresh(generator) if is_stochastic(name, **options) else no_noise()


def run_sampler(process, name: str, model_fn, z: torch.Tensor, n_steps: int, *, noise: NoiseSource | None = None,
                grad: GradMode = "full", **options) -> torch.Tensor:
    """Run sampler ``name`` on ``process`` from the initial noise ``z``; ``noise`` defaults to
    :func:`default_noise` without a generator; ``options`` are the sampler's (e.g. ``eta`` for DDIM)."""
    spec = get_sampler(name, process)
    opts = _options(spec, options)
    if noise is None:
        noise = fresh() if spec.stochastic(opts) else no_noise()
    return spec.run(process, model_fn, z, n_steps, noise, grad, **opts)


# --------------------------------------------------------------------------------------- the built-ins


def _run_ddpm(p: DiffusionProcess, model_fn, z, n, noise, grad):
    ts = inference_timesteps(p.num_train_timesteps, n)
    steps = [ddpm_step(t, a_t, a_p, noisy=k + 1 < len(ts)) for k, (t, a_t, a_p) in enumerate(inference_pairs(p.abar, ts))]
    return sample_vp(p.predict(model_fn), z, steps, noise=noise, grad=grad)


def _run_ddim(p: DiffusionProcess, model_fn, z, n, noise, grad, eta: float = 0.0):
    ts = inference_timesteps(p.num_train_timesteps, n)
    steps = [ddim_step(t, a_t, a_p, eta) for t, a_t, a_p in inference_pairs(p.abar, ts)]
    return sample_vp(p.predict(model_fn), z, steps, noise=noise, grad=grad)


def _run_res(p, model_fn, z, n, noise, grad, s_churn: float = 0.0):
    return sample_res(p.x0_fn(model_fn), z, karras_sigmas(n, *p.sigma_range()), noise=noise, grad=grad, s_churn=s_churn)


def _run_euler(p: FlowProcess, model_fn, z, n, noise, grad, s_churn: float = 0.0):
    return sample_euler(p.velocity_fn(model_fn), z, n, noise=noise, grad=grad, s_churn=s_churn)


def _run_heun(p: FlowProcess, model_fn, z, n, noise, grad, s_churn: float = 0.0):
    return sample_heun(p.velocity_fn(model_fn), z, n, noise=noise, grad=grad, s_churn=s_churn)


def _churn(options: dict) -> bool:
    return options.get("s_churn", 0.0) > 0


register_sampler(SamplerSpec(
    "ddpm", ("diffusion",), nfe=lambda n: n, run=_run_ddpm, stochastic=lambda o: True,
    doc="DDPM ancestral sampling over evenly spaced training indices (diffusion_policy, NoMaD)"))
register_sampler(SamplerSpec(
    "ddim", ("diffusion",), nfe=lambda n: n, run=_run_ddim, options=("eta",),
    stochastic=lambda o: o.get("eta", 0.0) > 0, doc="DDIM(eta); eta = 0 is deterministic"))
register_sampler(SamplerSpec(
    "euler", ("flow",), nfe=lambda n: n, run=_run_euler, options=("s_churn",), stochastic=_churn,
    doc="Euler integration of the flow ODE (pi0)"))
register_sampler(SamplerSpec(
    "heun", ("flow",), nfe=lambda n: 2 * n, run=_run_heun, options=("s_churn",), stochastic=_churn,
    doc="Heun's 2nd-order predictor-corrector for the flow ODE"))
register_sampler(SamplerSpec(
    "res", ("diffusion", "flow"), nfe=lambda n: n + 1, run=_run_res, options=("s_churn",), stochastic=_churn,
    doc="Cosmos' RES 2nd-order multistep exponential integrator in x0 form over Karras sigmas"))
