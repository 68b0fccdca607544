"""2-D point-robot navigation among procedurally generated obstacles, with NoMaD-style waypoint actions.

World and map
-------------
The world is the unit square ``[0, 1]^2``, discretized into a ``G x G`` occupancy grid (``G = grid_size``,
default 48, cell size ``h = 1 / G``). ``grid[iy, ix]`` is True for an obstacle; cell ``(ix, iy)`` covers
``[ix h, (ix + 1) h] x [iy h, (iy + 1) h]`` (row index = y, so ``imshow(grid, origin="lower")`` shows the
map upright). Everything outside the unit square counts as obstacle.

Map families (keyword ``family``; ``"mixed"`` draws one of the three per reset):

* ``"corridors"``: one or two walls across the map (thin walls or a thick central block), each with 2-3
  passages; start on one side, goal on the other, so there are >= 2 routes.
* ``"rooms"``: a 2x2 .. 3x3 grid of rooms; doors on a random spanning tree of the room graph plus extra
  doors (at least one cycle), start and goal in opposite corner rooms.
* ``"clutter"``: 6-14 random rectangles and discs.

Each family is generated in a canonical orientation and then put through one of the 8 symmetries of the
square. A map is a pure function of the reset seed: ``reset(seed=s)`` draws it from ``self.np_random``
(the map is redrawn, still from the same generator, until start and goal are connected). After reset,
``env.routes`` holds up to ``max_routes`` distinct routes from start to goal (see
:func:`steerlab.envs.nav2d_planner.find_routes`), ``env.distance_field`` the signed distance field and
``env.geodesic_field`` the geodesic distance to the goal.

Robot and actions
-----------------
A holonomic disc robot (radius ``robot_radius`` = 0.02) with position ``p`` and heading ``theta``. The robot
frame has x forward (along the heading) and y to the left. An action is, as in NoMaD, ``n_waypoints`` = 8
future waypoints given as successive *deltas* in the robot frame of the decision state, flattened to
``[16]`` (``[dx_0, dy_0, dx_1, dy_1, ...]``) and scaled by ``max_step`` (0.04): world waypoint
``w_k = p + R(theta) * max_step * sum_{j <= k} a_j`` (:func:`waypoints_to_world`; inverse
:func:`world_to_action`). Components are clipped to ``[-1, 1]``.

``step(action)`` is one decision: a controller moves the robot towards each waypoint in turn, one sub-step
per waypoint, at most ``max_speed`` per sub-step (default ``sqrt(2) * max_step``, so every in-range
waypoint is reached exactly), and turns the heading to the direction of motion. Each sub-step is a swept
collision check (the segment is sampled every ``h / 4`` and the exact disc-vs-cells clearance is tested);
on collision the robot stops at the last collision-free sample. Success (distance to goal <=
``goal_radius`` = 0.05) is tested at the end of every sub-step; the decision stops there too.

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

Helpers usable without stepping the env: :func:`waypoints_to_world`, :func:`world_to_action`,
:func:`to_robot_frame`, :func:`to_world_frame` (numpy or torch), :func:`clearance`, :func:`collides`,
:func:`signed_distance_field`, :func:`sample_distance_field` / :func:`soft_collision_cost` (torch,
differentiable w.r.t. the points), :func:`plot_map` (matplotlib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FAMILIES = ("corridors", "rooms", "clutter")
GRID_SIZE = 48
ROBOT_RADIUS = 0.02
GOAL_RADIUS = 0.05
MAX_STEP = 0.04
N_WAYPOINTS = 8
OCC_SIZE = 32
OCC_WINDOW = 0.5
MAX_DECISIONS = 40
MIN_SEPARATION = 0.5
PLAN_MARGIN = 0.01
"""Cells used for route planning have centre clearance >= robot_radius + PLAN_MARGIN."""
START_MARGIN = 0.008
"""Start and goal positions have exact clearance >= robot_radius + START_MARGIN."""


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


# ============================================================================================ maps
@dataclass
class NavMap:
    """A generated scene. ``grid`` bool ``[G, G]`` (``[iy, ix]``, True = obstacle); ``distance_field``
    float32 ``[G, G]`` signed distance at cell centres; ``geodesic_field`` float64 ``[G, G]`` geodesic distance
    from cell centres to the goal (inf = unreachable); ``routes``: list of ``[K, 2]`` world polylines from
    start to goal (first = shortest under the planner's cost)."""

    grid: np.ndarray
    start: np.ndarray
    goal: np.ndarray
    heading: float
    family: str
    robot_radius: float = ROBOT_RADIUS
    distance_field: np.ndarray | None = None
    geodesic_field: np.ndarray | None = None
    routes: list = field(default_factory=list)
    attempts: int = 1

    @property
    def G(self) -> int:
        return int(self.grid.shape[0])

    @property
    def cell(self) -> float:
        return 1.0 / self.grid.shape[0]

    def geodesic_distance(self, p) -> float:
        """Geodesic distance from world point ``p`` to the goal: ``min_c |p - c| + D[c]`` over reachable cells
        ``c`` in the 3x3 (else 5x5) block around ``p``, and the straight distance when ``p`` is within 2 cells
        of the goal. Falls back to the straight distance if no reachable cell is near."""
        G, D = self.G, self.geodesic_field
        p = np.asarray(p, dtype=np.float64)
        straight = float(np.hypot(*(p - self.goal)))
        ix, iy = int(math.floor(p[0] * G)), int(math.floor(p[1] * G))
        best = math.inf
        for n in (1, 2):
            x0, x1 = max(ix - n, 0), min(ix + n + 1, G)
            y0, y1 = max(iy - n, 0), min(iy + n + 1, G)
            if x0 >= x1 or y0 >= y1:
                break
            block = D[y0:y1, x0:x1]
            if np.isfinite(block).any():
                cx = (np.arange(x0, x1) + 0.5) / G
                cy = (np.arange(y0, y1) + 0.5) / G
                dist = np.hypot(cx[None, :] - p[0], cy[:, None] - p[1]) + block
                best = float(dist.min())
                break
        if straight < 2.0 * self.cell or not math.isfinite(best):
            best = min(best, straight)
        return best


def _rect(G, x0, x1, y0, y1) -> np.ndarray:
    c = cell_centers(G)
    return ((c[None, :] >= x0) & (c[None, :] <= x1)) & ((c[:, None] >= y0) & (c[:, None] <= y1))


def _disc(G, cx, cy, r) -> np.ndarray:
    c = cell_centers(G)
    return (c[None, :] - cx) ** 2 + (c[:, None] - cy) ** 2 <= r * r


def _gaps(rng, n, width_range, lo=0.04, hi=0.96, sep=0.08, tries=50):
    """``n`` non-overlapping intervals ``(centre, width)`` inside ``[lo, hi]`` separated by >= ``sep``."""
    for _ in range(tries):
        w = rng.uniform(*width_range, size=n)
        c = rng.uniform(lo + w / 2, hi - w / 2)
        order = np.argsort(c)
        c, w = c[order], w[order]
        ok = all(c[i + 1] - w[i + 1] / 2 - (c[i] + w[i] / 2) >= sep for i in range(n - 1))
        if ok:
            return list(zip(c, w))
    # fall back to evenly spaced passages
    c = lo + (hi - lo) * (np.arange(n) + 0.5) / n
    return [(float(ci), float(width_range[0])) for ci in c]


def _gen_corridors(rng, G):
    """Walls across x with passages; canonical travel direction left -> right."""
    grid = np.zeros((G, G), bool)
    if rng.random() < 0.5:  # one wall: thin, or a thick central block
        thick = rng.uniform(0.05, 0.35) if rng.random() < 0.6 else rng.uniform(0.03, 0.06)
        xs = [(rng.uniform(0.42, 0.58), thick)]
    else:  # two thin walls
        xs = [(rng.uniform(0.3, 0.4), rng.uniform(0.03, 0.08)), (rng.uniform(0.6, 0.7), rng.uniform(0.03, 0.08))]
    for xc, w in xs:
        grid |= _rect(G, xc - w / 2, xc + w / 2, -1.0, 2.0)
        n_gaps = 2 if rng.random() < 0.7 else 3
        for yc, gw in _gaps(rng, n_gaps, (0.09, 0.16), sep=0.12):
            grid &= ~_rect(G, xc - w / 2 - 0.01, xc + w / 2 + 0.01, yc - gw / 2, yc + gw / 2)
    # a few small obstacles in the open areas (never inside a wall's x band)
    for _ in range(rng.integers(0, 4)):
        cx, cy, r = rng.uniform(0.08, 0.92), rng.uniform(0.08, 0.92), rng.uniform(0.025, 0.05)
        if all(abs(cx - xc) > w / 2 + r + 0.1 for xc, w in xs):
            grid |= _disc(G, cx, cy, r)
    c = cell_centers(G)
    x_lo = xs[0][0] - xs[0][1] / 2 - 0.06
    x_hi = xs[-1][0] + xs[-1][1] / 2 + 0.06
    start_mask = np.broadcast_to(c[None, :] < x_lo, (G, G))
    goal_mask = np.broadcast_to(c[None, :] > x_hi, (G, G))
    return grid, start_mask, goal_mask


def _gen_rooms(rng, G):
    """Rooms with doors; start in room (0, 0), goal in the opposite corner room."""
    nx, ny = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    t = rng.uniform(0.025, 0.045)
    bx = [0.0] + [i / nx + rng.uniform(-0.04, 0.04) for i in range(1, nx)] + [1.0]
    by = [0.0] + [j / ny + rng.uniform(-0.04, 0.04) for j in range(1, ny)] + [1.0]
    grid = np.zeros((G, G), bool)
    for x in bx[1:-1]:
        grid |= _rect(G, x - t / 2, x + t / 2, -1.0, 2.0)
    for y in by[1:-1]:
        grid |= _rect(G, -1.0, 2.0, y - t / 2, y + t / 2)
    # room graph edges: ("v", i, j) = wall x=bx[i+1] between rooms (i,j),(i+1,j); ("h", i, j) similarly in y
    edges = [("v", i, j) for i in range(nx - 1) for j in range(ny)] + [("h", i, j) for i in range(nx) for j in range(ny - 1)]
    order = rng.permutation(len(edges))
    parent = list(range(nx * ny))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    chosen, extra = [], []
    for e_i in order:  # random spanning tree (Kruskal on a random edge order)
        kind, i, j = edges[e_i]
        a, b = i * ny + j, (i + 1) * ny + j if kind == "v" else i * ny + j + 1
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            chosen.append(edges[e_i])
        else:
            extra.append(edges[e_i])
    n_extra = 0
    for e in extra:
        if rng.random() < 0.4:
            chosen.append(e)
            n_extra += 1
    if n_extra == 0 and extra:  # at least one cycle
        chosen.append(extra[int(rng.integers(len(extra)))])
    for kind, i, j in chosen:
        if kind == "v":  # door in the vertical wall x = bx[i+1], y within room row j
            lo, hi, pos = by[j] + t / 2, by[j + 1] - t / 2, bx[i + 1]
        else:
            lo, hi, pos = bx[i] + t / 2, bx[i + 1] - t / 2, by[j + 1]
        n_doors = 2 if (hi - lo > 0.4 and rng.random() < 0.25) else 1
        for dc, dw in _gaps(rng, n_doors, (0.08, 0.11), lo=lo + 0.015, hi=hi - 0.015, sep=0.15):
            if kind == "v":
                grid &= ~_rect(G, pos - t, pos + t, dc - dw / 2, dc + dw / 2)
            else:
                grid &= ~_rect(G, dc - dw / 2, dc + dw / 2, pos - t, pos + t)
    start_mask = _rect(G, bx[0], bx[1] - t / 2, by[0], by[1] - t / 2)
    goal_mask = _rect(G, bx[-2] + t / 2, bx[-1], by[-2] + t / 2, by[-1])
    return grid, start_mask, goal_mask


def _gen_clutter(rng, G):
    grid = np.zeros((G, G), bool)
    for _ in range(int(rng.integers(6, 15))):
        cx, cy = rng.uniform(0.08, 0.92, size=2)
        if rng.random() < 0.5:
            w, hh = rng.uniform(0.04, 0.18, size=2)
            grid |= _rect(G, cx - w / 2, cx + w / 2, cy - hh / 2, cy + hh / 2)
        else:
            grid |= _disc(G, cx, cy, rng.uniform(0.03, 0.08))
    full = np.ones((G, G), bool)
    return grid, full, full


_GENERATORS = {"corridors": _gen_corridors, "rooms": _gen_rooms, "clutter": _gen_clutter}


def _dihedral(arrs, k):
    """Apply symmetry ``k`` in 0..7 of the square to each ``[G, G]`` array (transpose, flip y, flip x)."""
    out = []
    for a in arrs:
        if k & 1:
            a = a.T
        if k & 2:
            a = a[::-1, :]
        if k & 4:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def _sample_point(rng, grid, cand: np.ndarray, min_clear: float, tries: int = 20):
    """A position in a random candidate cell (centre + jitter) with exact clearance >= ``min_clear``."""
    G = grid.shape[0]
    idx = np.flatnonzero(cand)
    if len(idx) == 0:
        return None
    for _ in range(tries):
        iy, ix = divmod(int(idx[rng.integers(len(idx))]), G)
        p = (np.array([ix, iy]) + 0.5 + rng.uniform(-0.3, 0.3, size=2)) / G
        if clearance(grid, p, reach=min_clear * 1.01) >= min_clear:
            return p
    return None


def finalize_map(grid, start, goal, heading, family, robot_radius=ROBOT_RADIUS, max_routes=2,
                 sdf=None) -> NavMap:
    """Compute the distance fields and routes of a scene -> :class:`NavMap` (routes may be empty)."""
    from steerlab.envs.nav2d_planner import find_routes, geodesic_field

    grid = np.ascontiguousarray(grid, dtype=bool)
    m = NavMap(grid=grid, start=np.asarray(start, np.float64).copy(), goal=np.asarray(goal, np.float64).copy(),
               heading=float(heading), family=family, robot_radius=float(robot_radius))
    m.distance_field = signed_distance_field(grid) if sdf is None else sdf
    m.geodesic_field = geodesic_field(m)
    m.routes = find_routes(m, max_routes=max_routes)
    return m


def generate_map(rng: np.random.Generator, family: str = "mixed", grid_size: int = GRID_SIZE,
                 robot_radius: float = ROBOT_RADIUS, min_separation: float = MIN_SEPARATION,
                 max_routes: int = 2, max_attempts: int = 50) -> NavMap:
    """Draw a scene from ``rng`` (deterministic given its state): map, start, goal, heading, routes.

    The map (and start/goal) are redrawn until the goal is reachable from the start.
    """
    from steerlab.envs.nav2d_planner import geodesic_field

    if family == "mixed":
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    if family not in _GENERATORS:
        raise ValueError(f"family must be one of {FAMILIES + ('mixed',)}, got {family!r}")
    G = int(grid_size)
    plan_clear = robot_radius + PLAN_MARGIN
    start_clear = robot_radius + START_MARGIN
    c = cell_centers(G)
    for attempt in range(1, max_attempts + 1):
        grid, smask, gmask = _GENERATORS[family](rng, G)
        grid, smask, gmask = _dihedral([grid, smask, gmask], int(rng.integers(8)))
        sdf = signed_distance_field(grid)
        free = sdf >= plan_clear
        start = _sample_point(rng, grid, free & smask, start_clear)
        if start is None:
            continue
        far = np.hypot(c[None, :] - start[0], c[:, None] - start[1]) >= min_separation
        goal = _sample_point(rng, grid, free & gmask & far, start_clear)
        if goal is None or np.hypot(*(goal - start)) < min_separation:
            continue
        heading = float(rng.uniform(-math.pi, math.pi))
        probe = NavMap(grid=grid, start=start, goal=goal, heading=heading, family=family,
                       robot_radius=robot_radius, distance_field=sdf)
        D = geodesic_field(probe)
        iy, ix = int(start[1] * G), int(start[0] * G)
        if not np.isfinite(D[iy, ix]):
            continue
        m = finalize_map(grid, start, goal, heading, family, robot_radius, max_routes, sdf=sdf)
        if not m.routes:
            continue
        m.attempts = attempt
        return m
    raise RuntimeError(f"could not generate a connected {family!r} map in {max_attempts} attempts")


# ============================================================================================ env
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
            G = self.grid_size
            rows = ((size - 1 - np.arange(size) + 0.5) / size * G).astype(np.int64)
            cols = ((np.arange(size) + 0.5) / size * G).astype(np.int64)
            occ = self.map.grid[rows[:, None], cols[None, :]]
            img = np.where(occ[..., None], np.array([60, 60, 70], np.uint8), np.array([245, 245, 240], np.uint8))
            for i, r in enumerate(self.map.routes):
                _draw_polyline(img, r, _ROUTE_COLORS[i % len(_ROUTE_COLORS)], size)
            _draw_disc(img, self.map.start, 0.012, (150, 150, 150), size)
            self._base_img = img
        img = self._base_img.copy()
        _draw_disc(img, self.map.goal, self.goal_radius, (60, 180, 75), size)
        if len(self.path) > 1:
            _draw_polyline(img, np.asarray(self.path), (30, 90, 220), size)
        _draw_disc(img, self.pos, self.robot_radius, (220, 40, 40), size)
        tip = self.pos + 2.0 * self.robot_radius * np.array([math.cos(self.heading), math.sin(self.heading)])
        _draw_polyline(img, np.stack([self.pos, tip]), (120, 0, 0), size)
        return img


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
