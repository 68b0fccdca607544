"""Differentiable samplers, noise sources and schedules (see :mod:`steerlab.sampling.samplers`)."""

from steerlab.sampling.noise import NoiseSource, explicit, fresh, from_seed, make_noise, no_noise
from steerlab.sampling.samplers import (
    SAMPLERS, ChainStep, abar_at, ddim_step, ddpm_step, eps_to_x0, flow_times, sample_ddim, sample_ddpm, sample_euler,
    sample_heun, sample_res, sample_steps, sample_vp, velocity_to_x0, vp_prediction,
)
from steerlab.sampling.schedules import alphas_cumprod, inference_timesteps, karras_sigmas, squaredcos_cap_v2

__all__ = [
    "NoiseSource", "explicit", "fresh", "from_seed", "make_noise", "no_noise", "SAMPLERS", "eps_to_x0",
    "ChainStep", "abar_at", "ddim_step", "ddpm_step", "sample_steps", "sample_vp", "vp_prediction",
    "flow_times", "sample_ddim", "sample_ddpm", "sample_euler", "sample_heun", "sample_res", "velocity_to_x0",
    "alphas_cumprod", "inference_timesteps", "karras_sigmas", "squaredcos_cap_v2",
]
