"""Differentiable samplers, noise sources and schedules (see :mod:`steerlab.sampling.samplers`)."""

from steerlab.sampling.noise import NoiseSource, explicit, fresh, from_seed, make_noise, no_noise
from steerlab.sampling.samplers import (
    SAMPLERS, eps_to_x0, flow_times, sample_ddim, sample_ddpm, sample_euler, sample_heun, sample_res,
    velocity_to_x0,
)
from steerlab.sampling.schedules import alphas_cumprod, inference_timesteps, karras_sigmas, squaredcos_cap_v2

__all__ = [
    "NoiseSource", "explicit", "fresh", "from_seed", "make_noise", "no_noise", "SAMPLERS", "eps_to_x0",
    "flow_times", "sample_ddim", "sample_ddpm", "sample_euler", "sample_heun", "sample_res", "velocity_to_x0",
    "alphas_cumprod", "inference_timesteps", "karras_sigmas", "squaredcos_cap_v2",
]
