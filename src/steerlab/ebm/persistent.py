"""Persistent Langevin chains for IBC's training counter-examples: a store of each dataset row's last chain states.

Rows are the training windows of the dataset (``batch["index"]``, which the training loop adds). The store grows
to the largest row index written, so it needs no dataset size up front; a row that was never written reads as
unfilled. It is training state, not model state: it is kept out of the policy's ``state_dict`` (so out of saved
policies and of the EMA copy) and goes into ``trainer.pt`` through :meth:`ChainMemory.state_dict`.

The store also knows which episode each row belongs to (:meth:`ChainMemory.set_episodes`, from the cumulative episode
ends of the training data: the training windows are one per step, in order), so that a row with no stored chains can
start from those of its nearest stored row in the same episode (:meth:`ChainMemory.nearest_stored`). The episode
ends come from the data at every set-up, so they are not part of the saved state.
"""

from __future__ import annotations

import torch


class ChainMemory:
    """Chain end states ``[rows, chains, A]`` (normalized actions) and a ``[rows]`` mask of the rows written."""

    def __init__(self):
        self.states: torch.Tensor | None = None
        self.filled: torch.Tensor | None = None
        self.episode_ends: torch.Tensor | None = None  # cumulative ends of the rows' episodes (int64, CPU)
        self._ends_on: torch.Tensor | None = None  # episode_ends on the device of the last lookup

    def set_episodes(self, episode_ends) -> None:
        """Rows ``episode_ends[e-1] .. episode_ends[e] - 1`` form episode ``e`` (the first from row 0): the
        cumulative, strictly increasing ends of the training data's episodes."""
        ends = torch.as_tensor(episode_ends, dtype=torch.int64).flatten().cpu()
        if ends.numel() == 0 or ends[0] < 1 or (ends[1:] <= ends[:-1]).any():
            raise ValueError(f"episode_ends must be cumulative, strictly increasing and positive; got "
                             f"{ends[:8].tolist()}{' ...' if ends.numel() > 8 else ''}")
        self.episode_ends, self._ends_on = ends, None

    def __len__(self) -> int:
        return 0 if self.filled is None else int(self.filled.shape[0])

    def read(self, index: torch.Tensor, chains: int, act_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states [B, chains, A], filled [B])`` of rows ``index [B]``; unfilled rows hold zeros."""
        states = torch.zeros(index.shape[0], chains, act_dim, device=index.device)
        filled = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
        if self.states is None:
            return states, filled
        self._check_shape(chains, act_dim)
        known = index < len(self)
        rows = index[known].to(self.filled.device)
        filled[known] = self.filled[rows].to(filled.device)
        states[known] = self.states[rows].to(states.device)
        return states, filled

    def write(self, index: torch.Tensor, states: torch.Tensor) -> None:
        """Store ``states [B, chains, A]`` as the last states of rows ``index [B]``. A row that appears more than
        once in ``index`` keeps its last occurrence's states."""
        if index.numel() == 0:
            return
        chains, act_dim = states.shape[1:]
        need = int(index.max()) + 1
        if self.states is None:
            self.states = states.new_zeros(0, chains, act_dim)
            self.filled = torch.zeros(0, dtype=torch.bool, device=states.device)
        self._check_shape(chains, act_dim)
        if need > len(self):
            grow = need - len(self)
            self.states = torch.cat([self.states, self.states.new_zeros(grow, chains, act_dim)])
            self.filled = torch.cat([self.filled, self.filled.new_zeros(grow)])
        order = torch.argsort(index, stable=True)  # equal rows adjacent, in batch order
        ordered = index[order]
        last = torch.ones_like(ordered, dtype=torch.bool)
        last[:-1] = ordered[1:] != ordered[:-1]
        keep = order[last]
        rows = index[keep].to(self.states.device)
        self.states[rows] = states[keep].detach().to(self.states.device, self.states.dtype)
        self.filled[rows] = True

    def nearest_stored(self, index: torch.Tensor, radius: int) -> torch.Tensor:
        """For each row of ``index [B]`` the nearest stored row of the same episode at most ``radius`` rows away
        (the row itself excluded; at equal distance the earlier row), or -1 where there is none: ``[B]`` int64.
        Rows are searched offset by offset (1, ..., radius), each over the whole batch."""
        if self.episode_ends is None:
            raise ValueError("the chain memory knows no episode boundaries: set_episodes(episode_ends) first "
                             "(IBCPolicy.fit_normalizers does)")
        if self._ends_on is None or self._ends_on.device != index.device:
            self._ends_on = self.episode_ends.to(index.device)
        ends = self._ends_on
        if index.numel() and int(index.max()) >= int(ends[-1]):
            raise ValueError(f"row {int(index.max())} lies beyond the {int(ends[-1])} rows of the episodes the chain "
                             "memory was given (set_episodes): the rows must be the training data's steps")
        found = torch.full_like(index, -1)
        if len(self) == 0 or index.numel() == 0:
            return found
        filled = self.filled.to(index.device)
        ep = torch.searchsorted(ends, index, right=True)
        first = torch.where(ep > 0, ends[(ep - 1).clamp(min=0)], torch.zeros_like(ep))  # the episode's rows:
        stop = torch.minimum(ends[ep], torch.tensor(len(self), device=index.device))  # first .. stop - 1 (stored)
        for d in range(1, radius + 1):
            for row in (index - d, index + d):
                ok = (found < 0) & (row >= first) & (row < stop)
                ok &= filled[row.clamp(0, len(self) - 1)]
                found = torch.where(ok, row, found)
        return found

    def _check_shape(self, chains: int, act_dim: int) -> None:
        if tuple(self.states.shape[1:]) != (chains, act_dim):
            raise ValueError(f"the chain memory holds [rows, {self.states.shape[1]}, {self.states.shape[2]}] states; "
                             f"asked for {chains} chains of {act_dim} action dimensions")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{}`` while empty, else ``{"states", "filled"}``."""
        if self.states is None:
            return {}
        return {"states": self.states, "filled": self.filled}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str | None = None) -> None:
        """Restore what :meth:`state_dict` returned (``{}``: empty), onto ``device`` (None: where it was)."""
        if not state:
            self.states = self.filled = None
            return
        states, filled = state["states"], state["filled"]
        if states.dim() != 3 or filled.shape != states.shape[:1] or filled.dtype != torch.bool:
            raise ValueError(f"a chain memory state needs states [rows, chains, A] and a bool filled [rows]; got "
                             f"states {list(states.shape)} and filled {list(filled.shape)} ({filled.dtype})")
        self.states = states.to(device).float().clone()
        self.filled = filled.to(device).clone()
