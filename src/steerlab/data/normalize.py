"""Normalizers that live inside a policy (as buffers), so they are saved with its checkpoint.

- :class:`ZScore`: ``(x - mean) / std`` with ``std`` floored at float32 epsilon (IBC ``train/stats.py``); with
  ``std_eps > 0`` a dimension whose standard deviation is below it is shifted, not scaled (the same hazard as below).
- :class:`MinMax`: ``(x - mid) / max(half_range, eps)`` with ``mid = (lo + hi) / 2`` and ``half_range =
  (hi - lo) / 2`` maps the data range to ``[-1, 1]`` (IBC's ``MinMaxNormalizationLayer``, the EBM actions); a
  constant dimension maps to 0. With ``range_eps > 0`` a dimension whose range is below it is shifted, not scaled
  (``x - mid``), as diffusion_policy's ``SingleFieldLinearNormalizer`` does (``range_eps=1e-4``): a dimension
  that is constant in the demonstrations but jitters by 1e-6 in simulation (a MuJoCo quaternion) stays near 0
  instead of being divided by float32 epsilon.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

F32_EPS = float(np.finfo(np.float32).eps)


def _subsample(x: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    if max_samples is not None and len(x) > max_samples:
        idx = np.random.default_rng(seed).choice(len(x), size=max_samples, replace=False)
        x = x[np.sort(idx)]
    return x


class ZScore(nn.Module):
    """``y = (x - mean) / max(std, eps)`` over the last axis.

    ``std_eps`` (applied at fit): dimensions whose standard deviation is below it get ``std = 1``, so a dimension
    constant in the data (a MuJoCo quaternion that jitters by 1e-6 after each reset) is shifted to 0, not divided by
    float32 epsilon into tens of units; 0 keeps IBC's epsilon floor alone."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, x: np.ndarray, max_samples: int | None = None, seed: int = 0, eps: float = F32_EPS,
            std_eps: float = 0.0) -> "ZScore":
        if std_eps < 0:
            raise ValueError(f"std_eps must be >= 0, got {std_eps}")
        x = _subsample(x, max_samples, seed)
        n = cls(x.shape[-1])
        std = x.std(0)
        n.mean.copy_(torch.as_tensor(x.mean(0)))
        n.std.copy_(torch.as_tensor(np.where(std < std_eps, 1.0, np.maximum(std, eps))))
        return n

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


class MinMax(nn.Module):
    """``y = (x - mid) / half`` over the last axis, ``mid = (lo + hi) / 2``, ``half = max((hi - lo) / 2, eps)``.

    IBC's ``train/stats.py`` (``MinMaxLayer``): float32 ``mid`` and ``half_range``, the half range floored at float32
    epsilon, so a constant dimension (``lo == hi``) maps to 0 and back to ``lo``. The inverse is ``y * half + mid``.
    ``range_eps`` (a setting, not a buffer): dimensions with ``hi - lo < range_eps`` get ``half = 1`` (diffusion_policy's
    rule for near-constant dimensions); 0 keeps IBC's.
    """

    def __init__(self, dim: int, range_eps: float = 0.0):
        super().__init__()
        if range_eps < 0:
            raise ValueError(f"range_eps must be >= 0, got {range_eps}")
        self.range_eps = float(range_eps)
        self.register_buffer("lo", -torch.ones(dim))
        self.register_buffer("hi", torch.ones(dim))

    @classmethod
    def fit(cls, x: np.ndarray, max_samples: int | None = None, seed: int = 0, range_eps: float = 0.0) -> "MinMax":
        x = _subsample(x, max_samples, seed)
        return cls.from_range(x.min(0), x.max(0), range_eps=range_eps)

    @classmethod
    def from_range(cls, lo, hi, range_eps: float = 0.0) -> "MinMax":
        lo = torch.as_tensor(np.asarray(lo, dtype=np.float64), dtype=torch.float32)
        hi = torch.as_tensor(np.asarray(hi, dtype=np.float64), dtype=torch.float32)
        n = cls(lo.shape[-1], range_eps)
        n.lo.copy_(lo)
        n.hi.copy_(hi)
        return n

    @property
    def mid(self) -> torch.Tensor:
        return (self.lo + self.hi) / 2.0

    @property
    def half_range(self) -> torch.Tensor:
        half = torch.clamp(0.5 * (self.hi - self.lo), min=F32_EPS)
        if self.range_eps > 0:
            half = torch.where(self.hi - self.lo < self.range_eps, torch.ones_like(half), half)
        return half

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mid) / self.half_range

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.half_range + self.mid


def sampling_bounds(
    action_min: np.ndarray, action_max: np.ndarray, env_low: np.ndarray, env_high: np.ndarray, margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """IBC's counter-example / inference bounds: data range widened by ``margin`` of the range on each
    side, clipped to the environment's action bounds (raw action units)."""
    action_min, action_max = np.asarray(action_min, np.float64), np.asarray(action_max, np.float64)
    r = action_max - action_min
    lo = np.maximum(action_min - margin * r, env_low)
    hi = np.minimum(action_max + margin * r, env_high)
    return lo, hi
