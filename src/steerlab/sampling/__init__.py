"""Differentiable samplers, generative processes, the sampler registry, noise sources and schedules.

- :mod:`steerlab.sampling.process`: what a network outputs and how samplers read it (diffusion / flow);
- :mod:`steerlab.sampling.registry`: named samplers and :func:`run_sampler`, the one entry point of policies;
- :mod:`steerlab.sampling.samplers`: the sampler functions themselves;
- :mod:`steerlab.sampling.noise`: per-step noise sources.
"""

from steerlab.sampling.noise import NoiseSource, explicit, fresh, from_seed, no_noise
from steerlab.sampling.process import DiffusionProcess, FlowProcess, Process
from steerlab.sampling.registry import (
    SAMPLERS, SamplerSpec, chain_nfe, default_noise, get_sampler, is_stochastic, register_sampler, run_sampler,
    samplers_for,
)
from steerlab.sampling.samplers import (
    ChainStep, abar_at, ddim_step, ddpm_step, eps_to_x0, flow_times, inference_pairs, sample_ddim, sample_ddpm,
    sample_euler, sample_heun, sample_res, sample_steps, sample_vp, velocity_to_x0, vp_prediction, vp_split,
)
from steerlab.sampling.schedules import alphas_cumprod, inference_timesteps, karras_sigmas, squaredcos_cap_v2

__all__ = [
    "NoiseSource", "explicit", "fresh", "from_seed", "no_noise",
    "DiffusionProcess", "FlowProcess", "Process",
    "SAMPLERS", "SamplerSpec", "chain_nfe", "default_noise", "get_sampler", "is_stochastic", "register_sampler",
    "run_sampler", "samplers_for",
    "ChainStep", "abar_at", "ddim_step", "ddpm_step", "eps_to_x0", "flow_times", "inference_pairs", "sample_ddim",
    "sample_ddpm", "sample_euler", "sample_heun", "sample_res", "sample_steps", "sample_vp", "velocity_to_x0",
    "vp_prediction", "vp_split",
    "alphas_cumprod", "inference_timesteps", "karras_sigmas", "squaredcos_cap_v2",
]
