"""Energy critics: ``E(context tokens, action chunk) -> energy`` trained with InfoNCE beside a generative
policy, and their test-time use (gradient correction, re-ranking, guidance at the predicted clean sample).

**Sign: lower energy = better action, everywhere.** InfoNCE logits are ``-E / temperature``; correction
descends ``E``; re-ranking executes the lowest-energy chunk.

**Mask convention: ``context_mask`` is True where a token is valid.** It is converted once, inside
:meth:`EnergyCritic.forward`, to the ``key_padding_mask`` (True = ignore) that ``nn.MultiheadAttention``
wants.

Architecture (the openpi seed's, sizes configurable): a state encoder (MLP-ResNet) per context token, an
action encoder (MLP-ResNet) per chunk step over the first ``act_dim`` action dimensions, a sinusoidal
positional encoding over the chunk (with dropout), multi-head cross-attention from action tokens to context
tokens (residual + LayerNorm), a prediction head (MLP-ResNet -> 1) per action token, and pooling over the
chunk (mean of the per-token energies, or an attention pool with a learned query).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from steerlab.nets.mlp import MLPResNet


@dataclass(frozen=True)
class CriticConfig:
    context_dim: int = 8
    """width Dc of a context token"""
    act_dim: int = 2
    """action dimensions scored (the first act_dim of the chunk; pi0 pads to 32, LIBERO uses 7)"""
    horizon: int = 16
    """chunk length H"""
    width: int = 128
    heads: int = 4
    encoder_depth: int = 2
    """dense layers in the residual stacks of the encoders and head (even)"""
    dropout: float = 0.0
    """dropout of the positional encoding (the seed: 0.2)"""
    pooling: Literal["mean", "attention"] = "mean"


SEED_SHAPES = CriticConfig(context_dim=2048, act_dim=7, horizon=50, width=512, heads=8, encoder_depth=2, dropout=0.2)
"""The openpi seed's energy model: PaliGemma-width context tokens, 7 of 32 action dims, 50-step chunks."""


def positional_encoding(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]`` sinusoidal encoding (sin on even, cos on odd channels)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class EnergyCritic(nn.Module):
    def __init__(self, cfg: CriticConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} must be divisible by heads {cfg.heads}")
        self.cfg = cfg
        d = cfg.encoder_depth
        self.state_enc = MLPResNet(cfg.context_dim, cfg.width, cfg.width, d, init_std=None)
        self.action_enc = MLPResNet(cfg.act_dim, cfg.width, cfg.width, d, init_std=None)
        self.register_buffer("pos", positional_encoding(cfg.horizon, cfg.width), persistent=False)
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.width)
        self.head = MLPResNet(cfg.width, 1, cfg.width, d, init_std=None)
        if cfg.pooling == "attention":
            self.pool_query = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
            self.pool_attn = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
        elif cfg.pooling != "mean":
            raise ValueError(f"unknown pooling {cfg.pooling!r}; use mean or attention")

    def encode_context(self, context: torch.Tensor) -> torch.Tensor:
        """``[B, S, Dc] -> [B, S, W]`` (reusable across the candidates of one context)."""
        if context.dim() != 3 or context.shape[-1] != self.cfg.context_dim:
            raise ValueError(f"context must be [B, S, {self.cfg.context_dim}], got {list(context.shape)}")
        return self.state_enc(context)

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor | None, actions: torch.Tensor,
                encoded: torch.Tensor | None = None) -> torch.Tensor:
        """Energies ``[B, N]`` of ``N`` candidate chunks per context.

        Args:
            context: ``[B, S, Dc]`` context tokens.
            context_mask: ``[B, S]`` bool, **True = valid** token (None: all valid).
            actions: ``[B, N, H, A]`` (or ``[B, H, A]`` for one candidate, giving ``[B, 1]``); only the first
                ``act_dim`` of ``A`` are scored.
            encoded: ``encode_context(context)`` if already computed.
        """
        c = self.cfg
        if actions.dim() == 3:
            actions = actions[:, None]
        if actions.dim() != 4 or actions.shape[2] != c.horizon or actions.shape[3] < c.act_dim:
            raise ValueError(f"actions must be [B, N, {c.horizon}, >= {c.act_dim}], got {list(actions.shape)}")
        b, n = actions.shape[:2]
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} != actions batch {b}")
        if context_mask is not None:
            if context_mask.shape != context.shape[:2] or context_mask.dtype != torch.bool:
                raise ValueError(f"context_mask must be a bool [B, S] = {list(context.shape[:2])} (True = valid), "
                                 f"got {context_mask.dtype} {list(context_mask.shape)}")
            if not context_mask.any(1).all():
                raise ValueError("every context needs at least one valid token (context_mask all False in a row)")
        kv = self.encode_context(context) if encoded is None else encoded  # [B, S, W]
        s = kv.shape[1]
        kv = kv[:, None].expand(b, n, s, c.width).reshape(b * n, s, c.width)
        pad = None
        if context_mask is not None:  # the one place the convention flips: attention wants True = ignore
            pad = (~context_mask)[:, None].expand(b, n, s).reshape(b * n, s)
        q = self.action_enc(actions[..., : c.act_dim].reshape(b * n, c.horizon, c.act_dim))
        q = self.pos_drop(q + self.pos.to(q.dtype))
        h, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        h = self.norm(q + h)  # [BN, H, W]
        if c.pooling == "mean":
            e = self.head(h).squeeze(-1).mean(1)
        else:
            pooled, _ = self.pool_attn(self.pool_query.expand(b * n, 1, c.width), h, h, need_weights=False)
            e = self.head(pooled[:, 0]).squeeze(-1)
        return e.view(b, n)


