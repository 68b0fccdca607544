"""Geometry of the nav2d world: robot <-> world frames and waypoint actions, exact clearance and collision
checks against the occupancy grid, the signed distance field, its bilinear sampling (numpy, and torch for
gradients) and the differentiable soft collision cost.

Frame and action helpers take numpy or torch arrays; ``map_or_grid`` arguments accept a bool grid ``[G, G]``
(``[iy, ix]``, True = obstacle), a :class:`~steerlab.envs.nav2d.navmap.NavMap` or an env.
"""

from __future__ import annotations

import math

import numpy as np

from steerlab.envs.nav2d.constants import MAX_STEP, ROBOT_RADIUS


# ============================================================================================ frames
def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _heading(state):
    """Unit heading ``(c, s)`` from ``state[..., 2:4]``, each with a trailing singleton axis."""
    c, s = state[..., 2:3], state[..., 3:4]
    n = (c * c + s * s) ** 0.5
    return c / n, s / n


def _stack(xs, like):
    if _is_torch(like):
        import torch
        return torch.stack(xs, dim=-1)
    return np.stack(xs, axis=-1)


def to_robot_frame(state, points):
    """World points ``[..., K, 2]`` -> robot frame (x forward, y left) of ``state [..., 6]`` -> ``[..., K, 2]``.

    numpy or torch (differentiable); ``state`` broadcasts against the leading axes of ``points``.
    """
    c, s = _heading(state)
    dx = points[..., 0] - state[..., 0:1]
    dy = points[..., 1] - state[..., 1:2]
    return _stack([c * dx + s * dy, -s * dx + c * dy], points)


def to_world_frame(state, points):
    """Inverse of :func:`to_robot_frame`: robot-frame points ``[..., K, 2]`` -> world ``[..., K, 2]``."""
    c, s = _heading(state)
    x, y = points[..., 0], points[..., 1]
    return _stack([state[..., 0:1] + c * x - s * y, state[..., 1:2] + s * x + c * y], points)


def waypoints_to_world(state, action, max_step: float = MAX_STEP):
    """Action ``[..., 2n]`` (scaled robot-frame deltas) at ``state [..., 6]`` -> world waypoints ``[..., n, 2]``.

    ``w_k = p + R(theta) * max_step * cumsum(deltas)_k``. numpy or torch (differentiable). No clipping.
    """
    d = action.reshape(*action.shape[:-1], -1, 2) * max_step
    d = d.cumsum(-2) if _is_torch(d) else np.cumsum(d, axis=-2)
    return to_world_frame(state, d)


def world_to_action(state, world_waypoints, max_step: float = MAX_STEP, clip: bool = False):
    """World waypoints ``[..., n, 2]`` -> action ``[..., 2n]`` at ``state [..., 6]`` (inverse of
    :func:`waypoints_to_world`). ``clip=True`` clips to ``[-1, 1]`` (what the env would execute)."""
    rel = to_robot_frame(state, world_waypoints)  # cumulative offsets in the robot frame
    if _is_torch(rel):
        import torch
        prev = torch.cat([torch.zeros_like(rel[..., :1, :]), rel[..., :-1, :]], dim=-2)
    else:
        prev = np.concatenate([np.zeros_like(rel[..., :1, :]), rel[..., :-1, :]], axis=-2)
    a = ((rel - prev) / max_step).reshape(*rel.shape[:-2], -1)
    if clip:
        a = a.clamp(-1.0, 1.0) if _is_torch(a) else np.clip(a, -1.0, 1.0)
    return a


# ============================================================================================ geometry
def _grid_of(map_or_grid) -> np.ndarray:
    if isinstance(map_or_grid, np.ndarray):
        return map_or_grid
    m = getattr(map_or_grid, "unwrapped", map_or_grid)
    m = getattr(m, "map", m)
    return m.grid


def cell_centers(G: int) -> np.ndarray:
    """Cell-centre coordinates ``(i + 0.5) / G``, ``[G]``."""
    return (np.arange(G) + 0.5) / G


