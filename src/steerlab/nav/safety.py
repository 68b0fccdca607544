"""Collision-aware choice among sampled chunks, from the robot's own egocentric occupancy image (no map).

NoMaD deploys by drawing 8 chunks and executing one of them unscored. Here the drawn chunks are scored by the
clearance their swept path keeps from the occupied pixels of the current egocentric image, and the first chunk
(in draw order) that keeps ``robot_radius + margin`` is executed; when none does, the one with the most
clearance. Taking the first safe draw is rejection sampling: when the policy's own first draw is safe it is
executed unchanged, so route choice and style follow the policy's distribution restricted to safe chunks.

Geometry: an occupied pixel ``(row, col)`` of the ``S x S`` image stands for the square of side
``px = window / S`` around its centre ``(fwd, left) = ((S/2 - 1/2 - row) px, (S/2 - 1/2 - col) px)`` in the robot
frame (x forward, y left), as :meth:`steerlab.envs.nav2d.Nav2DEnv.egocentric_occupancy` samples it. The
clearance of a point is its exact distance to the nearest such square. The image point-samples the map's
cells, so it misplaces obstacle edges by up to about ``px / sqrt(2)`` (0.011 for the default 0.5 window on 32
pixels); the default ``margin`` covers that. Parts of a chunk outside the image are scored against what the
image shows (nothing beyond its edge).
"""

from __future__ import annotations

import torch

from steerlab.envs.nav2d import MAX_STEP, OCC_WINDOW, ROBOT_RADIUS, densify


def pixel_centres(size: int, window: float = OCC_WINDOW) -> tuple[torch.Tensor, torch.Tensor]:
    """Robot-frame ``(fwd, left)`` of every pixel centre of a ``size x size`` egocentric image, each ``[size * size]``
    in row-major order (row 0 farthest ahead, column 0 farthest left)."""
    px = window / size
    k = (size / 2 - 0.5 - torch.arange(size, dtype=torch.float32)) * px
    fwd, left = torch.meshgrid(k, k, indexing="ij")
    return fwd.reshape(-1), left.reshape(-1)


def egocentric_clearance(occ, points, window: float = OCC_WINDOW, reach: float = 0.1) -> torch.Tensor:
    """Distance from robot-frame ``points [B, M, 2]`` to the nearest occupied pixel square of ``occ [B, S, S]``
    (the image each point set was seen in) -> float ``[B, M]``, capped at ``reach`` (also where nothing is
    occupied). 0 inside an occupied square."""
    occ = torch.as_tensor(occ)
    if occ.dim() != 3 or occ.shape[-1] != occ.shape[-2]:
        raise ValueError(f"occ must be [B, S, S] egocentric images, got shape {tuple(occ.shape)}")
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.dim() != 3 or points.shape[-1] != 2 or points.shape[0] != occ.shape[0]:
        raise ValueError(f"points must be [B, M, 2] with B = {occ.shape[0]} (one image each), got {tuple(points.shape)}")
    S = occ.shape[-1]
    half = window / S / 2
    fwd, left = pixel_centres(S, window)
    mask = occ.reshape(occ.shape[0], -1) > 0.5  # [B, P]
    out = []
    for i in range(0, points.shape[0], 32):  # rows in blocks: the [rows, M, P] distances stay a few MB
        q, m = points[i:i + 32], mask[i:i + 32]
        dx = ((q[..., 0:1] - fwd).abs() - half).clamp(min=0.0)  # [b, M, P]
        dy = ((q[..., 1:2] - left).abs() - half).clamp(min=0.0)
        d = torch.hypot(dx, dy).masked_fill(~m[:, None, :], float("inf"))
        out.append(d.min(-1).values)
    return torch.cat(out).clamp(max=reach)


def chunk_sweep(actions, max_step: float = MAX_STEP, spacing: float = 0.005) -> torch.Tensor:
    """Env actions ``[B, 2n]`` (scaled deltas, clipped to [-1, 1] as the env executes them) -> robot-frame
    points ``[B, M, 2]`` along the polyline from the robot through the n waypoints, every ``spacing`` or closer
    (the path the env's controller drives)."""
    a = torch.as_tensor(actions, dtype=torch.float32).clamp(-1.0, 1.0)
    wp = (a.reshape(a.shape[0], -1, 2) * max_step).cumsum(1)
    pts = torch.cat([torch.zeros_like(wp[:, :1]), wp], 1)  # [B, n + 1, 2]
    sub = max(1, int(torch.ceil(torch.as_tensor(max_step * 2 ** 0.5 / spacing)).item()))
    return densify(pts, sub)


def chunk_clearance(occ, actions, window: float = OCC_WINDOW, max_step: float = MAX_STEP) -> torch.Tensor:
    """Smallest egocentric clearance along each chunk's swept path: ``occ [B, S, S]``, ``actions [B, 2n]`` ->
    ``[B]`` (robot centre to the nearest occupied square; compare with ``robot_radius + margin``)."""
    return egocentric_clearance(occ, chunk_sweep(actions, max_step), window).min(-1).values


def choose_safe(clear, threshold: float) -> torch.Tensor:
    """Index of the chunk to execute per row of ``clear [B, K]`` (K draws in draw order): the first draw with
    ``clear >= threshold``, else the draw with the largest clearance -> long ``[B]``."""
    clear = torch.as_tensor(clear)
    safe = clear >= threshold
    first = torch.where(safe.any(1), safe.float().argmax(1), clear.argmax(1))
    return first


def safe_threshold(robot_radius: float = ROBOT_RADIUS, margin: float = 0.01) -> float:
    """Clearance a chunk must keep from the image's occupied squares to count as safe."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    return float(robot_radius) + float(margin)


def rerank(occ, candidates, k: int, threshold: float, window: float = OCC_WINDOW,
           max_step: float = MAX_STEP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick one of ``k`` candidate chunks per row: ``occ [B, S, S]`` (each row's current image),
    ``candidates [B * k, 2n]`` env actions (row-major: the k draws of row 0 first) -> (the chosen actions
    ``[B, 2n]``, their indices ``[B]``, the candidates' clearances ``[B, k]``)."""
    occ = torch.as_tensor(occ)
    candidates = torch.as_tensor(candidates)
    b = occ.shape[0]
    if candidates.shape[0] != b * k:
        raise ValueError(f"candidates must be [B * k, 2n] = [{b} * {k}, 2n], got {tuple(candidates.shape)}")
    clear = chunk_clearance(occ.repeat_interleave(k, 0), candidates, window, max_step).reshape(b, k)
    pick = choose_safe(clear, threshold)
    return candidates.reshape(b, k, -1)[torch.arange(b), pick], pick, clear
