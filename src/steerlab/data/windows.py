"""Training windows over episodes held in memory: observation history and action chunks.

For a step ``t`` of an episode the window holds observations ``t - n_obs + 1 .. t`` (the first frame of
the episode repeated where the history reaches before it, as IBC's history wrapper tiles the first
observation) and actions ``t .. t + horizon - 1`` (the last action repeated past the episode end, with
``action_mask`` False there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def window_indices(episode_ends: np.ndarray, n_obs: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays for every step of every episode.

    Returns:
        ``obs_idx [T, n_obs]``, ``act_idx [T, horizon]``, ``act_mask [T, horizon]`` (bool) where ``T`` is
        the total number of steps.
    """
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    t = np.arange(ends[-1] if len(ends) else 0)
    ep = np.searchsorted(ends, t, side="right")
    s, e = starts[ep], ends[ep]
    obs_raw = t[:, None] + np.arange(-n_obs + 1, 1)[None, :]
    obs_idx = np.maximum(obs_raw, s[:, None])
    act_raw = t[:, None] + np.arange(horizon)[None, :]
    act_mask = act_raw < e[:, None]
    act_idx = np.minimum(act_raw, e[:, None] - 1)
    return obs_idx, act_idx, act_mask


@dataclass
class WindowDataset:
    """All windows of a dataset as tensors; ``batch(idx)`` gathers a batch without a DataLoader.

    Attributes:
        obs: ``[T, Do]`` flattened observations.
        action: ``[T, A]`` actions.
        obs_idx, act_idx, act_mask: from :func:`window_indices`.
        n_episodes: the episodes the windows come from.
    """

    obs: torch.Tensor
    action: torch.Tensor
    obs_idx: torch.Tensor
    act_idx: torch.Tensor
    act_mask: torch.Tensor
    n_episodes: int

    @classmethod
    def from_arrays(cls, obs: np.ndarray, action: np.ndarray, episode_ends: np.ndarray, n_obs: int, horizon: int):
        if len(obs) != len(action):
            raise ValueError(f"obs has {len(obs)} steps but action has {len(action)}")
        oi, ai, am = window_indices(episode_ends, n_obs, horizon)
        return cls(
            torch.as_tensor(np.asarray(obs), dtype=torch.float32),
            torch.as_tensor(np.asarray(action), dtype=torch.float32),
            torch.as_tensor(oi),
            torch.as_tensor(ai),
            torch.as_tensor(am),
            len(episode_ends),
        )

    def __len__(self) -> int:
        return len(self.obs_idx)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """``idx [B]`` -> ``{"obs": [B, n_obs, Do], "action": [B, H, A], "action_mask": [B, H]}``."""
        return {
            "obs": self.obs[self.obs_idx[idx]],
            "action": self.action[self.act_idx[idx]],
            "action_mask": self.act_mask[idx],
        }
