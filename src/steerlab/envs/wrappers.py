"""Gymnasium wrappers that make the particle world stochastic for world-model experiments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ActionNoise(gym.ActionWrapper):
    """Actuation noise: every commanded action gets ``N(0, std^2)`` added per dimension before the env clips it
    to its action box.

    The noise comes from the wrapper's own generator, seeded by ``reset(seed=s)`` (from ``s`` and a fixed
    stream id, so it differs from the env's own draws); without a seed it continues its stream. The commanded
    (pre-noise) action is what a policy or a world model conditions on; ``info["applied_action"]`` holds the
    noisy one.
    """

    _STREAM = 7

    def __init__(self, env: gym.Env, std: float):
        super().__init__(env)
        if not (np.isfinite(std) and std >= 0):
            raise ValueError(f"std must be a finite number >= 0, got {std!r}")
        self.std = float(std)
        self._rng = np.random.default_rng()
        self._applied = None

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), self._STREAM])
        return self.env.reset(seed=seed, options=options)

    def reseed(self, noise_seed) -> None:
        """Restart the noise stream from ``noise_seed`` (an int or a sequence of ints), e.g. to draw several
        noise sequences from one reset state."""
        self._rng = np.random.default_rng(noise_seed)

    def action(self, action):
        a = np.asarray(action, dtype=np.float64)
        noisy = a + self.std * self._rng.standard_normal(a.shape)
        self._applied = noisy.astype(np.float32)
        return self._applied

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r, term, trunc, {**info, "applied_action": self._applied}
