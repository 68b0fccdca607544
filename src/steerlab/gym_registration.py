"""The gymnasium ids of steerlab's environments and their registration (run by ``import steerlab``).

Registration stores only entry-point strings, so it imports no environment module; the module of an environment
loads when the environment is made.
"""

PARTICLE_ID = "steerlab/Particle-v0"
NAV2D_ID = "steerlab/Nav2D-v0"
ENV_ENTRY_POINTS = {
    PARTICLE_ID: "steerlab.envs.particle:ParticleEnv",
    NAV2D_ID: "steerlab.envs.nav2d.env:Nav2DEnv",
}


def register_envs() -> None:
    """Register every steerlab environment with gymnasium; ids already registered are left alone (re-imports and
    module reloads must not re-register)."""
    from gymnasium.envs.registration import register, registry

    for env_id, entry_point in ENV_ENTRY_POINTS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point)
