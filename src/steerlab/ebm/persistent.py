"""Persistent Langevin chains for IBC's training counter-examples: a store of each dataset row's last chain states.

Rows are the training windows of the dataset (``batch["index"]``, which the training loop adds). The store grows
to the largest row index written, so it needs no dataset size up front; a row that was never written reads as
unfilled. It is training state, not model state: it is kept out of the policy's ``state_dict`` (so out of saved
policies and of the EMA copy) and goes into ``trainer.pt`` through :meth:`ChainMemory.state_dict`.
"""

from __future__ import annotations

import torch


class ChainMemory:
    """Chain end states ``[rows, chains, A]`` (normalized actions) and a ``[rows]`` mask of the rows written."""

    def __init__(self):
        self.states: torch.Tensor | None = None
        self.filled: torch.Tensor | None = None

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
