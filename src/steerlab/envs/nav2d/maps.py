"""Procedural map generation for nav2d: a scene (:class:`~steerlab.envs.nav2d.navmap.NavMap`) is a pure
function of the generator's state.

The world is the unit square ``[0, 1]^2``, discretized into a ``G x G`` occupancy grid (``G = grid_size``,
default 48, cell size ``h = 1 / G``). ``grid[iy, ix]`` is True for an obstacle; cell ``(ix, iy)`` covers
``[ix h, (ix + 1) h] x [iy h, (iy + 1) h]`` (row index = y, so ``imshow(grid, origin="lower")`` shows the
map upright). Everything outside the unit square counts as obstacle.

Map families (keyword ``family``; ``"mixed"`` draws one of the three per map):

* ``"corridors"``: one or two walls across the map (thin walls or a thick central block), each with 2-3
  passages; start on one side, goal on the other, so there are >= 2 routes.
* ``"rooms"``: a 2x2 .. 3x3 grid of rooms; doors on a random spanning tree of the room graph plus extra
  doors (at least one cycle), start and goal in opposite corner rooms.
* ``"clutter"``: 6-14 random rectangles and discs.

Each family is generated in a canonical orientation and then put through one of the 8 symmetries of the
square. :func:`generate_map` redraws the map, still from the same generator, until start and goal are
connected; :func:`finalize_map` adds the distance fields and up to ``max_routes`` distinct routes (see
:func:`steerlab.envs.nav2d.planner.find_routes`).
"""

from __future__ import annotations

import math

import numpy as np

from steerlab.envs.nav2d.constants import (
    FAMILIES,
    GRID_SIZE,
    MIN_SEPARATION,
    PLAN_MARGIN,
    ROBOT_RADIUS,
    START_MARGIN,
)
from steerlab.envs.nav2d.geometry import cell_centers, clearance, signed_distance_field
from steerlab.envs.nav2d.navmap import NavMap
from steerlab.envs.nav2d.planner import find_routes, geodesic_field


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
