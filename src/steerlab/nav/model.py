"""NoMaD at small scale: one network with three heads, called as NoMaD's ``model(name, **kwargs)``.

``NavModel(cfg)`` holds

- ``vision_encoder``: a CNN per context frame of the egocentric occupancy image ``[32, 32]`` (plus, if
  ``cfg.state_dim > 0``, a linear projection of the normalized robot state added to the frame token), a goal
  encoder (normalized ``goal_rel [2]`` -> one token), learned position embeddings, a small pre-norm transformer
  over the ``n_obs + 1`` tokens and a masked mean pool -> observation embedding ``[B, E]``.
  **Goal masking** (NoMaD's exploration mode): ``input_goal_mask [B]`` bool, **True = goal masked** (exploration:
  the goal token is removed as an attention key and from the pool, so the embedding does not depend on the goal
  at all), False = goal-conditioned. ``None`` means False for every row.
- ``noise_pred_net``: :class:`~steerlab.nets.unet1d.ConditionalUnet1D` over the waypoint chunk ``[B, 8, 2]``,
  FiLM-conditioned on ``concat(global_cond, latent_z)``; ``latent_z [B, d_z1 + d_z2]`` is the intent in the
  layout of :class:`~steerlab.nav.intent.TwoStageIntent` (``[z1 embedding | z2]``, dropped levels replaced by
  the learned null embeddings). With ``lambda_cfg`` it applies classifier-free guidance
  (:func:`~steerlab.nav.intent.guided_eps`). Optionally (``direct_head``) an MLP on the same conditioning adds
  its output to the U-Net's.
- ``dist_pred_net``: an MLP on the goal-conditioned observation embedding -> distance to goal ``[B]``.

Call interface (the seed's, NoMaD's)::

    emb = model("vision_encoder", obs_img=[B, n_obs, 32, 32], obs_state=[B, n_obs, S] (optional),
                goal=[B, 2] (or goal_img=[B, 2]), input_goal_mask=[B] bool)          -> [B, E]
    eps = model("noise_pred_net", sample=[B, 8, 2], timestep=[B] or scalar, global_cond=[B, E],
                latent_z=[B, d_z1 + d_z2] or None, lambda_cfg=None | float | (l1, l2)) -> [B, 8, 2]
    d   = model("dist_pred_net", obsgoal_cond=[B, E])                                 -> [B]

In Nav2D the goal is a relative position, not an image: ``goal_img`` is accepted as an alias of ``goal`` and
must be ``[B, 2]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from steerlab.nav.intent import IntentConfig, TwoStageIntent, guided_eps
from steerlab.nets.unet1d import ConditionalUnet1D


@dataclass(frozen=True)
class NavModelConfig:
    n_obs_steps: int = 2
    """context frames (NoMaD: 4 past + current; small default)"""
    img_size: int = 32
    """side of the square occupancy image"""
    state_dim: int = 6
    """robot-state features added to each frame token (0: images only, as NoMaD)"""
    goal_dim: int = 2
    """goal vector size (goal_rel)"""
    cnn_channels: tuple[int, ...] = (16, 32, 32)
    """channels of the stride-2 3x3 conv layers of the frame encoder"""
    embed_dim: int = 64
    """token / observation-embedding size E (NoMaD: 256)"""
    n_layers: int = 2
    """transformer layers (NoMaD: 4)"""
    n_heads: int = 4
    ff_mult: int = 2
    """transformer feed-forward width = ff_mult * embed_dim"""
    horizon: int = 8
    """waypoints per chunk (NoMaD: 8)"""
    action_dim: int = 2
    """per-waypoint action size"""
    down_dims: tuple[int, ...] = (32, 64, 128)
    """ConditionalUnet1D channels per level (NoMaD: 64, 128, 256)"""
    time_embed_dim: int = 32
    kernel_size: int = 3
    n_groups: int = 8
    dist_hidden: tuple[int, ...] = (64, 16)
    """distance-head hidden sizes (NoMaD: 64, 16)"""
    direct_head: bool = False
    """add to the U-Net's output an MLP's on ``[observation embedding | intent latent]`` (not in NoMaD). With the
    clean-chunk output (``prediction_type='sample'``) it is a direct estimate of the chunk from the intent, which
    the U-Net refines from the noisy sample: the route reaches the output through a plain MLP instead of only
    through the U-Net's FiLM layers. Its last layer starts at zero (the model starts as without it)"""
    direct_hidden: int = 256
    """hidden width of the direct head (two hidden layers)"""
    intent: IntentConfig = field(default_factory=IntentConfig)


