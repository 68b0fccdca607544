"""Planner oracle for :mod:`steerlab.envs.nav2d`: grid search, route finding, smoothing and a route-following
expert whose demonstrations are multimodal (it picks one of the map's distinct routes at random).

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
* :class:`NavOracle` -- picks a route uniformly at random at :meth:`NavOracle.reset` and follows it at a
  per-episode speed; waypoints never skip a polyline vertex, so the robot traces the (collision-checked)
  polyline exactly. If the robot is off the route by more than ``off_track`` it re-plans to a point
  ``lookahead`` further along the route. ``ref_traj`` is the chosen route resampled to ``n_ref`` points.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from steerlab.envs.nav2d import (
    PLAN_MARGIN,
    NavMap,
    clearance,
    sample_distance_field_np,
    to_robot_frame,
    world_to_action,
)

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


# ============================================================================================ polylines
def polyline_length(poly: np.ndarray) -> float:
    return float(np.hypot(*np.diff(poly, axis=0).T).sum()) if len(poly) > 1 else 0.0


def _dedup(poly: np.ndarray) -> np.ndarray:
    poly = np.asarray(poly, dtype=np.float64)
    if len(poly) < 2:
        return poly
    keep = np.concatenate([[True], np.hypot(*np.diff(poly, axis=0).T) > 1e-12])
    return poly[keep]


def arc_lengths(poly: np.ndarray) -> np.ndarray:
    """Cumulative arc length at each vertex, ``[K]`` (starts at 0)."""
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(poly, axis=0).T))])


def interp_polyline(poly: np.ndarray, cum: np.ndarray, s) -> np.ndarray:
    """Points at arc lengths ``s [...]`` (clipped to the polyline) -> ``[..., 2]``."""
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, cum[-1])
    if len(poly) == 1:
        return np.broadcast_to(poly[0], (*s.shape, 2)).copy()
    return np.stack([np.interp(s, cum, poly[:, 0]), np.interp(s, cum, poly[:, 1])], axis=-1)


def resample_polyline(poly, n: int | None = None, spacing: float | None = None) -> np.ndarray:
    """Resample ``poly [K, 2]`` uniformly in arc length to ``n`` points, or to spacing <= ``spacing``."""
    poly = _dedup(poly)
    cum = arc_lengths(poly)
    if n is None:
        if spacing is None:
            raise ValueError("give n or spacing")
        n = max(2, int(math.ceil(cum[-1] / spacing)) + 1)
    return interp_polyline(poly, cum, np.linspace(0.0, cum[-1], int(n)))


def project_onto_polyline(poly: np.ndarray, cum: np.ndarray, p, s_lo: float = -math.inf,
                          s_hi: float = math.inf) -> tuple[float, float]:
    """Closest point of ``poly`` to ``p`` among arc lengths in ``[s_lo, s_hi]`` (all if none there)
    -> ``(arc length, distance)``."""
    p = np.asarray(p, dtype=np.float64)
    if len(poly) == 1:
        return 0.0, float(np.hypot(*(p - poly[0])))
    a, b = poly[:-1], poly[1:]
    ab = b - a
    l2 = np.maximum((ab ** 2).sum(1), 1e-18)
    t = np.clip(((p - a) * ab).sum(1) / l2, 0.0, 1.0)
    q = a + ab * t[:, None]
    d = np.hypot(*(p - q).T)
    s = cum[:-1] + t * np.sqrt(l2)
    ok = (s >= s_lo) & (s <= s_hi)
    if ok.any():
        d = np.where(ok, d, np.inf)
    i = int(np.argmin(d))
    return float(s[i]), float(d[i])


def to_ref_robot_frame(state, ref_traj):
    """``ref_traj [T, 2]`` (world) in the robot frame of ``state [6]`` -> ``[T, 2]`` (numpy or torch)."""
    return to_robot_frame(state, ref_traj)


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
    return _dedup(smooth_path(m, pts, clear))


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


# ============================================================================================ oracle
class NavOracle:
    """Route-following expert for :class:`steerlab.envs.nav2d.Nav2DEnv`.

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
        self._track = _dedup(track)
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