def clearance(map_or_grid, points, reach: float = 0.05) -> np.ndarray:
    """Exact distance from ``points [..., 2]`` to the nearest obstacle cell square or the map border, capped
    at ``reach`` -> float64 ``[...]`` (0 inside obstacles / outside the map).

    ``map_or_grid``: a bool grid ``[G, G]``, a :class:`NavMap` or an env. Checks the ``(2n+1)^2`` cells around
    each point with ``n = ceil(reach / h)``, so values below ``reach`` are exact.
    """
    grid = _grid_of(map_or_grid)
    G = grid.shape[0]
    h = 1.0 / G
    pts = np.asarray(points, dtype=np.float64)
    shape = pts.shape[:-1]
    p = pts.reshape(-1, 2)
    n = max(1, int(math.ceil(reach / h)))
    off = np.arange(-n, n + 1)
    ix = np.floor(p[:, 0] * G).astype(np.int64)[:, None, None] + off[None, None, :]  # [N, 1, 2n+1]
    iy = np.floor(p[:, 1] * G).astype(np.int64)[:, None, None] + off[None, :, None]  # [N, 2n+1, 1]
    ix, iy = np.broadcast_arrays(ix, iy)
    outside = (ix < 0) | (ix >= G) | (iy < 0) | (iy >= G)
    occ = outside | grid[np.clip(iy, 0, G - 1), np.clip(ix, 0, G - 1)]
    x = p[:, 0, None, None]
    y = p[:, 1, None, None]
    ddx = np.maximum(np.maximum(ix * h - x, x - (ix + 1) * h), 0.0)
    ddy = np.maximum(np.maximum(iy * h - y, y - (iy + 1) * h), 0.0)
    d = np.where(occ, np.hypot(ddx, ddy), np.inf).reshape(len(p), -1).min(axis=1)
    return np.minimum(d, reach).reshape(shape)


def collides(map_or_grid, points, radius: float | None = None) -> np.ndarray:
    """Hard check: does a disc of ``radius`` (default: the map's robot radius, else 0.02) at each of
    ``points [..., 2]`` overlap an obstacle cell or leave the map? -> bool ``[...]``."""
    if radius is None:
        m = getattr(map_or_grid, "unwrapped", map_or_grid)
        m = getattr(m, "map", m)
        radius = getattr(m, "robot_radius", ROBOT_RADIUS)
    return clearance(map_or_grid, points, reach=max(radius, 1e-9) * 1.01) < radius


def _square_edt(mask: np.ndarray) -> np.ndarray:
    """Distance (cell units) from every cell centre to the nearest True cell *square* -> float64 ``[H, W]``.

    Exact and separable: ``d^2 = min_{k,l} f(x - k) + f(y - l)`` with ``f(d) = max(|d| - 1/2, 0)^2``; each pass
    is a dense ``[H, W, W]`` min (cheap for the small grids used here).
    """
    H, W = mask.shape
    fx = np.maximum(np.abs(np.arange(W)[:, None] - np.arange(W)[None, :]) - 0.5, 0.0) ** 2  # [x, k]
    fy = np.maximum(np.abs(np.arange(H)[:, None] - np.arange(H)[None, :]) - 0.5, 0.0) ** 2  # [y, l]
    big = np.where(mask, 0.0, np.inf)
    g = np.min(fx[None, :, :] + big[:, None, :], axis=2)  # [H(l), W(x)]
    d2 = np.min(fy[:, :, None] + g[None, :, :], axis=1)  # [H(y), W(x)]
    return np.sqrt(d2)


def signed_distance_field(grid: np.ndarray) -> np.ndarray:
    """Signed distance (world units) at every cell centre: ``+`` distance to the nearest obstacle square or
    the map border for free cells, ``-`` distance to the nearest free square for obstacle cells ->
    float32 ``[G, G]`` (indexed ``[iy, ix]`` like ``grid``). Values are exact at the cell centres."""
    grid = np.asarray(grid, dtype=bool)
    h = 1.0 / grid.shape[0]
    d_out = _square_edt(np.pad(grid, 1, constant_values=True))[1:-1, 1:-1]
    d_in = _square_edt(np.pad(~grid, 1, constant_values=False))[1:-1, 1:-1]
    return (np.where(grid, -d_in, d_out) * h).astype(np.float32)


def sample_distance_field_np(field: np.ndarray, points) -> np.ndarray:
    """numpy twin of :func:`sample_distance_field`: bilinear signed distance at ``points [..., 2]`` -> ``[...]``."""
    G = field.shape[-1]
    p = np.asarray(points, dtype=np.float64)
    u = np.clip(p[..., 0] * G - 0.5, 0.0, G - 1.0)
    v = np.clip(p[..., 1] * G - 0.5, 0.0, G - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.int64), G - 2)
    j0 = np.minimum(np.floor(v).astype(np.int64), G - 2)
    fu, fv = u - i0, v - j0
    f = field.astype(np.float64)
    val = ((1 - fu) * (1 - fv) * f[j0, i0] + fu * (1 - fv) * f[j0, i0 + 1]
           + (1 - fu) * fv * f[j0 + 1, i0] + fu * fv * f[j0 + 1, i0 + 1])
    border = np.minimum(np.minimum(p[..., 0], 1 - p[..., 0]), np.minimum(p[..., 1], 1 - p[..., 1]))
    return np.minimum(val, border)


