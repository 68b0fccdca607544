"""Energy critics: ``E(context tokens, action chunk) -> energy`` trained with InfoNCE beside a generative
policy, and their test-time use (gradient correction, re-ranking, guidance at the predicted clean sample).

**Sign: lower energy = better action, everywhere.** InfoNCE logits are ``-E / temperature``; correction
descends ``E``; re-ranking executes the lowest-energy chunk.

**Mask convention: ``context_mask`` is True where a token is valid.** The attention is computed with
``scaled_dot_product_attention``, whose boolean mask uses the same convention (True = takes part), so the mask
is used as is, once per context in :meth:`EnergyCritic.prepare` (dropped when every token is valid).

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


@dataclass
class ContextCache:
    """What :meth:`EnergyCritic.prepare` computes once per context and every energy evaluation of that context's
    candidates reuses: the keys and values of the cross-attention (``[B, S, heads, W/heads]``, i.e. the encoded
    context tokens already projected) and the key mask (``[B, 1, 1, S]`` bool, **True = valid**, the convention
    ``scaled_dot_product_attention`` also uses; None when every token is valid)."""

    k: torch.Tensor
    v: torch.Tensor
    attn_mask: torch.Tensor | None

    @property
    def batch(self) -> int:
        return self.k.shape[0]


def _mlp_features(mlp: MLPResNet, x: torch.Tensor) -> torch.Tensor:
    """``MLPResNet.forward`` without its last dense layer (the features the head layer reads)."""
    h = mlp.proj(x)
    p = mlp.dropout if mlp.training else 0.0
    for l1, l2 in mlp.blocks:
        y = torch.relu(h)
        if p:
            y = nn.functional.dropout(y, p, True)
        y = torch.relu(l1(y))
        if p:
            y = nn.functional.dropout(y, p, True)
        h = h + l2(y)
    return h


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

    def prepare(self, context: torch.Tensor, context_mask: torch.Tensor | None,
                encoded: torch.Tensor | None = None) -> ContextCache:
        """Encode the context and project it to the cross-attention's keys and values, once per context.

        :meth:`energy` with the returned cache scores any number of candidate chunks of these contexts (e.g. the
        N candidates of re-ranking, or every step of gradient correction) without encoding the context again.
        Differentiable (training calls it inside :meth:`forward`); wrap it in ``torch.no_grad()`` when only
        gradients with respect to the actions are needed."""
        c = self.cfg
        if context_mask is not None:
            if context_mask.shape != context.shape[:2] or context_mask.dtype != torch.bool:
                raise ValueError(f"context_mask must be a bool [B, S] = {list(context.shape[:2])} (True = valid), "
                                 f"got {context_mask.dtype} {list(context_mask.shape)}")
            if not context_mask.any(1).all():
                raise ValueError("every context needs at least one valid token (context_mask all False in a row)")
            # all valid: attend to everything, no mask (same result, no masking work per call)
            attn_mask = None if context_mask.all() else context_mask[:, None, None, :]
        else:
            attn_mask = None
        kv = self.encode_context(context) if encoded is None else encoded  # [B, S, W]
        b, s = kv.shape[:2]
        w, bias = self.attn.in_proj_weight, self.attn.in_proj_bias
        kv = nn.functional.linear(kv, w[c.width:], None if bias is None else bias[c.width:])  # [B, S, 2W]
        k, v = kv.view(b, s, 2, c.heads, c.width // c.heads).unbind(2)
        return ContextCache(k, v, attn_mask)

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
        actions = self._check_actions(actions)
        if context.shape[0] != actions.shape[0]:
            raise ValueError(f"context batch {context.shape[0]} != actions batch {actions.shape[0]}")
        return self.energy(self.prepare(context, context_mask, encoded), actions)

    def _check_actions(self, actions: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if actions.dim() == 3:
            actions = actions[:, None]
        if actions.dim() != 4 or actions.shape[2] != c.horizon or actions.shape[3] < c.act_dim:
            raise ValueError(f"actions must be [B, N, {c.horizon}, >= {c.act_dim}], got {list(actions.shape)}")
        return actions

    def energy(self, cache: ContextCache, actions: torch.Tensor) -> torch.Tensor:
        """Energies ``[B, N]`` of candidates ``actions [B, N, H, A]`` (or ``[B, H, A]``) for a
        :meth:`prepare`-d context: the same values as :meth:`forward`.

        Every candidate of a context attends to the same keys and values, and queries attend independently, so
        the ``N * H`` action tokens of one context form one query sequence against that context's ``S`` keys:
        no per-candidate copy of the context, its encoding or its key/value projection."""
        actions = self._check_actions(actions)
        if cache.batch != actions.shape[0]:
            raise ValueError(f"context batch {cache.batch} != actions batch {actions.shape[0]}")
        return self.energy_encoded(cache, self.encode_actions(actions))

    def encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """The action tokens ``[B, N, H, W]`` (action encoder + positional encoding) of ``actions [B, N, H, A]``;
        they do not depend on the context, so a chunk scored under several contexts is encoded once."""
        c = self.cfg
        q = self.action_enc(actions[..., : c.act_dim])  # [B, N, H, W]
        pos = self.pos if self.pos.dtype == q.dtype else self.pos.to(q.dtype)
        return self.pos_drop(q + pos)

    def energy_encoded(self, cache: ContextCache, q: torch.Tensor) -> torch.Tensor:
        """Energies ``[B, N]`` of action tokens ``q = encode_actions(actions)`` for a :meth:`prepare`-d context."""
        c = self.cfg
        b, n = q.shape[:2]
        wd, nh, dh = c.width, c.heads, c.width // c.heads
        w, bias = self.attn.in_proj_weight, self.attn.in_proj_bias
        qp = nn.functional.linear(q, w[:wd], None if bias is None else bias[:wd])  # [B, N, H, W]
        qp = qp.view(b, n * c.horizon, nh, dh).transpose(1, 2)  # [B, heads, N*H, dh]
        a = nn.functional.scaled_dot_product_attention(
            qp, cache.k.transpose(1, 2), cache.v.transpose(1, 2), attn_mask=cache.attn_mask,
            dropout_p=self.attn.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, n, c.horizon, wd)
        h = self.norm(q + self.attn.out_proj(a))  # [B, N, H, W]
        if c.pooling == "mean":
            # the head's last layer is affine, so the mean over the chunk commutes with it
            return self.head.head(_mlp_features(self.head, h).mean(2)).squeeze(-1)
        h = h.reshape(b * n, c.horizon, wd)
        pooled, _ = self.pool_attn(self.pool_query.expand(b * n, 1, wd), h, h, need_weights=False)
        return self.head(pooled[:, 0]).squeeze(-1).view(b, n)

    def action_grad(self, cache: ContextCache, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(energy [B, N], dE/d actions [B, N, H, A])`` for a :meth:`prepare`-d context, with a hand-written
        backward pass instead of autograd (the gradient of the candidates' energies with respect to their own
        actions; dimensions past ``act_dim`` get 0). The same values as autograd through :meth:`energy`
        (``tests/test_critic.py`` checks it); at batch 1 it costs about half of autograd's forward + backward,
        which is mostly per-op overhead there. Mean pooling without active dropout; otherwise it runs autograd."""
        c = self.cfg
        actions = self._check_actions(actions)
        if c.pooling != "mean" or (self.training and (c.dropout > 0 or self.action_enc.dropout > 0
                                                      or self.head.dropout > 0 or self.attn.dropout > 0)):
            with torch.enable_grad():
                x = actions.detach().requires_grad_()
                e = self.energy(cache, x)
                (g,) = torch.autograd.grad(e.sum(), x)
            return e.detach(), g
        b, n, hz = actions.shape[0], actions.shape[1], c.horizon
        if cache.batch != b:
            raise ValueError(f"context batch {cache.batch} != actions batch {b}")
        wd, nh, dh = c.width, c.heads, c.width // c.heads
        relu_bwd = torch.ops.aten.threshold_backward
        linear = nn.functional.linear
        with torch.no_grad():
            x = actions[..., : c.act_dim].reshape(b * n * hz, c.act_dim)
            enc, head = self.action_enc, self.head
            # ---- forward, keeping what the backward pass reads
            h = linear(x, enc.proj.weight, enc.proj.bias)
            enc_saved = []
            for l1, l2 in enc.blocks:
                z1 = linear(torch.relu(h), l1.weight, l1.bias)
                enc_saved.append((h, z1))
                h = torch.addmm(l2.bias, torch.relu(z1), l2.weight.t()).add_(h)
            q = linear(h, enc.head.weight, enc.head.bias).view(b, n, hz, wd).add_(self.pos).view(b, n * hz, wd)
            w_in, b_in = self.attn.in_proj_weight, self.attn.in_proj_bias
            qh = linear(q, w_in[:wd], None if b_in is None else b_in[:wd]).view(b, n * hz, nh, dh).transpose(1, 2)
            kt = cache.k.permute(0, 2, 3, 1)  # [B, heads, dh, S]
            vh = cache.v.transpose(1, 2)  # [B, heads, S, dh]
            scale = 1.0 / math.sqrt(dh)
            sc = torch.matmul(qh, kt).mul_(scale)  # [B, heads, N*H, S]
            if cache.attn_mask is not None:
                sc.masked_fill_(~cache.attn_mask, float("-inf"))
            p = torch.softmax(sc, -1)
            o = torch.matmul(p, vh).transpose(1, 2).reshape(b, n * hz, wd)
            u = linear(o, self.attn.out_proj.weight, self.attn.out_proj.bias).add_(q)
            y, mu, rstd = torch.native_layer_norm(u, (wd,), self.norm.weight, self.norm.bias, self.norm.eps)
            h = linear(y, head.proj.weight, head.proj.bias)
            head_saved = []
            for l1, l2 in head.blocks:
                z1 = linear(torch.relu(h), l1.weight, l1.bias)
                head_saved.append((h, z1))
                h = linear(torch.relu(z1), l2.weight, l2.bias).add_(h)
            w_out = head.head.weight[0]
            e = torch.matmul(h.view(b, n, hz, wd).mean(2), w_out).add_(head.head.bias[0])  # [B, N]
            # ---- backward: d e / d (per-token head features) is w_out / H for every token
            g = (w_out / hz).expand(b, n * hz, wd)
            for (h_in, z1), (l1, l2) in zip(reversed(head_saved), reversed(list(head.blocks))):
                g_z1 = relu_bwd(torch.matmul(g, l2.weight), z1, 0)
                g = relu_bwd(torch.matmul(g_z1, l1.weight), h_in, 0).add_(g)
            g_y = torch.matmul(g, head.proj.weight)
            # layer norm: g_u = rstd * (g_n - mean(g_n) - n * mean(g_n * n)), n the normalized input
            g_n = g_y.mul_(self.norm.weight) if self.norm.weight is not None else g_y
            nrm = (u - mu).mul_(rstd)
            g_u = (g_n - g_n.mean(-1, keepdim=True) - nrm * (g_n * nrm).mean(-1, keepdim=True)).mul_(rstd)
            g_o = torch.matmul(g_u, self.attn.out_proj.weight).view(b, n * hz, nh, dh).transpose(1, 2)
            g_p = torch.matmul(g_o, vh.transpose(-1, -2))  # [B, heads, N*H, S]
            g_s = (g_p - (g_p * p).sum(-1, keepdim=True)).mul_(p).mul_(scale)
            g_qh = torch.matmul(g_s, kt.transpose(-1, -2)).transpose(1, 2).reshape(b * n * hz, wd)
            g = torch.addmm(g_u.view(b * n * hz, wd), g_qh, w_in[:wd])  # d/dq: residual + attention query
            g = torch.matmul(g, enc.head.weight)
            for (h_in, z1), (l1, l2) in zip(reversed(enc_saved), reversed(list(enc.blocks))):
                g_z1 = relu_bwd(torch.matmul(g, l2.weight), z1, 0)
                g = relu_bwd(torch.matmul(g_z1, l1.weight), h_in, 0).add_(g)
            g_x = torch.matmul(g, enc.proj.weight).view(b, n, hz, c.act_dim)
            if actions.shape[-1] > c.act_dim:
                g_x = torch.cat([g_x, g_x.new_zeros(*g_x.shape[:3], actions.shape[-1] - c.act_dim)], -1)
        return e, g_x


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
                    low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0, grad_fn=None) -> torch.Tensor:
    """Test-time correction ``a <- a - alpha * dE/da`` for ``steps`` steps; each step clipped elementwise to
    ``clip_frac * (high - low)`` and the result kept in ``[low, high]``. ``energy_fn(chunk [B, H, A]) -> [B]``.
    ``grad_fn(chunk) -> dE/da [B, H, A]``, if given, replaces autograd through ``energy_fn`` (e.g.
    :meth:`EnergyCritic.action_grad`). Batched; returns a detached chunk."""
    a = chunk.detach()
    high, low = torch.as_tensor(high, dtype=a.dtype), torch.as_tensor(low, dtype=a.dtype)
    max_step = clip_frac * (high - low)
    neg_max_step = -max_step
    for _ in range(steps):
        if grad_fn is not None:
            g = grad_fn(a)
        else:
            with torch.enable_grad():
                x = a.detach().requires_grad_()
                (g,) = torch.autograd.grad(energy_fn(x).sum(), x)
        with torch.no_grad():
            step = torch.maximum(torch.minimum(alpha * g, max_step), neg_max_step)
            a = torch.maximum(torch.minimum(a - step, high), low)
    return a


def rerank(energy_fn, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``candidates [B, N, H, A]`` -> (the lowest-energy chunk per row ``[B, H, A]``, its index ``[B]``);
    ``energy_fn(candidates) -> [B, N]``."""
    with torch.inference_mode():  # no autograd bookkeeping at all; idx is computed outside (a normal tensor)
        e = energy_fn(candidates)
    idx = e.argmin(1)
    return candidates[torch.arange(len(idx)), idx], idx
