"""Route planner for nav2d maps: grid search, smoothing and route finding.

Pieces (all positions in world units, grids indexed ``[iy, ix]`` like the env's):

* :func:`geodesic_field` -- Dijkstra from the goal over cells whose centre clearance exceeds the robot
  radius (8-connected, no corner cutting): geodesic distance to the goal, float64 ``[G, G]`` (inf =
  unreachable). The env reports it as ``info["distance"]``; it is also the A* heuristic below.
* :func:`astar` -- A* on the grid inflated by ``robot_radius + PLAN_MARGIN`` with a per-cell cost multiplier
  (edge cost = step length x mean multiplier of its two cells). The multiplier grows near obstacles
  (routes keep to the middle of passages) and, for alternative routes, near earlier routes.
* :func:`smooth_path` -- greedy string pulling of the grid path: a shortcut is taken when the bilinear
  distance field along it never drops below the clearance the grid path itself had (capped at
  ``SMOOTH_CLEARANCE``); every kept shortcut is re-checked with the exact clearance.
* :func:`find_routes` -- route 0 = A* path; route k = A* after penalizing cells within
  ``penalty_radius`` of routes < k, kept if its overlap with every earlier route (fraction of its points
  within ``overlap_tol`` of that route, endpoints excluded) is <= ``max_overlap`` and it is at most
  ``max_length_ratio`` times as long as route 0.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from steerlab.envs.nav2d.constants import PLAN_MARGIN
from steerlab.envs.nav2d.geometry import clearance, sample_distance_field_np
from steerlab.envs.nav2d.navmap import NavMap
from steerlab.envs.nav2d.polyline import dedup_polyline, polyline_length, resample_polyline

SQRT2 = math.sqrt(2.0)
SMOOTH_CLEARANCE = 0.045
"""Shortcuts keep this much clearance where the grid path had it."""
PREFERRED_CLEARANCE = 0.08
"""Cells with less clearance than this cost up to ``1 + OBSTACLE_COST`` times more to cross."""
OBSTACLE_COST = 1.0


# ============================================================================================ grid search
def _graph(free: np.ndarray):
    """Padded flat occupancy list and 8-neighbour table ``(offset, length_in_cells, ortho1, ortho2)``."""
    H, W0 = free.shape
    W = W0 + 2
    fp = np.zeros((H + 2, W), bool)
    fp[1:-1, 1:-1] = free
    nbrs = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            diag = dx != 0 and dy != 0
            nbrs.append((dy * W + dx, SQRT2 if diag else 1.0, dx if diag else 0, dy * W if diag else 0))
    return fp.ravel().tolist(), W, nbrs


def _pad_flat(a: np.ndarray, fill) -> list:
    return np.pad(a, 1, constant_values=fill).ravel().tolist()


def _cell(p, G) -> tuple[int, int]:
    return (min(max(int(math.floor(p[1] * G)), 0), G - 1), min(max(int(math.floor(p[0] * G)), 0), G - 1))


def geodesic_field(m: NavMap) -> np.ndarray:
    """Dijkstra from the goal: geodesic distance (world units) from each cell centre to ``m.goal`` over cells
    with centre clearance > robot radius -> float64 ``[G, G]`` (inf where unreachable). Cells of the 3x3
    block around the goal are seeded with their straight distance to the goal."""
    G, h = m.G, m.cell
    free = m.distance_field > m.robot_radius
    fp, W, nbrs = _graph(free)
    nbrs = [(o, ln * h, a, b) for o, ln, a, b in nbrs]
    N = len(fp)
    dist = [math.inf] * N
    gy, gx = _cell(m.goal, G)
    heap = []
    for iy in range(max(gy - 1, 0), min(gy + 2, G)):
        for ix in range(max(gx - 1, 0), min(gx + 2, G)):
            n = (iy + 1) * W + ix + 1
            if fp[n]:
                dist[n] = math.hypot((ix + 0.5) * h - m.goal[0], (iy + 0.5) * h - m.goal[1])
                heap.append((dist[n], n))
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        d, n = pop(heap)
        if d > dist[n]:
            continue
        for off, ln, o1, o2 in nbrs:
            k = n + off
            if not fp[k] or (o1 and not (fp[n + o1] and fp[n + o2])):
                continue
            nd = d + ln
            if nd < dist[k]:
                dist[k] = nd
                push(heap, (nd, k))
    return np.asarray(dist).reshape(G + 2, W)[1:-1, 1:-1]


def astar(free: np.ndarray, cost: np.ndarray, start: tuple[int, int], goal: tuple[int, int],
          heuristic: np.ndarray | None = None, cell: float | None = None) -> list[tuple[int, int]] | None:
    """A* from cell ``start`` to cell ``goal`` (``(iy, ix)``) on ``free`` (bool ``[G, G]``), 8-connected without
    corner cutting; edge cost = length x mean of ``cost`` (``>= 1``, ``[G, G]``) at its two cells.
    ``heuristic`` (world units, ``[G, G]``; default octile distance) should not exceed the remaining cost.
    Returns the cells from start to goal, or None if unreachable."""
    G = free.shape[0]
    h = 1.0 / G if cell is None else cell
    fp, W, nbrs = _graph(free)
    nbrs = [(o, ln * h * 0.5, a, b) for o, ln, a, b in nbrs]
    if heuristic is None:
        iy, ix = np.mgrid[0:G, 0:G]
        dy, dx = np.abs(iy - goal[0]), np.abs(ix - goal[1])
        heuristic = h * (np.maximum(dx, dy) + (SQRT2 - 1) * np.minimum(dx, dy))
    heur = _pad_flat(np.where(np.isfinite(heuristic), heuristic, np.inf), np.inf)
    cst = _pad_flat(np.asarray(cost, dtype=np.float64), 1.0)
    src = (start[0] + 1) * W + start[1] + 1
    dst = (goal[0] + 1) * W + goal[1] + 1
    if not (fp[src] and fp[dst]):
        return None
    N = len(fp)
    g = [math.inf] * N
    parent = [-1] * N
    g[src] = 0.0
    heap = [(heur[src] if math.isfinite(heur[src]) else 0.0, 0.0, src)]
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, gc, n = pop(heap)
        if n == dst:
            path = []
            while n != -1:
                path.append((n // W - 1, n % W - 1))
                n = parent[n]
            return path[::-1]
        if gc > g[n]:
            continue
        cn = cst[n]
        for off, ln, o1, o2 in nbrs:
            k = n + off
            if not fp[k] or (o1 and not (fp[n + o1] and fp[n + o2])):
                continue
            hk = heur[k]
            if hk == math.inf:
                continue
            ng = gc + ln * (cn + cst[k])
            if ng < g[k]:
                g[k] = ng
                parent[k] = n
                push(heap, (ng + hk, ng, k))
    return None


# ============================================================================================ smoothing
def smooth_path(m: NavMap, pts: np.ndarray, clear: np.ndarray, spacing: float = 0.005, max_lookahead: int = 48,
                tol: float = 0.003) -> np.ndarray:
    """String-pull the path ``pts [N, 2]`` (clearances ``clear [N]``) -> polyline ``[K, 2]`` (subset of ``pts``).

    A shortcut ``i -> j`` is accepted when the bilinear distance field along it stays >= ``min(
    SMOOTH_CLEARANCE, min(clear[i..j])) - tol`` (and >= radius + 0.006); accepted shortcuts are verified
    with the exact clearance (>= radius + 0.003), otherwise the original points ``i..j`` are kept."""
    N = len(pts)
    if N <= 2:
        return pts.copy()
    r = m.robot_radius
    keep = [0]
    i = 0
    while i < N - 1:
        j_best = i + 1
        cand = np.arange(i + 2, min(N, i + 1 + max_lookahead))
        if len(cand):
            a, b = pts[i], pts[cand]  # [C, 2]
            lens = np.hypot(*(b - a).T)
            n_s = max(2, int(math.ceil(lens.max() / spacing)) + 1)
            t = np.linspace(0.0, 1.0, n_s)
            samples = a + (b - a)[:, None, :] * t[None, :, None]  # [C, n_s, 2]
            min_sdf = sample_distance_field_np(m.distance_field, samples).min(axis=1)
            path_clear = np.minimum.accumulate(clear[i:])[cand - i]
            thr = np.maximum(np.minimum(SMOOTH_CLEARANCE, path_clear) - tol, r + 0.006)
            ok = np.flatnonzero(min_sdf >= thr)
            if len(ok):
                j_best = int(cand[ok[-1]])
        keep.append(j_best)
        i = j_best
    # exact verification of the shortcuts
    out = [pts[0]]
    for i, j in zip(keep[:-1], keep[1:]):
        if j > i + 1:
            L = float(np.hypot(*(pts[j] - pts[i])))
            t = np.linspace(0.0, 1.0, max(2, int(math.ceil(L / 0.004)) + 1))
            seg = pts[i] + (pts[j] - pts[i]) * t[:, None]
            if clearance(m.grid, seg, reach=r + 0.01).min() < r + 0.003:
                out.extend(pts[i + 1: j])
        out.append(pts[j])
    return np.asarray(out)


def _cells_to_points(m: NavMap, cells, p_from, p_to) -> tuple[np.ndarray, np.ndarray]:
    """Grid path -> ``[p_from, cell centres..., p_to]`` and their clearances."""
    h = m.cell
    cells = np.asarray(cells)
    centers = (cells[:, ::-1] + 0.5) * h  # (iy, ix) -> (x, y)
    ends = np.stack([p_from, p_to])
    c_ends = clearance(m.grid, ends, reach=SMOOTH_CLEARANCE)
    c_mid = np.maximum(m.distance_field[cells[:, 0], cells[:, 1]].astype(np.float64), 0.0)
    pts = np.vstack([ends[:1], centers, ends[1:]])
    clear = np.concatenate([c_ends[:1], c_mid, c_ends[1:]])
    return pts, clear


def planning_cost(m: NavMap) -> tuple[np.ndarray, np.ndarray]:
    """(free ``[G, G]`` bool for planning, cost multiplier ``[G, G]`` >= 1 growing near obstacles)."""
    sdf = m.distance_field.astype(np.float64)
    free = sdf >= m.robot_radius + PLAN_MARGIN
    cost = 1.0 + OBSTACLE_COST * np.clip((PREFERRED_CLEARANCE - sdf) / PREFERRED_CLEARANCE, 0.0, 1.0)
    return free, cost


def plan_path(m: NavMap, p_from, p_to, cost: np.ndarray | None = None, heuristic: np.ndarray | None = None):
    """Smoothed planned polyline ``[K, 2]`` from ``p_from`` to ``p_to`` (world), or None if unreachable.
    The cells containing both points are treated as free."""
    free, base_cost = planning_cost(m)
    cost = base_cost if cost is None else cost
    a, b = _cell(p_from, m.G), _cell(p_to, m.G)
    free = free.copy()
    free[a] = free[b] = True
    cells = astar(free, cost, a, b, heuristic=heuristic, cell=m.cell)
    if cells is None:
        return None
    pts, clear = _cells_to_points(m, cells, np.asarray(p_from, float), np.asarray(p_to, float))
    return dedup_polyline(smooth_path(m, pts, clear))


def route_overlap(a: np.ndarray, b: np.ndarray, tol: float = 0.05, end_exclude: float = 0.1) -> float:
    """Fraction of route ``a``'s points (resampled every 0.01, ignoring those within ``end_exclude`` of its
    endpoints) lying within ``tol`` of route ``b``."""
    pa = resample_polyline(a, spacing=0.01)
    pb = resample_polyline(b, spacing=0.005)
    far = (np.hypot(*(pa - a[0]).T) > end_exclude) & (np.hypot(*(pa - a[-1]).T) > end_exclude)
    pa = pa[far]
    if len(pa) == 0:
        return 1.0
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return float((d < tol).mean())


def _near_mask(m: NavMap, route: np.ndarray, radius: float, end_exclude: float) -> np.ndarray:
    """Cells within ``radius`` of ``route`` but farther than ``end_exclude`` from start and goal."""
    G, h = m.G, m.cell
    pts = resample_polyline(route, spacing=h / 2)
    mark = np.zeros((G, G), bool)
    ix = np.clip((pts[:, 0] * G).astype(int), 0, G - 1)
    iy = np.clip((pts[:, 1] * G).astype(int), 0, G - 1)
    mark[iy, ix] = True
    k = int(math.ceil(radius / h))
    pad = np.pad(mark, k)
    near = np.zeros((G, G), bool)
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            if math.hypot(dx, dy) * h <= radius:
                near |= pad[k + dy: k + dy + G, k + dx: k + dx + G]
    c = (np.arange(G) + 0.5) * h
    for p in (m.start, m.goal):
        near &= np.hypot(c[None, :] - p[0], c[:, None] - p[1]) > end_exclude
    return near


def find_routes(m: NavMap, max_routes: int = 2, penalty: float = 6.0, penalty_radius: float = 0.07,
                max_overlap: float = 0.4, overlap_tol: float = 0.05, max_length_ratio: float = 2.0) -> list[np.ndarray]:
    """Up to ``max_routes`` distinct routes (smoothed world polylines ``[K, 2]``) from ``m.start`` to ``m.goal``
    (see the module docstring). Empty if the goal is unreachable for the planner."""
    _, cost = planning_cost(m)
    D = m.geodesic_field
    heur = np.where(np.isfinite(D), D, np.inf) if D is not None else None
    routes: list[np.ndarray] = []
    for _ in range(max(1, int(max_routes))):
        route = plan_path(m, m.start, m.goal, cost=cost, heuristic=heur)
        if route is None:
            break
        if routes:
            if polyline_length(route) > max_length_ratio * polyline_length(routes[0]):
                break
            if any(route_overlap(route, r, tol=overlap_tol) > max_overlap for r in routes):
                break
        routes.append(route)
        cost = np.where(_near_mask(m, route, penalty_radius, end_exclude=0.1), cost * (1.0 + penalty), cost)
    return routes
