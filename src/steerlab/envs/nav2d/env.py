"""The gymnasium env: 2-D point-robot navigation among procedurally generated obstacles (maps from
:mod:`steerlab.envs.nav2d.maps`), with NoMaD-style waypoint actions.

Robot and actions
-----------------
A holonomic disc robot (radius ``robot_radius`` = 0.02) with position ``p`` and heading ``theta``. The robot
frame has x forward (along the heading) and y to the left. An action is, as in NoMaD, ``n_waypoints`` = 8
future waypoints given as successive *deltas* in the robot frame of the decision state, flattened to
``[16]`` (``[dx_0, dy_0, dx_1, dy_1, ...]``) and scaled by ``max_step`` (0.04): world waypoint
``w_k = p + R(theta) * max_step * sum_{j <= k} a_j`` (:func:`~steerlab.envs.nav2d.geometry.waypoints_to_world`;
inverse :func:`~steerlab.envs.nav2d.geometry.world_to_action`). Components are clipped to ``[-1, 1]``.

``step(action)`` is one decision: a controller moves the robot towards each waypoint in turn, one sub-step
per waypoint, at most ``max_speed`` per sub-step (default ``sqrt(2) * max_step``, so every in-range
waypoint is reached exactly), and turns the heading to the direction of motion. Each sub-step is a swept
collision check (the segment is sampled every ``h / 4`` and the exact disc-vs-cells clearance is tested);
on collision the robot stops at the last collision-free sample. Success (distance to goal <=
``goal_radius`` = 0.05) is tested at the end of every sub-step; the decision stops there too.

A map is a pure function of the reset seed: ``reset(seed=s)`` draws it from ``self.np_random``. After reset,
``env.routes`` holds up to ``max_routes`` distinct routes from start to goal, ``env.distance_field`` the
signed distance field and ``env.geodesic_field`` the geodesic distance to the goal.

Observation (``gymnasium.spaces.Dict``)
---------------------------------------
* ``"occupancy"``: uint8 ``[32, 32]`` in ``{0, 1}``, egocentric occupancy image covering an
  ``occ_window`` x ``occ_window`` (0.5 x 0.5) square centred on the robot, heading pointing up: row 0 is the
  farthest ahead, column 0 the farthest to the LEFT. 1 = obstacle or outside the map.
* ``"state"``: float32 ``[6]`` = ``[x, y, cos theta, sin theta, vx, vy]`` in the world frame; ``(vx, vy)``
  is the displacement of the last sub-step (world units per sub-step; 0 after reset).
* ``"goal_rel"``: float32 ``[2]``, the goal in the robot frame (x forward, y left).
* ``"goal_pos"``: float32 ``[2]``, the goal in world coordinates.

Episode end, reward, info
-------------------------
``terminated`` on success or collision; ``truncated`` after ``max_steps`` (40) decisions. Reward: geodesic
progress ``d_prev - d_now`` + 1 on success - 1 on collision. ``info`` always has ``success``,
``collision``, ``timeout`` (bools, True only on the final step that caused them), ``distance`` (geodesic
8-connected A*/Dijkstra distance from the robot to the goal, world units), ``family`` and ``n_routes``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steerlab.envs.nav2d.constants import (
    FAMILIES,
    GOAL_RADIUS,
    GRID_SIZE,
    MAX_DECISIONS,
    MAX_STEP,
    MIN_SEPARATION,
    N_WAYPOINTS,
    OCC_SIZE,
    OCC_WINDOW,
    ROBOT_RADIUS,
)
from steerlab.envs.nav2d.geometry import collides, to_robot_frame, waypoints_to_world
from steerlab.envs.nav2d.maps import finalize_map, generate_map
from steerlab.envs.nav2d.navmap import NavMap
from steerlab.envs.nav2d.render import draw_episode, map_image


class Nav2DEnv(gym.Env):
    """2-D navigation with egocentric occupancy observations and 8-waypoint actions (module docstring).

    Public state after ``reset``: ``map`` (:class:`NavMap`), ``pos`` float64 ``[2]``, ``heading`` (rad),
    ``vel`` ``[2]``, ``steps`` (decisions taken), ``path`` (list of visited positions, one per sub-step).
    ``reset(options=...)`` accepts ``{"family": str}`` or a custom scene ``{"grid": bool [G, G], "start": [2],
    "goal": [2], "heading": float (default 0)}``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, family: str = "mixed", grid_size: int = GRID_SIZE, robot_radius: float = ROBOT_RADIUS,
                 goal_radius: float = GOAL_RADIUS, max_step: float = MAX_STEP, n_waypoints: int = N_WAYPOINTS,
                 max_speed: float | None = None, max_steps: int = MAX_DECISIONS, occ_size: int = OCC_SIZE,
                 occ_window: float = OCC_WINDOW, min_separation: float = MIN_SEPARATION, max_routes: int = 2,
                 render_mode: str | None = None, render_size: int = 192):
        if family not in FAMILIES + ("mixed",):
            raise ValueError(f"family must be one of {FAMILIES + ('mixed',)}, got {family!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not 0 < robot_radius <= 1.0 / grid_size:
            raise ValueError(f"robot_radius must be in (0, 1/grid_size] = (0, {1.0 / grid_size:.4f}], got {robot_radius!r}")
        if int(max_steps) < 1 or int(n_waypoints) < 1 or not max_step > 0:
            raise ValueError("max_steps and n_waypoints must be >= 1 and max_step > 0")
        self.family = family
        self.grid_size = int(grid_size)
        self.robot_radius = float(robot_radius)
        self.goal_radius = float(goal_radius)
        self.max_step = float(max_step)
        self.n_waypoints = int(n_waypoints)
        self.max_speed = float(max_speed) if max_speed is not None else math.sqrt(2.0) * self.max_step
        self.max_steps = int(max_steps)
        self.occ_size = int(occ_size)
        self.occ_window = float(occ_window)
        self.min_separation = float(min_separation)
        self.max_routes = int(max_routes)
        self.render_mode = render_mode
        self.render_size = int(render_size)

        S = self.occ_size
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2 * self.n_waypoints,), dtype=np.float32)
        self.observation_space = spaces.Dict({
            "occupancy": spaces.Box(0, 1, shape=(S, S), dtype=np.uint8),
            "state": spaces.Box(np.array([0, 0, -1, -1, -1, -1], np.float32),
                                np.array([1, 1, 1, 1, 1, 1], np.float32), dtype=np.float32),
            "goal_rel": spaces.Box(-1.5, 1.5, shape=(2,), dtype=np.float32),
            "goal_pos": spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32),
        })
        # egocentric pixel centres in the robot frame: row 0 = farthest ahead, column 0 = farthest left
        px = self.occ_window / S
        k = (S / 2 - 0.5 - np.arange(S)) * px
        fwd, left = np.meshgrid(k, k, indexing="ij")  # [row, col]
        self._occ_fwd, self._occ_left = fwd.ravel(), left.ravel()
        self._sweep_spacing = 0.25 / self.grid_size
        self.map: NavMap | None = None
        self._needs_reset = True
        self._base_img = None

    # ------------------------------------------------------------------ properties
    @property
    def routes(self) -> list:
        """Routes of the current map: list of world polylines ``[K, 2]`` (see module docstring)."""
        return self.map.routes if self.map is not None else []

    @property
    def distance_field(self) -> np.ndarray:
        """float32 ``[G, G]`` signed distance (world units) from cell centres to obstacles / map border."""
        return self.map.distance_field

    @property
    def geodesic_field(self) -> np.ndarray:
        return self.map.geodesic_field

    @property
    def grid(self) -> np.ndarray:
        return self.map.grid

    @property
    def goal(self) -> np.ndarray:
        return self.map.goal

    @property
    def state(self) -> np.ndarray:
        """float64 ``[6]`` ``[x, y, cos, sin, vx, vy]``."""
        return np.array([self.pos[0], self.pos[1], math.cos(self.heading), math.sin(self.heading),
                         self.vel[0], self.vel[1]])

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        if "grid" in options:
            grid = np.asarray(options["grid"], dtype=bool)
            if grid.shape != (self.grid_size, self.grid_size):
                raise ValueError(f"options['grid'] must have shape {(self.grid_size,) * 2}, got {grid.shape}")
            if "start" not in options or "goal" not in options:
                raise ValueError("a custom options['grid'] needs options['start'] and options['goal']")
            self.map = finalize_map(grid, options["start"], options["goal"], options.get("heading", 0.0),
                                    options.get("family", "custom"), self.robot_radius, self.max_routes)
        else:
            self.map = generate_map(self.np_random, options.get("family", self.family), self.grid_size,
                                    self.robot_radius, self.min_separation, self.max_routes)
        self.pos = self.map.start.copy()
        self.heading = self.map.heading
        self.vel = np.zeros(2)
        self.steps = 0
        self.path = [self.pos.copy()]
        self._base_img = None
        self._needs_reset = False
        self._distance = self.map.geodesic_distance(self.pos)
        return self._obs(), self._info(False, False, False)

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("call reset() before step() (and again after the episode ends)")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2 * self.n_waypoints,):
            raise ValueError(f"action must have shape ({2 * self.n_waypoints},), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"action contains NaN/inf: {a}")
        a = np.clip(a, -1.0, 1.0)
        wp = waypoints_to_world(self.state, a, self.max_step)  # [n, 2]

        # controller: one sub-step per waypoint, at most max_speed, pure-float loop (tiny)
        x, y = float(self.pos[0]), float(self.pos[1])
        pts = [(x, y)]
        for tx, ty in wp.tolist():
            dx, dy = tx - x, ty - y
            d = math.hypot(dx, dy)
            if d > self.max_speed:
                dx, dy = dx * self.max_speed / d, dy * self.max_speed / d
            x, y = x + dx, y + dy
            pts.append((x, y))
        pts = np.asarray(pts)  # [n + 1, 2]

        # swept collision check: m samples per sub-step at t = 1/m .. 1
        n = self.n_waypoints
        m = max(1, int(math.ceil(self.max_speed / self._sweep_spacing)))
        t = np.arange(1, m + 1) / m
        seg0, seg1 = pts[:-1], pts[1:]
        samples = seg0[:, None, :] + (seg1 - seg0)[:, None, :] * t[None, :, None]  # [n, m, 2]
        hit = collides(self.map.grid, samples, self.robot_radius)  # [n, m]
        k_col = int(np.argmax(hit.any(axis=1))) if hit.any() else n
        reached = np.hypot(*(seg1 - self.map.goal).T) <= self.goal_radius  # [n]
        k_suc = int(np.argmax(reached)) if reached.any() else n

        success = k_suc < n and k_suc < k_col
        collision = k_col < n and not success
        if collision:  # stop at the last collision-free sample of sub-step k_col
            j = int(np.argmax(hit[k_col]))
            stop = samples[k_col, j - 1] if j > 0 else seg0[k_col]
            executed = [*pts[1:k_col + 1]] + ([stop] if j > 0 else [])
            prev = seg0[k_col]
        else:
            k_end = k_suc + 1 if success else n
            executed = list(pts[1:k_end + 1])
            stop = pts[k_end]
            prev = pts[k_end - 1]
        # heading: direction of the last sub-step that moved
        moves = np.diff(np.vstack([self.pos[None], np.asarray(executed).reshape(-1, 2)]), axis=0)
        for mv in moves[::-1]:
            if math.hypot(mv[0], mv[1]) > 1e-9:
                self.heading = math.atan2(mv[1], mv[0])
                break
        self.vel = np.asarray(stop - prev, dtype=np.float64) if executed else np.zeros(2)
        self.pos = np.asarray(stop, dtype=np.float64).copy()
        self.path.extend(np.asarray(p, dtype=np.float64).copy() for p in executed)
        self.steps += 1

        d_prev = self._distance
        self._distance = self.map.geodesic_distance(self.pos)
        terminated = bool(success or collision)
        truncated = bool(not terminated and self.steps >= self.max_steps)
        reward = (d_prev - self._distance) + (1.0 if success else 0.0) - (1.0 if collision else 0.0)
        if terminated or truncated:
            self._needs_reset = True
        return self._obs(), float(reward), terminated, truncated, self._info(success, collision, truncated)

    def set_state(self, pos=None, heading: float | None = None, vel=None) -> dict:
        """Place the robot (tests / scripted scenarios after ``reset``); returns the new observation."""
        if pos is not None:
            self.pos = np.array(pos, dtype=np.float64).reshape(2)
            self.path.append(self.pos.copy())
        if heading is not None:
            self.heading = float(heading)
        if vel is not None:
            self.vel = np.array(vel, dtype=np.float64).reshape(2)
        self._distance = self.map.geodesic_distance(self.pos)
        return self._obs()

    # ------------------------------------------------------------------ observation
    def egocentric_occupancy(self, pos=None, heading=None) -> np.ndarray:
        """uint8 ``[S, S]`` occupancy around ``pos`` (default: the robot), heading up (module docstring)."""
        x, y = self.pos if pos is None else pos
        th = self.heading if heading is None else heading
        c, s = math.cos(th), math.sin(th)
        wx = x + c * self._occ_fwd - s * self._occ_left
        wy = y + s * self._occ_fwd + c * self._occ_left
        G = self.grid_size
        ix = np.floor(wx * G).astype(np.int64)
        iy = np.floor(wy * G).astype(np.int64)
        out = (ix < 0) | (ix >= G) | (iy < 0) | (iy >= G)
        occ = out | self.map.grid[np.clip(iy, 0, G - 1), np.clip(ix, 0, G - 1)]
        return occ.reshape(self.occ_size, self.occ_size).astype(np.uint8)

    def _obs(self) -> dict[str, np.ndarray]:
        st = self.state
        goal_rel = to_robot_frame(st, self.map.goal[None, :])[0]
        return {
            "occupancy": self.egocentric_occupancy(),
            "state": st.astype(np.float32),
            "goal_rel": goal_rel.astype(np.float32),
            "goal_pos": self.map.goal.astype(np.float32),
        }

    def _info(self, success, collision, timeout) -> dict:
        return {"success": bool(success), "collision": bool(collision), "timeout": bool(timeout),
                "distance": float(self._distance), "family": self.map.family, "n_routes": len(self.map.routes)}

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use Nav2DEnv(render_mode='rgb_array')")
            return None
        return self.render_rgb(self.render_size)

    def render_rgb(self, size: int | None = None) -> np.ndarray:
        """Top-down RGB image uint8 ``[size, size, 3]``: map, routes, path so far, goal, robot and heading."""
        size = int(size or self.render_size)
        if self._base_img is None or self._base_img.shape[0] != size:
            self._base_img = map_image(self.map, size)
        img = self._base_img.copy()
        draw_episode(img, self.map.goal, self.goal_radius, self.path, self.pos, self.heading, self.robot_radius)
        return img
