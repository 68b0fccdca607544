"""Success statistics."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (``z`` = the normal 97.5% quantile)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def success_summary(episodes: list[dict], seconds: float) -> dict:
    """What every task reports of evaluated episodes (each with ``success``, ``length`` and ``seed``): the count,
    successes, success rate with its 95% Wilson interval, mean length, throughput, seconds and seeds."""
    n = len(episodes)
    k = int(sum(bool(e["success"]) for e in episodes))
    lo, hi = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "success_ci95": [lo, hi],
        "mean_length": float(sum(e["length"] for e in episodes) / n),
        "episodes_per_s": n / max(seconds, 1e-9),
        "seconds": seconds,
        "seeds": [e["seed"] for e in episodes],
    }
