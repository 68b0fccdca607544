"""An autoregressive energy network with masked layers (MADE, Germain et al. 2015): one pass returns every head
``f_j(o, a_0..j)`` of autoregressive DFO.

The observation inputs have degree -1 (every unit sees them), action dimension ``j`` has degree ``j``. A hidden
unit of degree ``d`` reads only the inputs (or units of the previous layer) of degree <= ``d``; output ``j`` reads
the last layer's units of degree <= ``j``. So output ``j`` depends on the observation and on ``a_0..a_j`` only,
for any weights (``tests/test_ebm.py`` checks it). A unit of degree ``d`` serves heads ``d..A-1``, so degrees
are not spread evenly (head 0 would see 1/A of the units: 8 of 256 at A = 32) but in proportion to
``1 / (d + 1)`` (:func:`harmonic_counts`): head 0 sees ``1 / H(A)`` of them (``H`` the harmonic numbers; 24% at
A = 32), the last head all. The layers are IBC's plain ``MLPDropout`` (Dense -> ReLU -> Dropout), kernels and
biases N(0, 0.05²) as in :class:`~steerlab.nets.mlp.MLPPlain`.
"""

from __future__ import annotations

import torch
from torch import nn


def harmonic_counts(n: int, k: int) -> torch.Tensor:
    """``n`` items over ``k`` levels, level ``j`` getting a count proportional to ``1 / (j + 1)`` (largest
    remainders), as the sorted ``[n]`` levels."""
    w = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
    share = n * w / w.sum()
    counts = share.floor().long()
    rest = n - int(counts.sum())
    counts[torch.argsort(share - counts, descending=True)[:rest]] += 1
    return torch.repeat_interleave(torch.arange(k), counts)


class MaskedARMLP(nn.Module):
    """``forward_split(o [B, Dh], a [B, N, A]) -> [B, N, A]``: head ``j`` on the prefix ``a[..., :j + 1]``."""

    def __init__(self, obs_dim: int, act_dim: int, width: int = 256, depth: int = 2, dropout: float = 0.0,
                 init_std: float = 0.05):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a masked MLP needs depth >= 1 hidden layers, got {depth}")
        deg_h = harmonic_counts(width, act_dim)
        if deg_h[-1] != act_dim - 1:  # a_j reaches only units of degree >= j
            raise ValueError(f"width {width} is too small for {act_dim} action dims: the last dimension would reach "
                             "no hidden unit (use a wider network)")
        self.obs_dim, self.act_dim, self.width, self.depth, self.dropout = obs_dim, act_dim, width, depth, dropout
        deg_in = torch.cat([torch.full((obs_dim,), -1), torch.arange(act_dim)])
        dims = [obs_dim + act_dim] + [width] * depth + [act_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.normal_(layer.bias, std=init_std)
        masks = [deg_h[:, None] >= deg_in[None, :]]
        masks += [deg_h[:, None] >= deg_h[None, :] for _ in range(depth - 1)]
        masks += [torch.arange(act_dim)[:, None] >= deg_h[None, :]]
        for i, m in enumerate(masks):
            self.register_buffer(f"mask{i}", m.float())

    def masked_weights(self) -> list[torch.Tensor]:
        return [layer.weight * getattr(self, f"mask{i}") for i, layer in enumerate(self.layers)]

    def forward_split(self, x_head: torch.Tensor, x_tail: torch.Tensor) -> torch.Tensor:
        """``x_head [B, Dh]`` (observation features), ``x_tail [B, N, A]`` (actions) -> ``[B, N, A]`` logits; the
        first layer's product with the observation is computed once per row."""
        if x_head.shape[-1] != self.obs_dim or x_tail.shape[-1] != self.act_dim:
            raise ValueError(f"expected observation features [B, {self.obs_dim}] and actions [B, N, {self.act_dim}], "
                             f"got {list(x_head.shape)} and {list(x_tail.shape)}")
        w = self.masked_weights()
        dh = self.obs_dim
        first = self.layers[0]
        h = (x_head @ w[0][:, :dh].T + first.bias).unsqueeze(1) + x_tail @ w[0][:, dh:].T
        p = self.dropout if self.training else 0.0
        for i in range(1, len(w)):
            h = nn.functional.dropout(torch.relu(h), p, self.training)
            h = nn.functional.linear(h, w[i], self.layers[i].bias)
        return h
