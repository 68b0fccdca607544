"""Environments. Importing this package registers them with gymnasium:

* ``"steerlab/Particle-v0"`` -> :class:`steerlab.envs.particle.ParticleEnv` (kwargs such as ``n_dim`` pass
  through ``gymnasium.make``; the env truncates itself after ``n_steps``).
* ``"steerlab/Nav2D-v0"`` -> :class:`steerlab.envs.nav2d.Nav2DEnv` (kwargs such as ``family`` pass through;
  the env truncates itself after ``max_steps`` decisions).
"""

from gymnasium.envs.registration import register, registry

from steerlab.envs.particle import OBS_KEYS, ParticleEnv, ParticleOracle, flatten_obs

PARTICLE_ID = "steerlab/Particle-v0"
NAV2D_ID = "steerlab/Nav2D-v0"

if PARTICLE_ID not in registry:  # re-import / module reload must not re-register
    register(id=PARTICLE_ID, entry_point="steerlab.envs.particle:ParticleEnv")
if NAV2D_ID not in registry:
    register(id=NAV2D_ID, entry_point="steerlab.envs.nav2d:Nav2DEnv")

__all__ = ["NAV2D_ID", "OBS_KEYS", "PARTICLE_ID", "ParticleEnv", "ParticleOracle", "flatten_obs"]
