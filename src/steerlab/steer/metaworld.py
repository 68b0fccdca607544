"""Steering a generative policy on MetaWorld: objectives on the end-effector path a chunk would drive, and a policy
whose every chunk is chosen by a search over its noise (or by guidance).

MetaWorld moves a mocap target by ``ACTION_SCALE * action[:3]`` metres per env step (clipped to its workspace box,
which :func:`mocap_path` does not model) and
the hand follows it a few steps behind (3 cm after 0.23 m at half speed), so :func:`mocap_path` -- the hand's
position plus the cumulative displacement of the chunk's executed actions -- is a differentiable prediction of
where the chunk drives the hand.
The objectives below are functions of that path (``loss(chunk [B, H, 4]) -> [B]``, raw action units, as every
objective in :mod:`steerlab.steer.objectives`); what is measured is always the simulator's real hand. Energy
guidance by such a cost: :func:`steerlab.steer.guidance.guided_denoiser`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from steerlab.policy import Policy

ACTION_SCALE = 0.01
"""metres the mocap target moves per env step per unit of ``action[:3]`` (MetaWorld's ``action_scale``)"""


def _rows3(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must be [B, 3] (one point per row of the chunk batch), got {list(x.shape)}")
    return x


def mocap_path(hand: torch.Tensor, chunk: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """``[B, steps, 3]``: where the first ``steps`` actions of ``chunk [B, H, 4]`` move the mocap target from the
    hand's position ``hand [B, 3]`` (one point after each action)."""
    hand = _rows3(hand, "hand")
    if chunk.dim() != 3 or chunk.shape[0] != hand.shape[0] or chunk.shape[2] < 3:
        raise ValueError(f"chunk must be [B={hand.shape[0]}, H, 4], got {list(chunk.shape)}")
    a = chunk[:, :steps, :3] if steps is not None else chunk[..., :3]
    return hand[:, None].to(chunk) + ACTION_SCALE * torch.cumsum(a, dim=1)


class BoxPenetration:
    """Soft penetration of an axis-aligned box (``center [B, 3]``, half sizes ``half [3]`` or ``[B, 3]``) by the
    predicted path (:func:`mocap_path` from ``hand [B, 3]``), summed over its points: the depth inside the box is the
    smallest of ``half - |p - center|`` over the axes (negative outside), smoothed by ``softplus(k depth) / k``."""

    def __init__(self, center, half, hand, steps: int | None = None, sharpness: float = 400.0):
        self.center, self.hand = _rows3(center, "center"), _rows3(hand, "hand")
        self.half = torch.as_tensor(half, dtype=torch.float32)
        self.steps, self.k = steps, float(sharpness)

    def depth(self, points: torch.Tensor) -> torch.Tensor:
        """Signed depth of ``points [B, P, 3]`` in the box (positive inside), ``[B, P]``."""
        half = self.half.to(points).expand(points.shape[0], 3)[:, None]
        return (half - (points - self.center.to(points)[:, None]).abs()).min(dim=-1).values

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        d = self.depth(mocap_path(self.hand, chunk, self.steps))
        return F.softplus(self.k * d).sum(1) / self.k


class BallPenetration:
    """Soft penetration of a ball (``center [B, 3]``, ``radius``) by the predicted path from ``hand [B, 3]``, summed
    over its points: ``softplus(k (radius - |p - center|)) / k``. Its gradient points away from the centre, so a
    path that passes off-centre is pushed sideways around the obstacle (a box's nearest-face depth pushes it back
    along the way it came); with the box's circumscribed radius it covers the box."""

    def __init__(self, center, radius: float, hand, steps: int | None = None, sharpness: float = 400.0):
        self.center, self.hand = _rows3(center, "center"), _rows3(hand, "hand")
        self.radius, self.steps, self.k = float(radius), steps, float(sharpness)

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        d = (mocap_path(self.hand, chunk, self.steps) - self.center.to(chunk)[:, None]).norm(dim=-1)
        return F.softplus(self.k * (self.radius - d)).sum(1) / self.k


class PointDistance:
    """Distance from ``target [B, 3]`` of the predicted path's closest point (:func:`mocap_path` from ``hand``):
    minimized, it draws the hand through the target (a via-point); maximized with the object as the target, it
    keeps the hand away from what it must reach."""

    def __init__(self, target, hand, steps: int | None = None):
        self.target, self.hand = _rows3(target, "target"), _rows3(hand, "hand")
        self.steps = steps

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        d = (mocap_path(self.hand, chunk, self.steps) - self.target.to(chunk)[:, None]).norm(dim=-1)
        return d.min(dim=1).values


class ChunkChoicePolicy(Policy):
    """``base``'s observation handling and action queue, each chunk chosen by ``choose(obs_hist [B, n_obs, Do]) ->
    raw chunk [B, H, A]`` (a search over the base's noise, guidance, or the base itself). ``choose`` runs with
    gradients enabled, so it may optimize; rows are the envs of one batched evaluation in a fixed order.
    ``observe(obs [B, Do])``, if given, sees every step's observations (not only those at a decision), e.g. to
    notice that the hand passed a via-point between decisions."""

    def __init__(self, base, choose: Callable[[torch.Tensor], torch.Tensor],
                 observe: Callable[[torch.Tensor], None] | None = None):
        super().__init__()
        self.base, self.choose, self.observe = base, choose, observe
        self.n_obs_steps, self.n_action_steps = base.n_obs_steps, base.n_action_steps

    def select_action(self, obs, generator=None):
        if self.observe is not None:
            self.observe(torch.as_tensor(obs, dtype=torch.float32))
        return super().select_action(obs, generator)

    def predict_action_chunk(self, obs, generator=None):
        with torch.enable_grad():
            chunk = self.choose(torch.as_tensor(obs, dtype=torch.float32))
        return chunk.detach()
