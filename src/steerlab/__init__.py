"""steerlab: train generative robot policies and steer them at inference time by optimization.

Importing the package registers its gymnasium environments (as gym_pusht and gym_aloha do), so
``import steerlab, gymnasium as gym; gym.make("steerlab/Particle-v0")`` works. Registration stores only the
entry-point strings: the environment modules load when an environment is made.

``steerlab.load_policy(path)`` loads a trained policy (a run directory or a ``policy.save`` directory); it is
imported on first use, so ``import steerlab`` stays light.
"""

__version__ = "0.1.0"

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


register_envs()


def __getattr__(name: str):
    if name == "load_policy":  # torch and the policy modules load on first use
        from steerlab.policy_io import load_policy

        return load_policy
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
