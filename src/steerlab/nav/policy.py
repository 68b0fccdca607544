"""NavPolicy: the NoMaD-style goal-conditioned / exploration navigation policy with a two-stage latent intent.

Network: :class:`~steerlab.nav.model.NavModel`; intent: :mod:`steerlab.nav.intent`; batches:
:class:`~steerlab.nav.data.NavWindowDataset`.

Conventions
-----------
- Normalizers live in the policy as buffers (saved with ``state_dict``, as every steerlab policy):
  min-max to ``[-1, 1]`` for the robot state ``[6]``, the goal ``goal_rel [2]``, the waypoint deltas (one
  normalizer over the 2 coordinates of every waypoint) and the reference-trajectory points ``[2]``. Occupancy
  stays 0/1 (the encoder maps it to +-1); distances stay in world units.
- A chunk in the sampler's space is the normalized waypoint chunk ``[B, 8, 2]``; the environment action is its
  unnormalized, flattened, clipped form ``[B, 16]``. ``predict_action_chunk`` returns ``[B, 1, 16]``: one env
  action per decision (``n_action_steps = 1``; the env's controller tracks the 8 waypoints).
- Goal mask ``[B]`` bool, **True = goal masked** (exploration mode), as ``input_goal_mask`` of the model.
- Diffusion: DDPM training with the squared-cosine schedule (NoMaD: 10 train steps), the network predicting
  ``prediction_type`` (NoMaD: epsilon; or the clean chunk, ``sample``, or ``v_prediction``); sampled by DDPM or
  DDIM from :mod:`steerlab.sampling`, differentiable w.r.t. the initial noise ``z0``, ``z2``,
  ``z1`` and the observation embedding when ``grad`` is ``full`` or ``checkpoint``.

Loss (``compute_loss``)::

    loss = alpha * dist_mse + (1 - alpha) * diffusion_mse + kl_weight * KL

``dist_mse`` over the rows whose goal is not masked; ``diffusion_mse`` the MSE to the prediction target weighted by
``action_mask`` (NoMaD); ``KL = KL(q(z2 | chunk, z1, obs) || N(0, I))`` (summed over z2's dims) averaged over
the rows that keep z2. Random draws from ``generator``, in this order: goal mask ``u [B]``; CFG dropout
``u1 [B], u2 [B]``; posterior noise ``[B, d2]``; timesteps ``[B]``; diffusion noise ``[B, 8, 2]``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np
import torch

from steerlab.data.normalize import MinMax
from steerlab.hw import to_device
from steerlab.nav.data import first_decision_rows, rotate_heading
from steerlab.nav.intent import drop_masks, gaussian_kl
from steerlab.nav.model import NavModel, NavModelConfig
from steerlab.policy import Policy
from steerlab.registry import register_policy
from steerlab.sampling import (
    DiffusionProcess, NoiseSource, alphas_cumprod, default_noise, get_sampler, run_sampler, squaredcos_cap_v2,
)

BATCH_KEYS = ("obs_img", "obs_state", "goal_rel", "actions", "distance", "action_mask", "ref_traj")


@dataclass(frozen=True)
class NavPolicyConfig:
    kind: Literal["nav"] = "nav"
    model: NavModelConfig = field(default_factory=NavModelConfig)
    num_train_timesteps: int = 10
    """DDPM training steps (NoMaD: 10)"""
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    """what the noise head outputs (diffusers' names; NoMaD: epsilon)"""
    sampler: Literal["ddpm", "ddim", "res"] = "ddpm"
    """inference sampler (NoMaD: DDPM)"""
    num_inference_steps: int = 10
    eta: float = 0.0
    """DDIM stochasticity"""
    clip_sample: float | None = 1.0
    """clip the predicted clean chunk to [-c, c] in the sampler (None: no clip)"""
    use_clipped_model_output: bool = False
    """DDIM with clip_sample: re-derive eps from the clipped clean chunk (diffusers'
    DDIMScheduler.step(use_clipped_model_output=True)); False keeps the model's eps (diffusers' default, which
    diffusion_policy uses)"""
    dist_weight: float = 0.05
    """alpha of alpha * distance + (1 - alpha) * diffusion. NoMaD's 1e-4 is for temporal distances (up to ~20
    steps, squared errors in the hundreds); ours are world units (< 1.5), hence a larger weight"""
    goal_mask_prob: float = 0.5
    """training probability of masking the goal (exploration mode; NoMaD: 0.5)"""
    lambda_cfg: float = 1.0
    """default guidance weight at inference (1: plain conditional, 0: unconditional)"""
    inference_level: Literal["none", "z1", "z1z2"] = "z1z2"
    """intent level used by predict_action_chunk when a ref_traj is given: none (null latent), z1 (null z2) or
    z1z2 (z2 from the prior N(0, I) unless given)"""
    stats_samples: int | None = None
    """rows used for the normalizer statistics; None: all"""
    rotate_first: bool = False
    """augment the windows of an episode's first decision (robot at rest, arbitrary heading) by a random quarter
    turn of the heading (steerlab.nav.data.rotate_heading; exact for the egocentric image, goal, route and
    waypoints): four times the first-decision views, which are the least precise chunks"""


@register_policy("nav", NavPolicyConfig)
class NavPolicy(Policy):
    n_action_steps = 1

    def __init__(self, cfg: NavPolicyConfig = NavPolicyConfig(), obs_dim: int | None = None, act_dim: int | None = None):
        super().__init__()
        m = cfg.model
        if act_dim is not None and act_dim != m.horizon * m.action_dim:
            raise ValueError(f"NavPolicy acts with [{m.horizon * m.action_dim}] waypoint actions, got act_dim={act_dim}")
        if not 0.0 <= cfg.dist_weight <= 1.0:
            raise ValueError(f"dist_weight (alpha) must be in [0, 1], got {cfg.dist_weight}")
        if m.direct_head and cfg.prediction_type != "sample":
            raise ValueError("model.direct_head estimates the clean chunk: it needs prediction_type='sample', got "
                             f"{cfg.prediction_type!r}")
        self.cfg = cfg
        self.n_obs_steps = m.n_obs_steps
        self.model = NavModel(m)
        self.state_norm = MinMax(max(m.state_dim, 1))
        self.goal_norm = MinMax(m.goal_dim)
        self.act_norm = MinMax(m.action_dim)
        self.ref_norm = MinMax(m.intent.ref_dim)
        self.process = DiffusionProcess(alphas_cumprod(squaredcos_cap_v2(cfg.num_train_timesteps)), cfg.prediction_type,
                                        cfg.clip_sample, cfg.use_clipped_model_output)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (self.cfg.model.horizon, self.cfg.model.action_dim)

    @property
    def z1_dim(self) -> int:
        return self.cfg.model.intent.z1_dim

    @property
    def z2_dim(self) -> int:
        return self.cfg.model.intent.z2_dim

    def fit_normalizers(self, data: Mapping[str, np.ndarray], *, action_low=None, action_high=None, episode_ends=None,
                        seed: int = 0) -> None:
        """Fit the normalizers on the collector's per-step arrays (``state``, ``goal_rel``, ``action``,
        ``ref_traj``; e.g. ``load_nav_dataset(path).data``). The action bounds and episode ends are not used: the
        waypoint normalizer is fitted on the data, whose waypoints the env clips itself."""
        missing = [k for k in ("state", "goal_rel", "action", "ref_traj") if k not in data]
        if missing:
            raise KeyError(f"fit_normalizers needs the dataset arrays {missing} (from steerlab.nav.data.load_nav_dataset)")
        n, m = self.cfg.stats_samples, self.cfg.model
        if m.state_dim:
            self.state_norm = MinMax.fit(np.asarray(data["state"]), n, seed)
        self.goal_norm = MinMax.fit(np.asarray(data["goal_rel"]), n, seed)
        self.act_norm = MinMax.fit(np.asarray(data["action"]).reshape(-1, m.action_dim), n, seed)
        self.ref_norm = MinMax.fit(np.asarray(data["ref_traj"]).reshape(-1, m.intent.ref_dim), n, seed)

    # ------------------------------------------------------------------------------------ conditioning
    def condition(self, obs: Mapping[str, torch.Tensor], goal_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw observation batch (``obs_img [B, n, 32, 32]``, ``obs_state [B, n, 6]``, ``goal_rel [B, 2]`` -- omit it
        for exploration) -> observation embedding ``[B, E]``. ``goal_mask [B]`` True = goal masked; default: the
        batch's ``goal_mask`` if present, else masked iff ``goal_rel`` is absent."""
        if "obs_img" not in obs:
            raise KeyError("observation batch needs 'obs_img' [B, n_obs, 32, 32] (see steerlab.nav.data)")
        dev, dt = self.model.pos_emb.device, self.model.pos_emb.dtype  # inputs go to the policy's device
        img = torch.as_tensor(obs["obs_img"], device=dev)
        b = img.shape[0]
        if goal_mask is None:
            goal_mask = obs.get("goal_mask")
        goal = obs.get("goal_rel")
        if goal_mask is None:
            goal_mask = torch.full((b,), goal is None, dtype=torch.bool, device=dev)
        state = None
        if self.cfg.model.state_dim:
            if "obs_state" not in obs:
                raise KeyError("observation batch needs 'obs_state' [B, n_obs, 6] (or configure model.state_dim=0)")
            state = self.state_norm.normalize(torch.as_tensor(obs["obs_state"], device=dev).to(dt))
        g = None if goal is None else self.goal_norm.normalize(torch.as_tensor(goal, device=dev).to(dt))
        return self.model("vision_encoder", obs_img=img.to(dt), obs_state=state, goal=g,
                          input_goal_mask=torch.as_tensor(goal_mask, device=dev))

    def encode_z1(self, ref_traj: torch.Tensor) -> torch.Tensor:
        """Raw reference trajectory ``[B, 32, 2]`` (robot frame) -> z1 ``[B, d_z1]``."""
        ref = torch.as_tensor(ref_traj, device=self.model.pos_emb.device).to(self.model.pos_emb.dtype)
        return self.model.intent.encode_z1(self.ref_norm.normalize(ref))

    # ------------------------------------------------------------------------------------------ the chain
    def model_fn(self, cond: torch.Tensor, z1: torch.Tensor | None = None, z2: torch.Tensor | None = None,
                 lambda_cfg=None):
        """The network as the sampler sees it: ``model_fn(x [B, 8, 2], t [B])`` -> the ``prediction_type`` output,
        closing over ``cond``, the intent (``z1``/``z2`` None = null) and the guidance weight (None / float /
        ``(l1, l2)``; classifier-free guidance combines outputs linearly, which is the same rule in every
        prediction type since each is affine in the others at fixed ``x_t``)."""
        latent = None if z1 is None else self.model.intent.latent(z1, z2)
        lam = lambda_cfg if self.network_calls(lambda_cfg, conditioned=latent is not None) > 1 else None
        return lambda x, t: self.model("noise_pred_net", sample=x, timestep=t, global_cond=cond, latent_z=latent,
                                       lambda_cfg=lam)

    @staticmethod
    def network_calls(lambda_cfg, conditioned: bool = True) -> int:
        """Network calls per denoising step for a guidance weight: 1 when unconditioned or ``lambda_cfg`` is None /
        1.0 (guidance is the identity), 2 for another float, 3 for a pair ``(l1, l2)``."""
        if not conditioned or lambda_cfg is None:
            return 1
        if isinstance(lambda_cfg, (tuple, list)):
            return 3
        return 1 if float(lambda_cfg) == 1.0 else 2

    def sample(self, cond: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor | None = None,
               z2: torch.Tensor | None = None, *, noise: NoiseSource | None = None, grad="none", lambda_cfg=None,
               sampler: str | None = None, num_steps: int | None = None) -> torch.Tensor:
        """Normalized waypoint chunk ``[B, 8, 2]`` from the initial noise ``z0 [B, 8, 2]``.

        ``cond [B, E]`` from :meth:`condition`; ``z1 [B, d1]`` (from :meth:`encode_z1`, or None: level "none"),
        ``z2 [B, d2]`` (None: level "z1"); ``lambda_cfg`` (default: the config's) as in
        :func:`~steerlab.nav.intent.guided_eps`; ``noise`` the per-step source (default: the sampler's,
        :func:`~steerlab.sampling.default_noise`); ``grad`` none | full | checkpoint -- with full/checkpoint the
        result is differentiable w.r.t. ``z0``, ``z2``, ``z1``, ``cond`` and the per-step noise.
        """
        cfg = self.cfg
        b = cond.shape[0]
        if z0.shape != (b, *self.chunk_shape):
            raise ValueError(f"z0 must be [B={b}, {cfg.model.horizon}, {cfg.model.action_dim}], got {list(z0.shape)}")
        name, n = sampler or cfg.sampler, num_steps or cfg.num_inference_steps
        lam = cfg.lambda_cfg if lambda_cfg is None else lambda_cfg
        fn = self.model_fn(cond, z1, z2, lam)
        return run_sampler(self.process, name, fn, z0, n, noise=noise, grad=grad, **self.sampler_options(name))

    def sampler_options(self, name: str) -> dict:
        """The config's options that sampler ``name`` takes (``eta`` for DDIM)."""
        return {k: v for k, v in {"eta": self.cfg.eta}.items() if k in get_sampler(name, self.process).options}

    def default_noise(self, generator: torch.Generator | None = None) -> NoiseSource:
        return default_noise(self.cfg.sampler, generator, **self.sampler_options(self.cfg.sampler))

    def unnormalize_actions(self, chunk: torch.Tensor) -> torch.Tensor:
        """Normalized chunk ``[B, 8, 2]`` -> env actions ``[B, 16]`` clipped to ``[-1, 1]``."""
        return self.act_norm.unnormalize(chunk).clamp(-1.0, 1.0).flatten(1)

    # ------------------------------------------------------------------------------------ Policy interface
    def compute_loss(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                     step: int = 0):
        missing = [k for k in BATCH_KEYS if k not in batch and not (k == "obs_state" and not self.cfg.model.state_dim)]
        if missing:
            raise KeyError(f"NavPolicy batch is missing key(s) {missing}; batches come from "
                           f"steerlab.nav.data.NavWindowDataset.batch (keys {list(BATCH_KEYS)})")
        cfg, icfg = self.cfg, self.cfg.model.intent
        dev, dt = self.model.pos_emb.device, self.model.pos_emb.dtype
        if cfg.rotate_first:
            if "obs_state" not in batch:
                raise KeyError("rotate_first finds first decisions by the robot state: the batch needs 'obs_state'")
            first = first_decision_rows(batch)
            k = torch.randint(4, (first.shape[0],), generator=generator, device=dev) * first.to(dev)
            batch = rotate_heading(batch, k)
        acts = torch.as_tensor(batch["actions"], device=dev).to(dt)
        b = acts.shape[0]
        acts = acts.reshape(b, *self.chunk_shape) if acts.dim() == 2 else acts
        if acts.shape != (b, *self.chunk_shape):
            raise ValueError(f"actions must be [B, {self.chunk_shape[0]}, {self.chunk_shape[1]}] or [B, "
                             f"{self.chunk_shape[0] * self.chunk_shape[1]}], got {list(batch['actions'].shape)}")
        goal_mask = torch.rand(b, generator=generator, device=dev) < cfg.goal_mask_prob
        cond = self.condition({**batch, "goal_mask": goal_mask})
        # distance head on the goal-conditioned rows
        keep_goal = (~goal_mask).to(dt)
        dist = self.model("dist_pred_net", obsgoal_cond=cond)
        dist_mse = (((dist - torch.as_tensor(batch["distance"], device=dev).to(dt)) ** 2) * keep_goal).sum() / keep_goal.sum().clamp(min=1)
        # intent
        x0 = self.act_norm.normalize(acts)
        z1 = self.encode_z1(batch["ref_traj"])
        drop1, drop2 = drop_masks(b, icfg.p_drop_z1, icfg.p_drop_z2, generator, dev)
        mu, logvar = self.model.intent.posterior(x0, z1, cond)
        z2 = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator, device=dev).to(dt)
        keep_z2 = (~drop2).to(dt)
        kl = (gaussian_kl(mu, logvar) * keep_z2).sum() / keep_z2.sum().clamp(min=1)
        latent = self.model.intent.latent(z1, z2, drop1, drop2)
        # diffusion
        t = self.process.sample_t(b, generator, dev)
        n = torch.randn(x0.shape, generator=generator, device=dev).to(dt)
        xt, t_model, target = self.process.training_pair(x0, n, t)
        pred = self.model("noise_pred_net", sample=xt, timestep=t_model, global_cond=cond, latent_z=latent)
        w = _mask_weights(torch.as_tensor(batch["action_mask"], device=dev), pred).to(dt)
        diff_mse = (((pred - target) ** 2) * w).sum() / w.sum().clamp(min=1)
        a = cfg.dist_weight
        loss = a * dist_mse + (1 - a) * diff_mse + icfg.kl_weight * kl
        return loss, {"loss": loss.item(), "dist_mse": dist_mse.item(), "diffusion_mse": diff_mse.item(),
                      "kl": kl.item()}

    def intent_for(self, obs: Mapping[str, torch.Tensor], b: int, generator=None, z2=None, level=None, z1=None):
        """``(z1, z2)`` for an observation batch: z1 as given, else encoded from ``obs["ref_traj"]`` (None without
        either); z2 as given, else from the prior N(0, I) (``generator``) at level z1z2, None at the lower levels."""
        level = level or self.cfg.inference_level
        if level == "none" or (z1 is None and obs.get("ref_traj") is None):
            return None, None
        if z1 is None:
            z1 = self.encode_z1(obs["ref_traj"])
        elif tuple(z1.shape) != (b, self.z1_dim):
            raise ValueError(f"z1 must be [{b}, {self.z1_dim}] (one coarse intent per observation), got {tuple(z1.shape)}")
        if z2 is None and level == "z1z2":
            z2 = torch.randn((b, self.z2_dim), generator=generator, device=z1.device).to(z1.dtype)
        return z1, (z2 if level == "z1z2" else None)

    def sample_chunk(self, obs, generator=None, *, z0=None, z2=None, noise=None, lambda_cfg=None, level=None, z1=None):
        """Normalized chunk ``[B, 8, 2]`` for a raw observation batch (no gradient); draws from ``generator`` in
        the order z2 (if needed), z0 (if not given), then the sampler's per-step noise. ``z1`` (``[B, d1]``)
        replaces the encoding of ``obs["ref_traj"]`` (e.g. an optimized coarse intent)."""
        with torch.no_grad():
            cond = self.condition(obs)
            b = cond.shape[0]
            z1, z2 = self.intent_for(obs, b, generator, z2, level, z1)
            if z0 is None:
                z0 = torch.randn((b, *self.chunk_shape), generator=generator, device=cond.device).to(cond.dtype)
            if noise is None:
                noise = self.default_noise(generator)
            return self.sample(cond, z0, z1, z2, noise=noise, grad="none", lambda_cfg=lambda_cfg)

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None, *, z0=None, z2=None, noise=None, lambda_cfg=None, level=None,
                             z1=None):
        """Env actions ``[B, 1, 16]`` for a raw observation batch (keys of :meth:`condition`, optional
        ``ref_traj [B, 32, 2]`` for the intent, or ``z1 [B, d1]`` directly, and ``goal_mask [B]``)."""
        return self.unnormalize_actions(self.sample_chunk(obs, generator, z0=z0, z2=z2, noise=noise,
                                                                 lambda_cfg=lambda_cfg, level=level, z1=z1))[:, None]

    def reset(self) -> None:
        super().reset()
        self._nav_hist: deque | None = None

    @torch.no_grad()
    def select_action(self, obs, generator=None, ref_traj=None):
        """One env observation dict (``occupancy``, ``state``, ``goal_rel``) -> env action ``[16]``; keeps the
        context frames (the first frame tiles the history). ``ref_traj [32, 2]`` selects the route intent."""
        frame = (torch.as_tensor(np.asarray(obs["occupancy"]), dtype=torch.float32),
                 torch.as_tensor(np.asarray(obs["state"]), dtype=torch.float32))
        if getattr(self, "_nav_hist", None) is None:
            self._nav_hist = deque([frame] * self.n_obs_steps, maxlen=self.n_obs_steps)
        else:
            self._nav_hist.append(frame)
        batch = {"obs_img": torch.stack([f[0] for f in self._nav_hist])[None],
                 "obs_state": torch.stack([f[1] for f in self._nav_hist])[None]}
        if obs.get("goal_rel") is not None:
            batch["goal_rel"] = torch.as_tensor(np.asarray(obs["goal_rel"]), dtype=torch.float32)[None]
        if ref_traj is not None:
            batch["ref_traj"] = torch.as_tensor(np.asarray(ref_traj), dtype=torch.float32)[None]
        return self.predict_action_chunk(batch, generator=generator)[0, 0]

    @torch.no_grad()
    def monitor(self, batch, generator=None) -> dict[str, float]:
        """Normalized MSE of sampled chunks (z1 from ``ref_traj``, z2 from the prior) against the demonstrations,
        and the distance head's absolute error (goal-conditioned)."""
        batch = to_device(batch, self.model.pos_emb.device)
        x = self.act_norm.normalize(torch.as_tensor(batch["actions"]).float().reshape(-1, *self.chunk_shape))
        a = self.sample_chunk({k: v for k, v in batch.items() if k != "goal_mask"}, generator)
        d = self.model("dist_pred_net", obsgoal_cond=self.condition(batch))
        return {"action_mse": float(((a - x) ** 2).mean()),
                "dist_mae": float((d - torch.as_tensor(batch["distance"]).float()).abs().mean())}


def _mask_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``action_mask`` ``[B]`` (per sample) or ``[B, H]`` (per waypoint) -> weights broadcast to ``like [B, H, A]``."""
    b, h, _ = like.shape
    if mask.shape == (b,):
        return mask.to(like.dtype)[:, None, None].expand_as(like)
    if mask.shape == (b, h):
        return mask.to(like.dtype)[:, :, None].expand_as(like)
    raise ValueError(f"action_mask must be [B={b}] or [B, {h}], got {list(mask.shape)}")
