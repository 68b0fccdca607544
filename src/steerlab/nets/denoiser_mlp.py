"""A small MLP denoiser for low-dimensional tasks: ``f(x [B, H, A], t [B], cond [B, Dc]) -> [B, H, A]``.

The chunk is flattened and concatenated with a sinusoidal embedding of ``t`` (through a 2-layer MLP) and
the conditioning vector, then passed through the pre-activation residual MLP used by IBC.
"""

from __future__ import annotations

import torch
from torch import nn

from steerlab.nets.mlp import MLPResNet
from steerlab.nets.unet1d import sinusoidal_embedding


class DenoiserMLP(nn.Module):
    def __init__(self, horizon: int, act_dim: int, cond_dim: int, width: int = 256, depth: int = 4,
                 time_embed_dim: int = 64):
        super().__init__()
        self.horizon, self.act_dim, self.cond_dim, self.time_embed_dim = horizon, act_dim, cond_dim, time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, 2 * time_embed_dim), nn.Mish(),
                                      nn.Linear(2 * time_embed_dim, time_embed_dim))
        # default PyTorch init: the IBC N(0, 0.05) init starves a deep regression net of signal
        self.net = MLPResNet(horizon * act_dim + time_embed_dim + cond_dim, horizon * act_dim, width, depth,
                             init_std=None)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.horizon, self.act_dim):
            raise ValueError(f"DenoiserMLP expects x [B, {self.horizon}, {self.act_dim}], got {list(x.shape)}")
        b = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        parts = [x.reshape(b, -1), self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(x.dtype))]
        if self.cond_dim:
            if cond is None or cond.shape != (b, self.cond_dim):
                raise ValueError(f"DenoiserMLP expects cond [{b}, {self.cond_dim}], got "
                                 f"{None if cond is None else list(cond.shape)}")
            parts.append(cond.to(x.dtype))
        return self.net(torch.cat(parts, 1)).reshape(b, self.horizon, self.act_dim)
