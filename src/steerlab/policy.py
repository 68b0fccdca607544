"""The policy interface every steerlab policy implements (LeRobot's convention).

- ``fit_normalizers(data, *, action_low, action_high, episode_ends, seed)`` once before training, on the training
  split of the dataset only (held-out episodes never reach it): ``data`` maps the dataset's keys to per-step
  arrays ``[T, ...]`` (``obs`` / ``action`` for flat tasks; the nav policy reads ``state``, ``goal_rel``,
  ``action`` and ``ref_traj``), ``action_low`` / ``action_high`` are the task's action bounds
  (:meth:`steerlab.tasks.base.Task.dims`), ``episode_ends`` the cumulative episode ends of ``data`` and ``seed``
  the seed of any subsampling;
- ``compute_loss(batch, generator, step) -> (loss, metrics)`` on a training batch
  ``{"obs": [B, n_obs, Do], "action": [B, H, A], "action_mask": [B, H]}`` in raw units; the training loop adds
  ``"index"`` ``[B]`` (int64), each element's row (window) in the training dataset -- the windows are one per step
  of the data ``fit_normalizers`` received, in order, so its ``episode_ends`` also give each row's episode --, for
  losses that keep per-row state between steps (``training_state()`` / ``load_training_state(state)``, saved in
  checkpoints; none by default);
- ``predict_action_chunk(obs [B, n_obs, Do], generator=None, *, ...) -> [B, H, A]`` raw actions. Steering inputs
  are keyword-only and never change the positional signature: generative policies take ``z`` (the initial
  noise) and ``noise`` (the per-step source); the nav policy ``z0``, ``z1``, ``z2``, ``noise``, ``lambda_cfg`` and
  ``level``; the energy-critic policy ``z``, ``noise`` and ``test_time``;
- ``select_action(obs) -> [A] or [B, A]`` takes the observation as the task's gymnasium env returns it -- an array
  ``[Do]`` / ``[B, Do]`` or a dict of arrays, flattened in sorted key order (the order of gymnasium's ``Dict``
  space and of IBC's particle observations) -- keeps the observation history and the queue of not-yet-executed
  actions (receding horizon), and ``reset()`` clears them.

A policy owns its normalizers as buffers, so a checkpoint of its ``state_dict`` is self-contained:
:meth:`Policy.save` writes it with the policy's kind, config and dims, and :func:`steerlab.load_policy` reads it back.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from steerlab.version import __version__
from steerlab.registry import PolicySpec
from steerlab.train.checkpoint import cpu_tensors, file_record
from steerlab.train.rundir import atomic_write_bytes, atomic_write_json

#: ``format`` of the ``config.json`` that :meth:`Policy.save` writes
SAVED_POLICY_FORMAT = "steerlab-policy"
SAVED_POLICY_VERSION = 1


class Policy(nn.Module):
    #: how many observation frames the policy reads
    n_obs_steps: int = 1
    #: how many actions of a predicted chunk are executed before predicting again
    n_action_steps: int = 1
    #: False for policies with nothing to optimize (nearest neighbour)
    trainable: bool = True
    #: what the policy was built from; set by :func:`steerlab.registry.build_policy`, written by :meth:`save`
    spec: PolicySpec | None = None

    def __init__(self):
        super().__init__()
        self._obs_hist: deque | None = None
        self._act_queue: deque = deque()

    def fit_normalizers(self, data: Mapping[str, np.ndarray], *, action_low: np.ndarray | None = None,
                        action_high: np.ndarray | None = None, episode_ends: np.ndarray | None = None,
                        seed: int = 0) -> None:
        """Fit the normalizers (and anything else taken from the data) on the training split: ``data`` maps keys
        to per-step arrays, ``action_low`` / ``action_high`` are the task's action bounds, ``episode_ends`` the
        cumulative ends of ``data``'s episodes (None: one episode) and ``seed`` seeds any subsampling."""
        raise NotImplementedError

    def set_action_bounds(self, action_low, action_high) -> None:
        """Copy the task's action bounds into the ``env_low`` / ``env_high`` buffers (predictions are clipped to
        them); an error naming what to pass if they are missing."""
        if action_low is None or action_high is None:
            raise ValueError(f"{type(self).__name__}.fit_normalizers needs action_low and action_high (the task's "
                             "action bounds, steerlab.tasks.get_task(name).dims(n_dim))")
        self.env_low.copy_(torch.as_tensor(np.asarray(action_low), dtype=torch.float32))
        self.env_high.copy_(torch.as_tensor(np.asarray(action_high), dtype=torch.float32))

    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None, step: int = 0):
        """``(loss, metrics)`` on one batch; ``step`` is the number of optimizer steps taken before this one (for
        losses with a schedule, e.g. IBC's uniform warm-up)."""
        raise NotImplementedError

    def training_state(self) -> dict:
        """What the loss carries from one training step to the next besides the weights (e.g. IBC's persistent
        chains), as tensors; the training loop writes it into every checkpoint's ``trainer.pt`` and restores it on
        resume with :meth:`load_training_state`. None by default."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore what :meth:`training_state` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no training state, but got {sorted(state)}")

    def predict_action_chunk(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        self._obs_hist = None
        self._act_queue = deque()

    @torch.no_grad()
    def select_action(self, obs, generator: torch.Generator | None = None) -> torch.Tensor:
        obs = flat_observation(obs)
        single = obs.dim() == 1
        if single:
            obs = obs[None]
        if self._obs_hist is None:  # first frame of the episode tiles the history
            self._obs_hist = deque([obs] * self.n_obs_steps, maxlen=self.n_obs_steps)
        else:
            self._obs_hist.append(obs)
        if not self._act_queue:
            chunk = self.predict_action_chunk(torch.stack(list(self._obs_hist), 1), generator=generator)
            self._act_queue.extend(chunk[:, : self.n_action_steps].unbind(1))
        a = self._act_queue.popleft()
        return a[0] if single else a

    def save(self, path: str | Path) -> Path:
        """Write the policy into directory ``path`` (created if needed): ``model.safetensors`` (the whole
        ``state_dict``, normalizers included) and ``config.json`` (kind, config, dims and the weights' SHA-256),
        each written atomically. :func:`steerlab.load_policy` reads it back. Returns the directory."""
        spec = self.spec or self._spec_from_attributes()
        d = Path(path)
        if (d / "checkpoints").is_dir():
            raise ValueError(f"{d} is a run directory of `steerlab train`; save the policy into another directory")
        d.mkdir(parents=True, exist_ok=True)
        weights = d / "model.safetensors"
        atomic_write_bytes(weights, safetensors_bytes(cpu_tensors(self.state_dict())))
        atomic_write_json(d / "config.json", {
            "format": SAVED_POLICY_FORMAT, "format_version": SAVED_POLICY_VERSION, "steerlab_version": __version__,
            "kind": spec.kind, "policy": dataclasses.asdict(spec.config), "obs_dim": spec.obs_dim,
            "act_dim": spec.act_dim, "n_obs_steps": self.n_obs_steps, "n_action_steps": self.n_action_steps,
            "files": {weights.name: file_record(weights)},
        })
        return d

    def _spec_from_attributes(self) -> PolicySpec:
        """The spec of a policy constructed directly rather than by ``build_policy``: its ``cfg`` and dims."""
        cfg = getattr(self, "cfg", None)
        if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, "kind"):
            raise ValueError(f"this {type(self).__name__} does not know its config; build it with "
                             f"steerlab.registry.build_policy(config, obs_dim, act_dim) to save it")
        return PolicySpec(cfg.kind, cfg, getattr(self, "obs_dim", None), getattr(self, "act_dim", None))

    def check_obs(self, obs: torch.Tensor, obs_dim: int) -> None:
        if obs.dim() != 3 or obs.shape[1] != self.n_obs_steps or obs.shape[2] != obs_dim:
            raise ValueError(
                f"{type(self).__name__} expects observations [B, n_obs_steps={self.n_obs_steps}, obs_dim={obs_dim}], "
                f"got {list(obs.shape)}"
            )


def flat_observation(obs) -> torch.Tensor:
    """An env observation as a float32 tensor ``[Do]`` or ``[B, Do]``: arrays pass through; a dict of arrays (one
    observation, ``[n]`` per key, or a batch, ``[B, n]`` per key) is concatenated in sorted key order."""
    if isinstance(obs, Mapping):
        if not obs:
            raise ValueError("the observation dict is empty")
        parts = [torch.as_tensor(np.asarray(obs[k], dtype=np.float32)) for k in sorted(obs)]
        lead = {p.shape[:-1] if p.dim() else () for p in parts}
        if len(lead) != 1:
            raise ValueError(f"observation dict entries disagree in their leading shape: "
                             f"{ {k: list(np.shape(obs[k])) for k in sorted(obs)} }")
        return torch.cat([p.reshape(*p.shape[:-1], -1) if p.dim() else p.reshape(1) for p in parts], -1)
    return torch.as_tensor(obs, dtype=torch.float32)
