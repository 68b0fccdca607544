"""Objectives: callables ``loss(sample [B, H, A]) -> [B]`` on a sampled action chunk (raw units).

Direction (minimize to steer, maximize to search for failures) and priors on the noise belong to the
optimizer, not to the objective. Any user function with this signature works too.
"""

from __future__ import annotations

import torch

def _rows(v, b: int, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.expand(b, *v.shape[-1:]) if v.dim() == 1 else v


class EndDistance:
    """Euclidean distance of the chunk's action at ``index`` (default: the last) to ``target`` ``[A]`` or ``[B, A]``."""

    def __init__(self, target, index: int = -1):
        self.target, self.index = torch.as_tensor(target, dtype=torch.float32), index

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        return (chunk[:, self.index] - _rows(self.target, len(chunk), chunk)).norm(dim=-1)


class ObstacleCost:
    """Soft penetration of a ball obstacle summed over the chunk:
    ``sum_h softplus(k (radius - |a_h - center|)) / k`` — differentiable, ~0 outside, ~depth inside."""

    def __init__(self, center, radius: float, sharpness: float = 50.0):
        self.center, self.radius, self.k = torch.as_tensor(center, dtype=torch.float32), radius, sharpness

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        c = _rows(self.center, len(chunk), chunk)[:, None]
        d = (chunk - c).norm(dim=-1)
        return torch.nn.functional.softplus(self.k * (self.radius - d)).sum(1) / self.k


class PathObstacleCost:
    """Soft penetration of a ball by the particle's *path* under a chunk of set-points, summed over every physics
    sub-step: the particle env's PD controller (``ParticleEnv.step``: ``u = k_p (a - x) - k_v v``, then
    ``x += v dt``, ``v += u dt``, ``repeat`` sub-steps per action) integrated from the current state
    ``pos [B, N]``, ``vel [B, N]`` through the first ``steps`` actions of the chunk (default: all).

    A particle policy's actions are set-points, not positions on the path (the oracle's are the goal itself), so a
    cost on the actions (:class:`ObstacleCost`) does not see an obstacle that the path crosses; this one does."""

    def __init__(self, center, radius: float, pos, vel, steps: int | None = None, k_p: float = 10.0,
                 k_v: float = 5.0, dt: float = 0.005, repeat: int = 10, sharpness: float = 50.0):
        self.center, self.radius, self.k = torch.as_tensor(center, dtype=torch.float32), radius, sharpness
        self.pos, self.vel = torch.as_tensor(pos, dtype=torch.float32), torch.as_tensor(vel, dtype=torch.float32)
        self.steps, self.k_p, self.k_v, self.dt, self.repeat = steps, k_p, k_v, dt, repeat

    def path(self, chunk: torch.Tensor) -> torch.Tensor:
        """Positions after every sub-step, ``[B, steps * repeat, N]``."""
        x = _rows(self.pos, len(chunk), chunk)
        v = _rows(self.vel, len(chunk), chunk)
        out = []
        for h in range(chunk.shape[1] if self.steps is None else min(self.steps, chunk.shape[1])):
            a = chunk[:, h]
            for _ in range(self.repeat):
                u = self.k_p * (a - x) - self.k_v * v
                x, v = x + v * self.dt, v + u * self.dt
                out.append(x)
        return torch.stack(out, 1)

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        c = _rows(self.center, len(chunk), chunk)[:, None]
        d = (self.path(chunk) - c).norm(dim=-1)
        return torch.nn.functional.softplus(self.k * (self.radius - d)).sum(1) / self.k


class ReferenceDeviation:
    """Mean squared deviation of the chunk from a reference trajectory ``[H, A]`` or ``[B, H, A]``."""

    def __init__(self, reference):
        self.reference = torch.as_tensor(reference, dtype=torch.float32)

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        ref = self.reference.to(chunk.device, chunk.dtype)
        ref = ref.expand(len(chunk), *ref.shape[-2:]) if ref.dim() == 2 else ref
        if ref.shape != chunk.shape:
            raise ValueError(f"reference {list(ref.shape)} does not match the chunk {list(chunk.shape)}")
        return ((chunk - ref) ** 2).flatten(1).mean(1)
