"""Nearest-neighbour baseline: the demonstrated action of the closest z-scored observation history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from steerlab.data.normalize import ZScore
from steerlab.data.windows import window_indices
from steerlab.policy import Policy
from steerlab.registry import register_policy


@dataclass(frozen=True)
class NearestConfig:
    kind: Literal["nearest"] = "nearest"
    n_obs_steps: int = 2
    """observation history length used as the key"""


@register_policy("nearest", NearestConfig)
class NearestPolicy(Policy):
    trainable = False

    def __init__(self, cfg: NearestConfig, obs_dim: int, act_dim: int):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.n_obs_steps = cfg.n_obs_steps
        self.obs_norm = ZScore(obs_dim)
        self.register_buffer("keys", torch.zeros(0, obs_dim * cfg.n_obs_steps))
        self.register_buffer("values", torch.zeros(0, act_dim))

    def fit_normalizers(self, data, *, action_low=None, action_high=None, episode_ends=None, seed: int = 0):
        """The table: every training step's observation history (normalized) and its action."""
        obs = data["obs"]
        self.obs_norm = ZScore.fit(obs)
        ends = np.asarray(episode_ends if episode_ends is not None else [len(obs)])
        oi, _, _ = window_indices(ends, self.n_obs_steps, 1)
        o = torch.as_tensor(np.asarray(obs)[oi], dtype=torch.float32)
        self.keys = self.obs_norm.normalize(o).flatten(1)
        self.values = torch.as_tensor(np.asarray(data["action"]), dtype=torch.float32)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("keys", "values"):  # the table's size is the dataset's, known only from the checkpoint
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def compute_loss(self, batch, generator=None, step: int = 0):
        raise RuntimeError("the nearest-neighbour policy has nothing to train")

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None):
        self.check_obs(obs, self.obs_dim)
        q = self.obs_norm.normalize(obs).flatten(1)
        idx = torch.cdist(q, self.keys).argmin(1)
        return self.values[idx][:, None]
