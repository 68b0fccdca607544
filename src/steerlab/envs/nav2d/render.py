"""Drawing nav2d scenes: a numpy rasterizer for the env's ``rgb_array`` frames (:func:`map_image`,
:func:`draw_episode`) and :func:`plot_map` for matplotlib axes (matplotlib is imported when it is called)."""

from __future__ import annotations

import math

import numpy as np

from steerlab.envs.nav2d.constants import GOAL_RADIUS

_ROUTE_COLORS = [(255, 190, 120), (200, 160, 255), (150, 220, 230)]


def _draw_polyline(img, pts, color, size):
    pts = np.asarray(pts, dtype=np.float64) * size
    if len(pts) < 2:
        return
    seg = np.diff(pts, axis=0)
    n = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) * 2).astype(int))
    for a, d, k in zip(pts[:-1], seg, n):
        t = np.arange(k + 1)[:, None] / k
        q = a + d * t
        c = np.clip(q[:, 0].astype(int), 0, size - 1)
        r = np.clip((size - q[:, 1]).astype(int), 0, size - 1)
        img[r, c] = color


def _draw_disc(img, center, radius, color, size):
    cx, cy, rad = center[0] * size, (1 - center[1]) * size, max(radius * size, 0.75)
    r0, r1 = max(int(cy - rad) - 1, 0), min(int(cy + rad) + 2, size)
    c0, c1 = max(int(cx - rad) - 1, 0), min(int(cx + rad) + 2, size)
    if r0 >= r1 or c0 >= c1:
        return
    rr, cc = np.mgrid[r0:r1, c0:c1]
    mask = (cc + 0.5 - cx) ** 2 + (rr + 0.5 - cy) ** 2 <= rad * rad
    img[rr[mask], cc[mask]] = color


def map_image(m, size: int) -> np.ndarray:
    """The static part of a frame: obstacles, routes and start of the map ``m`` -> uint8 ``[size, size, 3]``
    (north up)."""
    G = m.G
    rows = ((size - 1 - np.arange(size) + 0.5) / size * G).astype(np.int64)
    cols = ((np.arange(size) + 0.5) / size * G).astype(np.int64)
    occ = m.grid[rows[:, None], cols[None, :]]
    img = np.where(occ[..., None], np.array([60, 60, 70], np.uint8), np.array([245, 245, 240], np.uint8))
    for i, r in enumerate(m.routes):
        _draw_polyline(img, r, _ROUTE_COLORS[i % len(_ROUTE_COLORS)], size)
    _draw_disc(img, m.start, 0.012, (150, 150, 150), size)
    return img


def draw_episode(img: np.ndarray, goal, goal_radius: float, path, pos, heading: float, robot_radius: float) -> None:
    """Draw onto the frame ``img [size, size, 3]`` (in place) the goal, the ``path [T, 2]`` travelled so far, and
    the robot disc at ``pos`` with a tick along its ``heading``."""
    size = img.shape[0]
    _draw_disc(img, goal, goal_radius, (60, 180, 75), size)
    if len(path) > 1:
        _draw_polyline(img, np.asarray(path), (30, 90, 220), size)
    _draw_disc(img, pos, robot_radius, (220, 40, 40), size)
    tip = pos + 2.0 * robot_radius * np.array([math.cos(heading), math.sin(heading)])
    _draw_polyline(img, np.stack([pos, tip]), (120, 0, 0), size)


def plot_map(ax, env_or_map, path=None, routes: bool = True, route_ids=None, start: bool = True, goal: bool = True,
             robot: bool = True, title: str | None = None):
    """Draw a map on a matplotlib ``ax``: obstacles, routes (all or ``route_ids``), start, goal, an optional
    ``path [T, 2]`` (default: the env's path so far) and the robot (env only). Returns ``ax``."""
    from matplotlib.patches import Circle

    env = getattr(env_or_map, "unwrapped", env_or_map)
    m = env.map if hasattr(env, "map") else env
    ax.imshow(m.grid, origin="lower", extent=(0, 1, 0, 1), cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
    if routes:
        for i, r in enumerate(m.routes):
            if route_ids is not None and i not in route_ids:
                continue
            col = np.array(_ROUTE_COLORS[i % len(_ROUTE_COLORS)]) / 255
            ax.plot(r[:, 0], r[:, 1], "-", color=col, lw=2, label=f"route {i}")
    if start:
        ax.plot(*m.start, "o", color="0.4", ms=5)
    if goal:
        ax.add_patch(Circle(tuple(m.goal), GOAL_RADIUS, color=(0.24, 0.7, 0.3), alpha=0.6))
    if path is None and hasattr(env, "path") and env is not m:
        path = np.asarray(env.path)
    if path is not None and len(path) > 1:
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], "-", color=(0.12, 0.35, 0.86), lw=1.5)
    if robot and hasattr(env, "pos") and env is not m:
        ax.add_patch(Circle(tuple(env.pos), m.robot_radius, color=(0.86, 0.16, 0.16)))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
