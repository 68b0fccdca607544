"""Polylines ``[K, 2]`` (world units): length, arc lengths, interpolation, uniform resampling and projection."""

from __future__ import annotations

import math

import numpy as np


def polyline_length(poly: np.ndarray) -> float:
    return float(np.hypot(*np.diff(poly, axis=0).T).sum()) if len(poly) > 1 else 0.0


def dedup_polyline(poly: np.ndarray) -> np.ndarray:
    """``poly`` as float64 without vertices that repeat the previous one."""
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
    poly = dedup_polyline(poly)
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
