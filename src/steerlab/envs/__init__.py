"""Environments, registered with gymnasium by ``import steerlab`` (see :func:`steerlab.gym_registration.register_envs`):

* ``"steerlab/Particle-v0"`` -> :class:`steerlab.envs.particle.ParticleEnv` (kwargs such as ``n_dim`` pass
  through ``gymnasium.make``; the env truncates itself after ``n_steps``).
* ``"steerlab/Nav2D-v0"`` -> :class:`steerlab.envs.nav2d.env.Nav2DEnv` (kwargs such as ``family`` pass through;
  the env truncates itself after ``max_steps`` decisions).
"""

from steerlab.gym_registration import NAV2D_ID, PARTICLE_ID
from steerlab.envs.particle import OBS_KEYS, ParticleEnv, ParticleOracle, flatten_obs

__all__ = ["NAV2D_ID", "OBS_KEYS", "PARTICLE_ID", "ParticleEnv", "ParticleOracle", "flatten_obs"]
