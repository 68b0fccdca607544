"""Route-following expert for :class:`~steerlab.envs.nav2d.env.Nav2DEnv`, whose demonstrations are multimodal:
:class:`NavOracle` picks a route uniformly at random at :meth:`NavOracle.reset` and follows it at a
per-episode speed; waypoints never skip a polyline vertex, so the robot traces the (collision-checked)
polyline exactly. If the robot is off the route by more than ``off_track`` it re-plans to a point
``lookahead`` further along the route. ``ref_traj`` is the chosen route resampled to ``n_ref`` points.

:func:`seeded_oracle` builds the oracle with the random stream the data collector uses for an env seed, so
rollouts and intents can recover the route and speed of a dataset episode.
"""

from __future__ import annotations

import numpy as np

from steerlab.envs.nav2d.geometry import to_robot_frame, world_to_action
from steerlab.envs.nav2d.planner import plan_path
from steerlab.envs.nav2d.polyline import (
    arc_lengths,
    dedup_polyline,
    interp_polyline,
    project_onto_polyline,
    resample_polyline,
)

_ORACLE_STREAM = 1  # separates the oracle's random stream from the env's (both derive from the env seed)


class NavOracle:
    """Route-following expert for :class:`~steerlab.envs.nav2d.env.Nav2DEnv`.

    ``reset()`` (after ``env.reset``) picks a route of ``env.routes`` uniformly at random (or ``route_id``)
    and a speed ``U(speed) * max_step`` per waypoint; ``act(obs)`` returns the action ``[16]`` (float32) whose
    8 waypoints continue along the route from the robot's projection onto it. Attributes after reset:
    ``route_id``, ``route`` (world polyline), ``ref_traj`` (float32 ``[n_ref, 2]``, world), ``replans``.
    """

    def __init__(self, env, rng=None, speed: tuple[float, float] = (0.75, 0.95), n_ref: int = 32,
                 off_track: float = 0.05, lookahead: float = 0.15):
        self.env = getattr(env, "unwrapped", env)
        self.rng = np.random.default_rng(rng)
        self.speed = (float(speed[0]), float(speed[1]))
        if not 0 < self.speed[0] <= self.speed[1] <= 1.0:
            raise ValueError(f"speed must satisfy 0 < lo <= hi <= 1 (fraction of max_step), got {speed!r}")
        self.n_ref = int(n_ref)
        self.off_track = float(off_track)
        self.lookahead = float(lookahead)
        self.route_id = None

    def reset(self, route_id: int | None = None) -> None:
        routes = self.env.routes
        if not routes:
            raise RuntimeError("the env has no routes; call env.reset() before oracle.reset()")
        self.route_id = int(self.rng.integers(len(routes))) if route_id is None else int(route_id)
        self.route = np.asarray(routes[self.route_id], dtype=np.float64)
        self.ref_traj = resample_polyline(self.route, n=self.n_ref).astype(np.float32)
        self.step_len = float(self.rng.uniform(*self.speed)) * self.env.max_step
        self._set_track(self.route)
        self.replans = 0

    def _set_track(self, track: np.ndarray) -> None:
        self._track = dedup_polyline(track)
        self._cum = arc_lengths(self._track)
        self.s = 0.0

    def ref_traj_robot(self, state) -> np.ndarray:
        """``ref_traj`` in the robot frame of ``state [6]`` -> float32 ``[n_ref, 2]``."""
        return to_robot_frame(np.asarray(state, np.float64), self.ref_traj.astype(np.float64)).astype(np.float32)

    def _replan(self, p: np.ndarray, s: float) -> None:
        s_t = min(s + self.lookahead, self._cum[-1])
        target = interp_polyline(self._track, self._cum, s_t)
        detour = plan_path(self.env.map, p, target)
        rest = self._track[self._cum > s_t + 1e-9]
        if detour is None:  # give up on the detour: head straight for the target
            detour = np.stack([p, target])
        self._set_track(np.vstack([detour, rest]))
        self.replans += 1

    def act(self, obs) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        p = state[:2]
        s, d = project_onto_polyline(self._track, self._cum, p, self.s - 0.05, self.s + 0.5)
        if d > self.off_track:
            self._replan(p, s)
            s, d = 0.0, 0.0
        self.s = s
        cum, L = self._cum, self._cum[-1]
        targets = []
        vi = int(np.searchsorted(cum, s + 1e-9, side="right"))  # next vertex strictly ahead
        for _ in range(self.env.n_waypoints):
            nxt = s + self.step_len
            if vi < len(cum) and cum[vi] < nxt:  # never skip a vertex: the chords then lie on the route
                nxt = cum[vi]
                vi += 1
            s = min(nxt, L)
            targets.append(s)
        wp = interp_polyline(self._track, cum, np.asarray(targets))
        return world_to_action(state, wp, self.env.max_step, clip=True).astype(np.float32)

    __call__ = act


def seeded_oracle(env, seed: int, route="random", **kwargs) -> NavOracle:
    """The oracle the collector runs on env seed ``seed`` (its own random stream ``[seed, 1]``), reset to
    ``route``: ``"random"`` (its own draw, the route of the dataset's episode) or a route index (clipped to the
    map's routes). ``env`` must have been reset with ``seed``; ``kwargs`` go to :class:`NavOracle`."""
    oracle = NavOracle(env, rng=np.random.default_rng([int(seed), _ORACLE_STREAM]), **kwargs)
    oracle.reset(None if route == "random" else min(int(route), len(env.routes) - 1))
    return oracle