class FrameEncoder(nn.Module):
    """Occupancy ``[N, H, W]`` (0/1) -> ``[N, E]`` by stride-2 convolutions and a linear layer."""

    def __init__(self, img_size: int, channels: tuple[int, ...], out_dim: int):
        super().__init__()
        layers, c, s = [], 1, img_size
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), nn.Mish()]
            c, s = ch, (s + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Linear(c * s * s, out_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # 0/1 occupancy -> {-1, 1}
        return self.proj(self.conv(img.unsqueeze(1) * 2 - 1).flatten(1))


class Block(nn.Module):
    """Pre-norm transformer block; ``key_mask [B, L]`` True = the token may be attended to."""

    def __init__(self, dim: int, heads: int, ff: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} must be divisible by n_heads {heads}")
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, L, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # [B, h, L, L]
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        att = torch.softmax(scores, -1) @ v  # masked keys get weight exactly 0
        x = x + self.out(att.transpose(1, 2).reshape(b, L, d))
        return x + self.ff(self.n2(x))


class NavModel(nn.Module):
    """NoMaD-style vision encoder + noise-prediction U-Net + distance head, and the two-stage intent."""

    def __init__(self, cfg: NavModelConfig = NavModelConfig()):
        super().__init__()
        self.cfg = cfg
        E = cfg.embed_dim
        self.frame_enc = FrameEncoder(cfg.img_size, tuple(cfg.cnn_channels), E)
        self.state_proj = nn.Linear(cfg.state_dim, E) if cfg.state_dim else None
        self.goal_enc = nn.Sequential(nn.Linear(cfg.goal_dim, E), nn.Mish(), nn.Linear(E, E))
        self.pos_emb = nn.Parameter(torch.randn(cfg.n_obs_steps + 1, E) * 0.02)
        self.blocks = nn.ModuleList([Block(E, cfg.n_heads, cfg.ff_mult * E) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(E)
        self.intent = TwoStageIntent(cfg.intent, obs_dim=E, chunk_numel=cfg.horizon * cfg.action_dim)
        self.noise_net = ConditionalUnet1D(cfg.action_dim, E + self.intent.latent_dim, cfg.time_embed_dim,
                                           tuple(cfg.down_dims), cfg.kernel_size, cfg.n_groups)
        self.direct_net = None
        if cfg.direct_head:
            h = cfg.direct_hidden
            self.direct_net = nn.Sequential(nn.Linear(E + self.intent.latent_dim, h), nn.Mish(), nn.Linear(h, h),
                                            nn.Mish(), nn.Linear(h, cfg.horizon * cfg.action_dim))
            nn.init.zeros_(self.direct_net[-1].weight)
            nn.init.zeros_(self.direct_net[-1].bias)
        dims = [E, *cfg.dist_hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.Mish()]
        self.dist_net = nn.Sequential(*layers, nn.Linear(dims[-1], 1))

    # ------------------------------------------------------------------------------------------ dispatch
    def forward(self, func_name: str, **kwargs):
        fns = {"vision_encoder": self.vision_encoder, "noise_pred_net": self.noise_pred_net,
               "dist_pred_net": self.dist_pred_net}
        if func_name not in fns:
            raise ValueError(f"unknown function {func_name!r}; use one of {sorted(fns)}")
        return fns[func_name](**kwargs)

    # ------------------------------------------------------------------------------------------- encoder
    def vision_encoder(self, obs_img: torch.Tensor, goal: torch.Tensor | None = None,
                       input_goal_mask: torch.Tensor | None = None, obs_state: torch.Tensor | None = None,
                       goal_img: torch.Tensor | None = None) -> torch.Tensor:
        """Observation embedding ``[B, E]``; see the module docstring for the mask convention."""
        cfg = self.cfg
        n, S = cfg.n_obs_steps, cfg.img_size
        if obs_img.dim() != 4 or obs_img.shape[1:] != (n, S, S):
            raise ValueError(f"obs_img must be [B, n_obs_steps={n}, {S}, {S}] occupancy, got {list(obs_img.shape)}")
        b = obs_img.shape[0]
        if goal is None:
            goal = goal_img
        elif goal_img is not None:
            raise ValueError("pass the goal as goal= or goal_img=, not both")
        mask = torch.zeros(b, dtype=torch.bool, device=obs_img.device) if input_goal_mask is None else input_goal_mask
        if mask.dtype != torch.bool or mask.shape != (b,):
            raise ValueError(f"input_goal_mask must be a bool tensor [B={b}] (True = goal masked), "
                             f"got {mask.dtype} {list(mask.shape)}")
        if goal is None:
            if not bool(mask.all()):
                raise ValueError("goal is required unless every row is goal-masked (input_goal_mask all True)")
            goal = torch.zeros(b, cfg.goal_dim, dtype=obs_img.dtype, device=obs_img.device)
        if goal.shape != (b, cfg.goal_dim):
            raise ValueError(f"goal must be [B={b}, {cfg.goal_dim}] (normalized goal_rel), got {list(goal.shape)}")
        dtype = self.pos_emb.dtype
        tok = self.frame_enc(obs_img.reshape(b * n, S, S).to(dtype)).view(b, n, -1)
        if self.state_proj is not None:
            if obs_state is None or obs_state.shape != (b, n, cfg.state_dim):
                raise ValueError(f"obs_state must be [B={b}, {n}, {cfg.state_dim}] (normalized state), got "
                                 f"{None if obs_state is None else list(obs_state.shape)}; set state_dim=0 for images only")
            tok = tok + self.state_proj(obs_state.to(dtype))
        g = self.goal_enc(goal.to(dtype))
        # the masked goal token is also zeroed, so not even a NaN in a masked goal can leak
        g = torch.where(mask[:, None], torch.zeros_like(g), g)
        x = torch.cat([tok, g[:, None]], 1) + self.pos_emb
        keep = torch.cat([torch.ones(b, n, dtype=torch.bool, device=x.device), ~mask[:, None]], 1)  # [B, n+1]
        for blk in self.blocks:
            x = blk(x, keep)
        x = self.norm(x)
        x = torch.where(keep[..., None], x, torch.zeros_like(x))
        return x.sum(1) / keep.sum(1, keepdim=True).to(x.dtype)

    # --------------------------------------------------------------------------------------------- heads
    def _eps(self, sample, timestep, global_cond, latent_z):
        cond = torch.cat([global_cond.to(sample.dtype), latent_z.to(sample.dtype)], -1)
        out = self.noise_net(sample, timestep, cond)
        if self.direct_net is not None:
            out = out + self.direct_net(cond).view_as(out)
        return out

    def noise_pred_net(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor,
                       latent_z: torch.Tensor | None = None, lambda_cfg=None) -> torch.Tensor:
        """Predicted noise ``[B, H, 2]``.

        ``latent_z`` ``[B, d_z1 + d_z2]`` (None: the null latent, i.e. unconditional). ``lambda_cfg``:
        None: one call with ``latent_z`` as given; a float ``l``: ``eps_null + l (eps(latent_z) - eps_null)``;
        a pair ``(l1, l2)``: the nested form ``eps_null + l1 (eps_z1 - eps_null) + l2 (eps_z1z2 - eps_z1)``
        (``eps_z1`` uses ``latent_z``'s z1 part with the null z2).
        """
        b = sample.shape[0]
        cfg = self.cfg
        if sample.dim() != 3 or sample.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"sample must be [B, {cfg.horizon}, {cfg.action_dim}], got {list(sample.shape)}")
        if global_cond.shape != (b, cfg.embed_dim):
            raise ValueError(f"global_cond must be [B={b}, {cfg.embed_dim}] (vision_encoder output), got {list(global_cond.shape)}")
        null = self.intent.null_latent(b).to(sample.dtype)
        if latent_z is None:
            latent_z = null
        if latent_z.shape != (b, self.intent.latent_dim):
            raise ValueError(f"latent_z must be [B={b}, {self.intent.latent_dim}] = [z1 embedding | z2], got {list(latent_z.shape)}")
        if lambda_cfg is None:
            return self._eps(sample, timestep, global_cond, latent_z)
        if isinstance(lambda_cfg, (tuple, list)):
            l1, l2 = lambda_cfg
            z1_only = self.intent.with_null_z2(latent_z)
            lat = torch.cat([null, z1_only, latent_z], 0)
            e = self._eps(sample.repeat(3, 1, 1), _rep(timestep, b, 3), global_cond.repeat(3, 1), lat)
            return guided_eps(e[:b], e[b:2 * b], e[2 * b:], l1, l2)
        lat = torch.cat([null, latent_z], 0)
        e = self._eps(sample.repeat(2, 1, 1), _rep(timestep, b, 2), global_cond.repeat(2, 1), lat)
        return guided_eps(e[:b], None, e[b:], float(lambda_cfg))

    def dist_pred_net(self, obsgoal_cond: torch.Tensor) -> torch.Tensor:
        """Distance-to-goal estimate ``[B]`` from a goal-conditioned (unmasked) observation embedding ``[B, E]``."""
        if obsgoal_cond.dim() != 2 or obsgoal_cond.shape[1] != self.cfg.embed_dim:
            raise ValueError(f"obsgoal_cond must be [B, {self.cfg.embed_dim}], got {list(obsgoal_cond.shape)}")
        return self.dist_net(obsgoal_cond).squeeze(-1)


def _rep(t, b: int, k: int):
    """Timestep(s) for a batch repeated ``k`` times."""
    t = torch.as_tensor(t)
    if t.numel() not in (1, b):
        raise ValueError(f"timestep must be a scalar or [B={b}], got {list(t.shape)}")
    return t.reshape(-1).expand(b).repeat(k)
