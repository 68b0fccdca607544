"""ConditionalUnet1D: a 1-D U-Net over the time axis of an action chunk with FiLM conditioning, after the
design of diffusion_policy's low-dimensional denoiser.

``forward(x [B, T, C], t [B] (or scalar), cond [B, Dc] or None) -> [B, T, C]``. The diffusion time is
embedded sinusoidally and through a small MLP; ``concat(time embedding, cond)`` modulates every residual
block by a per-channel scale and bias (FiLM). ``T`` must be divisible by ``2 ** (len(down_dims) - 1)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t [B] -> [B, dim]``: ``[sin(t f_i), cos(t f_i)]`` with ``f_i = exp(-log(10000) i / (dim/2 - 1))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    args = t.float().reshape(-1, 1) * freqs[None]
    return torch.cat([args.sin(), args.cos()], -1)


class Conv1dBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, groups: int):
        super().__init__(nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.GroupNorm(groups, c_out), nn.Mish())


class ConditionalResidualBlock1D(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int, k: int = 5, groups: int = 8):
        super().__init__()
        self.block1, self.block2 = Conv1dBlock(c_in, c_out, k, groups), Conv1dBlock(c_out, c_out, k, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)
        scale, bias = self.film(c).unsqueeze(-1).chunk(2, dim=1)
        return self.block2(scale * h + bias) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, input_dim: int, global_cond_dim: int, time_embed_dim: int = 256,
                 down_dims: tuple[int, ...] = (256, 512, 1024), kernel_size: int = 5, n_groups: int = 8):
        super().__init__()
        if not down_dims:
            raise ValueError("down_dims needs at least one level")
        self.input_dim, self.global_cond_dim, self.time_embed_dim = input_dim, global_cond_dim, time_embed_dim
        self.levels = len(down_dims)
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, 4 * time_embed_dim), nn.Mish(),
                                      nn.Linear(4 * time_embed_dim, time_embed_dim))
        cd = time_embed_dim + global_cond_dim

        def res(a, b):
            return ConditionalResidualBlock1D(a, b, cd, kernel_size, n_groups)

        dims = [input_dim, *down_dims]
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(down_dims) - 1
            self.down.append(nn.ModuleList([res(a, b), res(b, b),
                                            nn.Identity() if last else nn.Conv1d(b, b, 3, stride=2, padding=1)]))
        self.mid = nn.ModuleList([res(down_dims[-1], down_dims[-1]), res(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for a, b in reversed(list(zip(down_dims[:-1], down_dims[1:]))):  # one upsampling per downsampling
            self.up.append(nn.ModuleList([res(2 * b, a), res(a, a), nn.ConvTranspose1d(a, a, 4, stride=2, padding=1)]))
        self.final = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                   nn.Conv1d(down_dims[0], input_dim, 1))

    def forward(self, x: torch.Tensor, t, cond: torch.Tensor | None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"ConditionalUnet1D expects x [B, T, {self.input_dim}], got {list(x.shape)}")
        b, T = x.shape[:2]
        if T % 2 ** (self.levels - 1):
            raise ValueError(f"chunk length {T} must be divisible by 2**(len(down_dims)-1) = {2 ** (self.levels - 1)}; "
                             f"change the horizon or use fewer down_dims")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        c = self.time_mlp(sinusoidal_embedding(t, self.time_embed_dim).to(x.dtype))
        if self.global_cond_dim:
            if cond is None or cond.shape != (b, self.global_cond_dim):
                raise ValueError(f"cond must be [{b}, {self.global_cond_dim}], got {None if cond is None else list(cond.shape)}")
            c = torch.cat([c, cond.to(x.dtype)], -1)
        h, skips = x.transpose(1, 2), []
        for r1, r2, down in self.down:
            h = r2(r1(h, c), c)
            skips.append(h)
            h = down(h)
        for r in self.mid:
            h = r(h, c)
        for r1, r2, up in self.up:
            h = r2(r1(torch.cat([h, skips.pop()], 1), c), c)
            h = up(h)
        return self.final(h).transpose(1, 2)
