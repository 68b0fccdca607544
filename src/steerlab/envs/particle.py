"""The N-D particle task of Implicit Behavioral Cloning (Florence et al. 2021), as a gymnasium env.

A point mass in ``R^N`` is driven by a PD controller towards a position set-point (the action, in
``[0, 1]^N``). The task: visit the first goal, then the second goal, and still be at the second goal
when the episode ends.

Behaviour reproduced from google-research/ibc ``environments/particle/particle.py`` (facts only, own code):

* reset: agent position and both goals ~ U[0, 1]^N (drawn as float32, as IBC does, so the observation
  equals the internal state exactly), velocity 0.
* one control step = ``repeat_actions`` sub-steps of explicit Euler with ``dt``::

      u = k_p (a - x) - k_v v ;  x <- x + v dt  (old v) ;  v <- v + u dt

* after the sub-steps of a control step, the minimum distances to each goal are updated with the new
  position (once per control step; the position at reset is never counted).
* the episode truncates after ``n_steps`` control steps (``terminated`` is always False).
* reward (IBC's ``_get_reward``): 0 on every step except the last, where it is 1.0 if the minimum
  distances to BOTH goals are below ``goal_distance``. Note IBC's reward does NOT require still being at
  the second goal, while success does: an episode can end with reward 1.0 and ``success`` False.
* success (IBC's ``succeeded``): min dist to first goal < goal_distance AND min dist to second goal <
  goal_distance AND final dist to second goal < goal_distance. ``info["success"]`` is in every info dict
  but only becomes True on the final step (it is False before the episode ends).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

OBS_KEYS = ("pos_agent", "pos_first_goal", "pos_second_goal", "vel_agent")
"""Observation keys in IBC's flattening order (alphabetical)."""

# The PD controller is underdamped (zeta ~ 0.79): the agent overshoots set-points by ~2 %, so its position
# can leave [0, 1] slightly. These bounds are generous on purpose; velocity bounds are IBC's.
POS_AGENT_BOUNDS = (-0.5, 1.5)
VEL_BOUNDS = (-100.0, 100.0)
GOAL_DISTANCE = 0.05
"""IBC's success tolerance (``goal_distance``, the default of :class:`ParticleEnv`)."""


def flatten_obs(obs: dict) -> np.ndarray:
    """Concatenate an observation dict along the last axis in ``OBS_KEYS`` order -> float32 ``[..., 4N]``.

    Works for single observations (``[N]`` per key) and batches stacked per key (``[..., N]``).
    """
    missing = [k for k in OBS_KEYS if k not in obs]
    if missing:
        raise KeyError(f"observation lacks keys {missing}; expected {list(OBS_KEYS)}, got {sorted(obs)}")
    return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in OBS_KEYS], axis=-1)


