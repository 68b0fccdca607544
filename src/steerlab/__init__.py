"""steerlab: train generative robot policies and steer them at inference time by optimization.

Importing the package registers its gymnasium environments (as gym_pusht and gym_aloha do), so
``import steerlab, gymnasium as gym; gym.make("steerlab/Particle-v0")`` works. Registration stores only the
entry-point strings: the environment modules load when an environment is made.

``steerlab.load_policy(path)`` loads a trained policy (a run directory or a ``policy.save`` directory); it is
imported on first use, so ``import steerlab`` stays light.
"""

from steerlab.version import __version__  # noqa: F401  (re-exported)

from steerlab.gym_registration import ENV_ENTRY_POINTS, NAV2D_ID, PARTICLE_ID, register_envs  # noqa: F401

register_envs()


def __getattr__(name: str):
    if name == "load_policy":  # torch and the policy modules load on first use
        from steerlab.policy_io import load_policy

        return load_policy
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