def sample_distance_field(field, points):
    """Differentiable signed distance at ``points`` by bilinear interpolation of a cell-centre field (torch).

    ``field``: ``[G, G]`` (shared) or ``[B, G, G]`` (one map per batch row), tensor or numpy (e.g.
    ``env.distance_field``); ``points``: ``[B, K, 2]`` (or ``[K, 2]`` with a ``[G, G]`` field) world coords.
    Returns ``[B, K]`` (``[K]``) = ``min(bilinear(field), distance to the map border)``; the border term makes
    points outside the unit square negative. Gradients flow to ``points`` (and ``field``).
    """
    import torch

    pts = points
    field = torch.as_tensor(field, dtype=pts.dtype, device=pts.device)
    squeeze = pts.dim() == 2
    if squeeze:
        pts = pts.unsqueeze(0)
    B, K, _ = pts.shape
    G = field.shape[-1]
    flat = field.reshape(-1, G * G)
    if flat.shape[0] == 1:
        flat = flat.expand(B, G * G)
    elif flat.shape[0] != B:
        raise ValueError(f"field has batch {flat.shape[0]} but points have batch {B}")
    u = (pts[..., 0] * G - 0.5).clamp(0.0, G - 1.0)
    v = (pts[..., 1] * G - 0.5).clamp(0.0, G - 1.0)
    i0 = u.detach().floor().long().clamp(max=G - 2)
    j0 = v.detach().floor().long().clamp(max=G - 2)
    fu, fv = u - i0, v - j0

    def at(j, i):
        return torch.gather(flat, 1, (j * G + i).reshape(B, K)).reshape(B, K)

    val = ((1 - fu) * (1 - fv) * at(j0, i0) + fu * (1 - fv) * at(j0, i0 + 1)
           + (1 - fu) * fv * at(j0 + 1, i0) + fu * fv * at(j0 + 1, i0 + 1))
    x, y = pts[..., 0], pts[..., 1]
    border = torch.minimum(torch.minimum(x, 1 - x), torch.minimum(y, 1 - y))
    out = torch.minimum(val, border)
    return out[0] if squeeze else out


def densify(points, substeps: int):
    """Insert ``substeps - 1`` linearly interpolated points between consecutive points ``[B, K, 2]`` ->
    ``[B, (K - 1) * substeps + 1, 2]`` (torch, differentiable)."""
    import torch

    if substeps <= 1 or points.shape[-2] < 2:
        return points
    t = torch.arange(substeps, dtype=points.dtype, device=points.device) / substeps  # [S]
    a, b = points[..., :-1, None, :], points[..., 1:, None, :]  # [B, K-1, 1, 2]
    mid = a + (b - a) * t[:, None]  # [B, K-1, S, 2]
    mid = mid.reshape(*points.shape[:-2], -1, 2)
    return torch.cat([mid, points[..., -1:, :]], dim=-2)


def soft_collision_cost(distance_field, points, radius: float = ROBOT_RADIUS, margin: float = 0.01,
                        substeps: int = 1):
    """Differentiable collision cost of trajectories ``points [B, K, 2]`` (world) -> ``[B]`` (torch).

    ``sum_k (relu(radius + margin - sdf(p_k)) / (radius + margin))^2`` with ``sdf`` from
    :func:`sample_distance_field`: exactly 0 when every point keeps ``radius + margin`` of clearance, growing
    quadratically with penetration (and still growing inside obstacles, where the field is negative). The
    margin covers the bilinear interpolation error, so a hard collision (:func:`collides`) always gives a
    positive cost. ``substeps > 1`` also scores points interpolated between consecutive waypoints (swept
    check). ``distance_field``: ``[G, G]`` or ``[B, G, G]`` (e.g. ``env.distance_field``).
    """
    import torch

    pts = densify(points, int(substeps))
    sdf = sample_distance_field(distance_field, pts)
    r = radius + margin
    return (torch.relu(r - sdf) / r).pow(2).sum(-1)
