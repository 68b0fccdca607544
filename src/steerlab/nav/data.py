"""Training windows over a Nav2D dataset written by :func:`steerlab.data.collect_nav2d.collect_nav2d`.

One window per decision step ``t`` of every episode:

===============  =========================  ======================================================================
batch key        shape                      content
===============  =========================  ======================================================================
``obs_img``      float32 [B, n_obs, 32, 32]  occupancy of steps ``t - n_obs + 1 .. t`` (0/1; the episode's first
                                            frame repeated where the history reaches before it)
``obs_state``    float32 [B, n_obs, 6]      robot state of the same steps (raw)
``goal_rel``     float32 [B, 2]             goal in the robot frame at step ``t`` (raw)
``goal_pos``     float32 [B, 2]             goal in the world frame
``actions``      float32 [B, 8, 2]          the decision's 8 robot-frame waypoint deltas (raw, in [-1, 1])
``distance``     float32 [B]                geodesic distance to the goal at ``t`` (world units)
``action_mask``  bool [B]                   True: the action is a real demonstration (weights the diffusion loss)
``ref_traj``     float32 [B, 32, 2]         the episode's route in the robot frame of step ``t``
===============  =========================  ======================================================================

These are the seed's batch fields (``obs_img``, goal, ``actions``, ``distance``, ``goal_pos``, ``action_mask``,
``ref_traj``) with the goal as a relative position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerlab.data.windows import window_indices
from steerlab.data.zarr_io import DatasetError, EpisodeData, load_episodes, split_episodes  # noqa: F401 (re-export)

NAV_KEYS = ("occupancy", "state", "goal_rel", "goal_pos", "action", "distance", "action_mask", "ref_traj")


def load_nav_dataset(path) -> EpisodeData:
    """Load the keys of :data:`NAV_KEYS` from a Nav2D zarr; a clear error if it is not one."""
    try:
        data = load_episodes(str(path), keys=list(NAV_KEYS))
    except DatasetError as e:
        raise DatasetError(f"{e}\n(a Nav2D dataset needs the keys {list(NAV_KEYS)}: write one with "
                           "`steerlab collect nav2d` or steerlab.data.collect_nav2d.collect_nav2d)") from None
    a = data.data["action"]
    if a.ndim != 2 or a.shape[1] % 2:
        raise DatasetError(f"{path}: action must be [T, 2 * n_waypoints], got {list(a.shape)}")
    return data


@dataclass
class NavWindowDataset:
    """All windows of a Nav2D dataset as tensors; ``batch(idx)`` gathers a batch without a DataLoader."""

    arrays: dict[str, torch.Tensor]
    obs_idx: torch.Tensor
    n_episodes: int
    """the episodes the windows come from"""

    @classmethod
    def from_episodes(cls, data: EpisodeData, n_obs_steps: int) -> "NavWindowDataset":
        missing = [k for k in NAV_KEYS if k not in data.data]
        if missing:
            raise DatasetError(f"the dataset lacks key(s) {missing}; collect it with `steerlab collect nav2d`")
        oi, _, _ = window_indices(data.episode_ends, n_obs_steps, 1)
        arrays = {k: torch.as_tensor(np.asarray(data.data[k])) for k in NAV_KEYS}
        return cls(arrays, torch.as_tensor(oi), data.n_episodes)

    @classmethod
    def from_zarr(cls, path, n_obs_steps: int) -> "NavWindowDataset":
        return cls.from_episodes(load_nav_dataset(path), n_obs_steps)

    def __len__(self) -> int:
        return len(self.obs_idx)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """``idx [B]`` (window = step indices) -> the batch dict of the module docstring."""
        a, oi = self.arrays, self.obs_idx[idx]
        act = a["action"][idx].float()
        return {
            "obs_img": a["occupancy"][oi].float(),
            "obs_state": a["state"][oi].float(),
            "goal_rel": a["goal_rel"][idx].float(),
            "goal_pos": a["goal_pos"][idx].float(),
            "actions": act.view(act.shape[0], -1, 2),
            "distance": a["distance"][idx].float(),
            "action_mask": a["action_mask"][idx].bool(),
            "ref_traj": a["ref_traj"][idx].float(),
        }


# cos / sin of j * 90 degrees, exact
_COS90 = (1.0, 0.0, -1.0, 0.0)
_SIN90 = (0.0, 1.0, 0.0, -1.0)


def first_decision_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B]`` bool: windows of an episode's first decision -- the robot at rest (``vx = vy = 0`` in the last
    frame) and every context frame the same (the history is the tiled first frame)."""
    st, img = batch["obs_state"], batch["obs_img"]
    rest = (st[:, -1, 4:6] == 0).all(-1)
    same = (st == st[:, -1:]).flatten(1).all(-1) & (img == img[:, -1:]).flatten(1).all(-1)
    return rest & same


def rotate_heading(batch: dict[str, torch.Tensor], k: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch as it would have been observed with the robot's heading turned by ``k [B]`` (ints 0..3) times
    90 degrees counter-clockwise, everything else (position, map, goal, route, world waypoints) unchanged.

    Exact for a robot at rest (:func:`first_decision_rows`): the egocentric image's pixel centres are symmetric
    under quarter turns, so the image turns clockwise with ``torch.rot90``; the robot-frame vectors (``goal_rel``,
    ``ref_traj`` and the waypoint deltas ``actions``, whose [-1, 1] box is invariant) turn by ``-k * 90``
    degrees; the heading's ``(cos, sin)`` in ``obs_state`` turns by ``+k * 90``; world-frame entries stay.
    """
    k = torch.as_tensor(k, dtype=torch.long)
    out = dict(batch)
    b = k.shape[0]
    rows = torch.arange(b)
    img = batch["obs_img"]
    out["obs_img"] = torch.stack([torch.rot90(img, -j, dims=(-2, -1)) for j in range(4)])[k, rows]
    c = torch.tensor(_COS90, dtype=batch["obs_state"].dtype)[k]
    s = torch.tensor(_SIN90, dtype=batch["obs_state"].dtype)[k]

    def robot(v: torch.Tensor) -> torch.Tensor:  # rotate robot-frame vectors [B, ..., 2] by -k * 90 degrees
        shape = (b,) + (1,) * (v.dim() - 2)
        cc, ss = c.view(shape).to(v.dtype), s.view(shape).to(v.dtype)
        x, y = v[..., 0], v[..., 1]
        return torch.stack([cc * x + ss * y, -ss * x + cc * y], -1)

    for key in ("goal_rel", "ref_traj"):
        if key in batch:
            out[key] = robot(batch[key])
    if "actions" in batch:
        a = batch["actions"]
        out["actions"] = robot(a.reshape(b, -1, 2)).reshape(a.shape)
    st = batch["obs_state"].clone()
    h_c, h_s = st[..., 2].clone(), st[..., 3].clone()
    st[..., 2] = h_c * c[:, None] - h_s * s[:, None]
    st[..., 3] = h_s * c[:, None] + h_c * s[:, None]
    out["obs_state"] = st
    return out
