"""Explicit behavioural cloning with an MSE loss (IBC's ``mlp_mse`` baseline).

Observations and actions are z-scored (IBC's MSE baseline normalizes actions by z-score, not min-max);
the predicted action is un-normalized and clipped to the environment's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from steerlab.data.normalize import ZScore
from steerlab.nets.mlp import MLPResNet
from steerlab.policy import Policy
from steerlab.registry import register_policy


@dataclass(frozen=True)
class MSEConfig:
    kind: Literal["mse"] = "mse"
    width: int = 256
    """hidden width"""
    depth: int = 2
    """dense layers in the residual stack (even)"""
    dropout: float = 0.1
    """dropout inside the residual blocks (IBC's mlp_mse: 0.1)"""
    n_obs_steps: int = 2
    """observation history length"""
    stats_samples: int | None = None
    """windows used for the normalizer statistics; None: all"""
    obs_std_eps: float = 1e-4
    """observation dimensions whose demonstrated standard deviation is below this are shifted, not scaled (a
    dimension constant in the demos that jitters by ~1e-6 in the simulator would otherwise be divided by float32
    epsilon); 0: IBC's epsilon floor alone"""


@register_policy("mse", MSEConfig)
class MSEPolicy(Policy):
    def __init__(self, cfg: MSEConfig, obs_dim: int, act_dim: int):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.n_obs_steps = cfg.n_obs_steps
        self.net = MLPResNet(obs_dim * cfg.n_obs_steps, act_dim, cfg.width, cfg.depth, cfg.dropout)
        self.obs_norm = ZScore(obs_dim)
        self.act_norm = ZScore(act_dim)
        self.register_buffer("env_low", torch.zeros(act_dim))
        self.register_buffer("env_high", torch.ones(act_dim))

    def fit_normalizers(self, data, *, action_low=None, action_high=None, episode_ends=None, seed: int = 0):
        self.obs_norm = ZScore.fit(data["obs"], self.cfg.stats_samples, seed, std_eps=self.cfg.obs_std_eps)
        self.act_norm = ZScore.fit(data["action"], self.cfg.stats_samples, seed)
        self.set_action_bounds(action_low, action_high)

    def _predict_normalized(self, obs: torch.Tensor) -> torch.Tensor:
        self.check_obs(obs, self.obs_dim)
        return self.net(self.obs_norm.normalize(obs).flatten(1))

    def compute_loss(self, batch, generator=None, step: int = 0):
        target = self.act_norm.normalize(batch["action"][:, 0])
        loss = ((self._predict_normalized(batch["obs"]) - target) ** 2).mean()
        return loss, {"loss": loss.item(), "action_mse": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None):
        a = self.act_norm.unnormalize(self._predict_normalized(obs))
        return torch.maximum(torch.minimum(a, self.env_high), self.env_low)[:, None]
