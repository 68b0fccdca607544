"""The scene record shared by the map generators, the planner and the env."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from steerlab.envs.nav2d.constants import ROBOT_RADIUS


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