def info_nce_energy(e_pos: torch.Tensor, e_neg: torch.Tensor, temperature: float) -> tuple[torch.Tensor, dict]:
    """InfoNCE with the positive among the negatives: ``-log softmax(-[E_pos, E_neg] / T)[0]``, mean over the
    batch. ``e_pos [B]``, ``e_neg [B, K]``. Also returns E_pos, E_neg, the gap and the ranking accuracy
    (fraction of rows whose positive has the lowest energy)."""
    logits = -torch.cat([e_pos[:, None], e_neg], 1) / temperature
    loss = -torch.log_softmax(logits, 1)[:, 0].mean()
    with torch.no_grad():
        m = {"energy_loss": loss.item(), "e_pos": e_pos.mean().item(), "e_neg": e_neg.mean().item(),
             "energy_gap": (e_neg.mean(1) - e_pos).mean().item(),
             "rank_acc": (e_pos[:, None] < e_neg).all(1).float().mean().item()}
    return loss, m


def correct_actions(energy_fn, chunk: torch.Tensor, *, steps: int = 3, alpha: float = 0.1, clip_frac: float = 0.05,
                    low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Test-time correction ``a <- a - alpha * dE/da`` for ``steps`` steps; each step clipped elementwise to
    ``clip_frac * (high - low)`` and the result kept in ``[low, high]``. ``energy_fn(chunk [B, H, A]) -> [B]``.
    Batched; returns a detached chunk."""
    a = chunk.detach()
    max_step = clip_frac * (torch.as_tensor(high) - torch.as_tensor(low))
    for _ in range(steps):
        with torch.enable_grad():
            x = a.clone().requires_grad_()
            (g,) = torch.autograd.grad(energy_fn(x).sum(), x)
        step = torch.maximum(torch.minimum(alpha * g, max_step), -max_step)
        a = torch.maximum(torch.minimum(a - step, torch.as_tensor(high)), torch.as_tensor(low)).detach()
    return a


def rerank(energy_fn, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidates [B, N, H, A]`` -> (the lowest-energy chunk per row ``[B, H, A]``, its index ``[B]``);
    ``energy_fn(candidates) -> [B, N]``."""
    with torch.no_grad():
        e = energy_fn(candidates)
    idx = e.argmin(1)
    return candidates[torch.arange(len(idx)), idx], idx