class ParticleEnv(gym.Env):
    """IBC's N-D particle environment (see the module docstring for the exact rules).

    Internal state (float64, public for inspection): ``pos_agent``, ``vel_agent``, ``pos_first_goal``,
    ``pos_second_goal``, ``steps`` (control steps taken), ``min_dist_first_goal``,
    ``min_dist_second_goal``. Use :meth:`set_state` to place the agent/goals after ``reset``.
    """

    metadata = {"render_modes": []}

    def __init__(self, n_dim: int = 2, n_steps: int = 50, dt: float = 0.005, repeat_actions: int = 10,
                 k_p: float = 10.0, k_v: float = 5.0, goal_distance: float = GOAL_DISTANCE, render_mode: str | None = None):
        if int(n_dim) != n_dim or n_dim < 1:
            raise ValueError(f"n_dim must be a positive integer, got {n_dim!r}")
        if int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        if int(repeat_actions) != repeat_actions or repeat_actions < 1:
            raise ValueError(f"repeat_actions must be a positive integer, got {repeat_actions!r}")
        if not dt > 0 or not goal_distance > 0:
            raise ValueError(f"dt and goal_distance must be > 0, got dt={dt!r}, goal_distance={goal_distance!r}")
        if render_mode is not None:
            raise ValueError(f"ParticleEnv has no render modes, got render_mode={render_mode!r}")
        self.render_mode = None
        self.n_dim = int(n_dim)
        self.n_steps = int(n_steps)
        self.dt = float(dt)
        self.repeat_actions = int(repeat_actions)
        self.k_p = float(k_p)
        self.k_v = float(k_v)
        self.goal_distance = float(goal_distance)

        n = self.n_dim
        self.action_space = spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32)
        self.observation_space = spaces.Dict({
            "pos_agent": spaces.Box(*POS_AGENT_BOUNDS, shape=(n,), dtype=np.float32),
            "pos_first_goal": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "pos_second_goal": spaces.Box(0.0, 1.0, shape=(n,), dtype=np.float32),
            "vel_agent": spaces.Box(*VEL_BOUNDS, shape=(n,), dtype=np.float32),
        })
        self._needs_reset = True
        self._clear_state()

    def _clear_state(self) -> None:
        n = self.n_dim
        self.pos_agent = np.zeros(n)
        self.vel_agent = np.zeros(n)
        self.pos_first_goal = np.zeros(n)
        self.pos_second_goal = np.zeros(n)
        self.steps = 0
        self.min_dist_first_goal = np.inf
        self.min_dist_second_goal = np.inf

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        n = self.n_dim
        self._clear_state()
        # Same draw order as IBC (agent, first goal, second goal); float32 values as in IBC.
        self.pos_agent = self.np_random.random(n).astype(np.float32).astype(np.float64)
        self.pos_first_goal = self.np_random.random(n).astype(np.float32).astype(np.float64)
        self.pos_second_goal = self.np_random.random(n).astype(np.float32).astype(np.float64)
        self._needs_reset = False
        return self._obs(), {"success": False}

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (and again after the episode is truncated)")
        a = self._check_action(action)
        x, v = self.pos_agent, self.vel_agent
        for _ in range(self.repeat_actions):
            u = self.k_p * (a - x) - self.k_v * v
            x = x + v * self.dt
            v = v + u * self.dt
        self.pos_agent, self.vel_agent = x, v
        self.steps += 1

        # Tracked once per control step, after the sub-steps (IBC's _get_reward).
        d_first = float(np.linalg.norm(x - self.pos_first_goal))
        d_second = float(np.linalg.norm(x - self.pos_second_goal))
        self.min_dist_first_goal = min(self.min_dist_first_goal, d_first)
        self.min_dist_second_goal = min(self.min_dist_second_goal, d_second)

        truncated = self.steps >= self.n_steps
        hit_both = self.min_dist_first_goal < self.goal_distance and self.min_dist_second_goal < self.goal_distance
        reward = 1.0 if (truncated and hit_both) else 0.0
        success = bool(truncated and hit_both and d_second < self.goal_distance)
        if truncated:
            self._needs_reset = True
        info = {
            "success": success,
            "min_dist_first_goal": self.min_dist_first_goal,
            "min_dist_second_goal": self.min_dist_second_goal,
            "dist_second_goal": d_second,
        }
        return self._obs(), reward, False, truncated, info

    # ------------------------------------------------------------------ helpers
    def set_state(self, pos_agent=None, vel_agent=None, pos_first_goal=None, pos_second_goal=None) -> dict:
        """Overwrite parts of the state (float64, shape ``[N]``) and return the new observation.

        Meant for tests and scripted scenarios right after :meth:`reset`; it does not change the step count
        or the tracked minimum goal distances.
        """
        for name, value in (("pos_agent", pos_agent), ("vel_agent", vel_agent),
                            ("pos_first_goal", pos_first_goal), ("pos_second_goal", pos_second_goal)):
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64)
            if arr.shape != (self.n_dim,):
                raise ValueError(f"{name} must have shape ({self.n_dim},), got {arr.shape}")
            setattr(self, name, arr)
        return self._obs()

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_dim,):
            raise ValueError(
                f"action must have shape ({self.n_dim},) for n_dim={self.n_dim}, got shape {a.shape}"
            )
        if np.isnan(a).any():
            raise ValueError(f"action contains NaN: {a}")
        return np.clip(a, 0.0, 1.0)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pos_agent": self.pos_agent.astype(np.float32),
            "pos_first_goal": self.pos_first_goal.astype(np.float32),
            "pos_second_goal": self.pos_second_goal.astype(np.float32),
            "vel_agent": self.vel_agent.astype(np.float32),
        }


class ParticleOracle:
    """IBC's scripted expert for the particle task (``particle_oracles.ParticleOracle`` with
    ``wait_at_first_goal=1``).

    Outputs the first goal as the set-point until the observed agent position is within
    ``switch_distance`` of it, then the second goal from that same step on (latched until :meth:`reset`).

    ``multimodal=True`` (as in IBC): at each reset the goal order is shuffled, i.e. with probability 0.5
    the oracle visits the *second* goal first and ends at the first goal. The environment's success rule
    still requires ending at the second goal, so those episodes count as failures (IBC notes the same:
    its success check "doesn't work for multimodal version").

    Call :meth:`reset` at the start of every episode. ``rng`` seeds the goal-order draws (``None``, an int
    or a ``numpy.random.Generator``).
    """

    def __init__(self, multimodal: bool = False, switch_distance: float = 0.01, rng=None):
        if not switch_distance > 0:
            raise ValueError(f"switch_distance must be > 0, got {switch_distance!r}")
        self.multimodal = bool(multimodal)
        self.switch_distance = float(switch_distance)
        self.rng = np.random.default_rng(rng)
        self.reset()

    def reset(self) -> None:
        self.goal_order = ("pos_first_goal", "pos_second_goal")
        if self.multimodal and self.rng.random() < 0.5:
            self.goal_order = ("pos_second_goal", "pos_first_goal")
        self.reached_first = False
        self.switch_step: int | None = None
        self.t = 0

    def __call__(self, obs: dict) -> np.ndarray:
        first, second = self.goal_order
        x = np.asarray(obs["pos_agent"], dtype=np.float64)
        if not self.reached_first and np.linalg.norm(x - np.asarray(obs[first], dtype=np.float64)) < self.switch_distance:
            self.reached_first = True
            self.switch_step = self.t
        self.t += 1
        target = obs[second] if self.reached_first else obs[first]
        return np.array(target, dtype=np.float32)
