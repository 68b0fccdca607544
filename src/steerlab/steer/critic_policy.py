"""A generative policy with an energy critic beside it: InfoNCE training in three modes and test-time
re-ranking / correction / guidance. See :mod:`steerlab.steer.critic` for the energy model and its sign and
mask conventions.

Modes (``EnergyPolicyConfig.mode``):
- ``monitor``: the policy trains as usual; the energy loss is computed and logged, the critic is not trained.
- ``joint``: policy and critic train together, ``loss = policy loss + energy_weight * energy loss``.
- ``energy-only``: the policy is frozen (no gradient, no optimizer state: its parameters have
  ``requires_grad=False`` and the training loop optimizes only parameters that require grad); only the critic
  trains. Start it from a trained policy with ``base_run``.

Context tokens: one token per observation frame (the min-max-normalized frame: agent, velocity, goals), all
valid — the same observations the policy conditions on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from steerlab.generative.policy import DiffusionConfig, FlowConfig
from steerlab.policy import Policy
from steerlab.registry import build_policy, register_policy
from steerlab.sampling.process import energy_guided
from steerlab.steer.critic import CriticConfig, EnergyCritic, correct_actions, info_nce_energy, rerank
from steerlab.train.checkpoint import CheckpointError, latest_checkpoint, load_weights
from steerlab.train.config import config_from_dict_policy


@dataclass(frozen=True)
class TestTime:
    """How the critic is used when acting (all off: the plain policy)."""

    __test__ = False  # not a pytest class

    rerank: int = 1
    """sample this many chunks and execute the lowest-energy one (1: off)"""
    correct_steps: int = 0
    """gradient-correction steps a <- a - alpha dE/da on the executed chunk (0: off)"""
    alpha: float = 0.1
    clip_frac: float = 0.05
    """each correction step is clipped to this fraction of the (normalized) action range"""
    guidance: float = 0.0
    """energy guidance weight during sampling, evaluated at the predicted clean chunk (0: off)"""

    def label(self) -> str:
        parts = []
        if self.rerank > 1:
            parts.append(f"rerank {self.rerank}")
        if self.correct_steps:
            parts.append(f"correct {self.correct_steps}x{self.alpha:g}")
        if self.guidance:
            parts.append(f"guide {self.guidance:g}")
        return " + ".join(parts) or "base"


@dataclass(frozen=True)
class EnergyPolicyConfig:
    kind: Literal["energy"] = "energy"
    base: DiffusionConfig | FlowConfig = field(default_factory=FlowConfig)
    """the generative policy"""
    base_run: str | None = None
    """run directory of a trained base policy to start from (its checkpoint has no energy weights)"""
    mode: Literal["monitor", "joint", "energy-only"] = "energy-only"
    energy_weight: float = 1.0
    """weight of the energy loss in joint mode"""
    temperature: float = 0.5
    """InfoNCE temperature (the seed: 0.5)"""
    width: int = 128
    heads: int = 4
    depth: int = 2
    """dense layers of the critic's residual encoders and head (even)"""
    dropout: float = 0.0
    pooling: Literal["mean", "attention"] = "mean"
    act_dim: int | None = None
    """score only the first act_dim action dims (None: all)"""
    n_policy: int = 4
    """negatives sampled from the policy (no gradient)"""
    n_perturbed: int = 6
    """perturbed demonstrations, spread over perturb_scales (normalized units)"""
    perturb_scales: tuple[float, ...] = (0.05, 0.1, 0.2)
    n_uniform: int = 2
    """uniform chunks in the normalized box [-1, 1]"""
    n_batch: int = 4
    """demonstrations of other contexts in the batch"""
    test_time: TestTime = field(default_factory=TestTime)


@register_policy("energy", EnergyPolicyConfig)
class EnergyPolicy(Policy):
    def __init__(self, cfg: EnergyPolicyConfig, obs_dim: int, act_dim: int):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.base = build_policy(cfg.base, obs_dim, act_dim)
        self.n_obs_steps, self.n_action_steps = self.base.n_obs_steps, self.base.n_action_steps
        self.critic = EnergyCritic(CriticConfig(context_dim=obs_dim, act_dim=cfg.act_dim or act_dim,
                                                horizon=cfg.base.horizon, width=cfg.width, heads=cfg.heads,
                                                encoder_depth=cfg.depth, dropout=cfg.dropout, pooling=cfg.pooling))
        self.test_time = cfg.test_time
        self.missing_energy_keys: list[str] | None = None
        if cfg.mode == "energy-only":
            self.base.requires_grad_(False)
        if cfg.mode == "monitor":
            self.critic.requires_grad_(False)

    def fit_normalizers(self, data, *, action_low=None, action_high=None, episode_ends=None, seed: int = 0):
        """Start of training: with ``base_run`` load the trained base policy (weights and the normalizers it was
        trained with), else fit the base policy's normalizers. A trained energy run's checkpoint holds all of it,
        so evaluating one never reads ``base_run``."""
        if self.cfg.base_run:
            self.missing_energy_keys = load_base_policy(self, self.cfg.base_run)
        else:
            self.base.fit_normalizers(data, action_low=action_low, action_high=action_high, episode_ends=episode_ends,
                                      seed=seed)

    @property
    def chunk_shape(self):
        return self.base.chunk_shape

    def context(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens ``[B, n_obs, Do]`` (one per normalized frame) and their mask (True = valid)."""
        self.base.check_obs(obs, self.obs_dim)
        tokens = self.base.obs_norm.normalize(obs)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool)

    def energy(self, obs: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        """Energies of normalized chunks ``[B, N, H, A]`` (or ``[B, H, A]`` -> ``[B, 1]``) for raw ``obs``."""
        tokens, mask = self.context(obs)
        return self.critic(tokens, mask, chunks)

    # ---------------------------------------------------------------------------------------- training

    def negatives(self, obs, x, generator=None) -> torch.Tensor:
        """``[B, K, H, A]`` normalized negatives for positives ``x [B, H, A]``."""
        c, b = self.cfg, x.shape[0]
        parts = []
        if c.n_policy:
            cond = self.base.condition(obs).repeat_interleave(c.n_policy, 0)
            z = torch.randn((b * c.n_policy, *x.shape[1:]), generator=generator)
            with torch.no_grad():
                s = self.base.sample(cond, z, noise=self.base.default_noise(generator), grad="none")
            parts.append(s.view(b, c.n_policy, *x.shape[1:]))
        if c.n_perturbed:
            scales = torch.tensor(c.perturb_scales, dtype=x.dtype)[torch.arange(c.n_perturbed) % len(c.perturb_scales)]
            eps = torch.randn((b, c.n_perturbed, *x.shape[1:]), generator=generator)
            parts.append(x[:, None] + scales.view(1, -1, 1, 1) * eps)
        if c.n_uniform:
            parts.append(torch.rand((b, c.n_uniform, *x.shape[1:]), generator=generator) * 2 - 1)
        if c.n_batch:
            k = min(c.n_batch, b - 1)
            parts.append(torch.stack([x.roll(i + 1, 0) for i in range(k)], 1))
        if not parts:
            raise ValueError("the energy critic needs at least one source of negatives")
        return torch.cat(parts, 1)

    def energy_loss(self, batch, generator=None):
        x = self.base.act_norm.normalize(batch["action"])
        neg = self.negatives(batch["obs"], x, generator)
        cand = torch.cat([x[:, None], neg], 1)
        k = min(self.cfg.n_batch, x.shape[0] - 1)
        critic = self.critic
        if k > 0 and not (critic.training and critic.cfg.dropout > 0):
            # the last k negatives are the other rows' demonstrations (x rolled over the batch, see negatives):
            # their action tokens are the positives' rolled, so they are encoded once (same values, and the same
            # gradients: autograd sums over both uses). Not with positional dropout, whose masks must differ.
            tokens, mask = self.context(batch["obs"])
            q = critic.encode_actions(cand[:, : cand.shape[1] - k])
            q = torch.cat([q, torch.stack([q[:, 0].roll(i + 1, 0) for i in range(k)], 1)], 1)
            e = critic.energy_encoded(critic.prepare(tokens, mask), q)
        else:
            e = self.energy(batch["obs"], cand)
        return info_nce_energy(e[:, 0], e[:, 1:], self.cfg.temperature)

    def compute_loss(self, batch, generator=None, step: int = 0):
        mode = self.cfg.mode
        metrics = {}
        total = None
        if mode != "energy-only":
            total, m = self.base.compute_loss(batch, generator, step=step)
            metrics.update({f"policy_{k}": v for k, v in m.items()})
        if mode == "monitor":
            with torch.no_grad():
                _, m = self.energy_loss(batch, generator)
        else:
            el, m = self.energy_loss(batch, generator)
            total = el if total is None else total + self.cfg.energy_weight * el
        metrics.update(m)
        metrics["loss"] = total.item()
        return total, metrics

    @torch.no_grad()
    def monitor(self, batch, generator=None) -> dict[str, float]:
        """On a (held-out, when the run has ``val_episodes``) batch: the base policy's chunk MSE, and the
        critic's energy loss and ranking accuracy."""
        was = self.training
        self.eval()
        out = self.base.monitor(batch, generator)
        _, m = self.energy_loss(batch, generator)
        out.update({"energy_loss": m["energy_loss"], "rank_acc": m["rank_acc"], "energy_gap": m["energy_gap"]})
        self.train(was)
        return out

    # ------------------------------------------------------------------------------------------ acting

    def guided_denoiser(self, cond, cache, weight: float):
        """The base policy's denoiser with energy guidance of weight ``weight``
        (:func:`~steerlab.sampling.process.energy_guided`), in the base's own output convention, so
        :meth:`GenerativePolicy.sample` runs it with any of its samplers: the critic's energy gradient w.r.t.
        ``x_t`` at the predicted clean chunk is added to the velocity (flow) or to eps scaled by
        ``sqrt(1 - abar)`` (diffusion; ``abar`` also at RES's fractional timesteps).

        ``cache``: the critic's :meth:`~steerlab.steer.critic.EnergyCritic.prepare` of the ``B`` contexts; the
        denoiser's rows are ``B * n`` (each context's ``n`` samples consecutive) and are scored as ``[B, n]``."""
        b = cache.batch

        def energy_sum(x0):
            return self.critic.energy(cache, x0.reshape(b, -1, *x0.shape[1:])).sum()

        return energy_guided(self.base.process, self.base.denoiser(cond), energy_sum, weight)

    def sample_normalized(self, obs, generator=None, *, z=None, noise=None, tt: TestTime | None = None) -> torch.Tensor:
        tt = tt or self.test_time
        base = self.base
        obs = torch.as_tensor(obs, dtype=torch.float32)
        b = obs.shape[0]
        n = max(1, tt.rerank)
        tokens, mask = self.context(obs)
        cond = base.condition(obs)
        cond_n = cond.repeat_interleave(n, 0) if n > 1 else cond
        if z is None:
            z = torch.randn((b * n, *base.chunk_shape), generator=generator)
        elif n > 1 and z.shape[0] == b:
            z = torch.cat([z[:, None], torch.randn((b, n - 1, *base.chunk_shape), generator=generator)], 1).flatten(0, 1)
        noise = noise or base.default_noise(generator)
        if tt.guidance:
            with torch.no_grad():  # encoded once, shared by the n samples of a row and every denoising step
                cache = self.critic.prepare(tokens, mask)
            chunks = base.sample(cond_n, z, noise=noise, grad="none",
                                 denoiser=self.guided_denoiser(cond_n, cache, tt.guidance))
        else:
            chunks = base.sample(cond_n, z, noise=noise, grad="none")
        if (n > 1 or tt.correct_steps) and not tt.guidance:
            # the context is encoded and projected to keys/values once, then shared by the n candidates and
            # every correction step (no gradient needed through it: correction differentiates w.r.t. actions)
            with torch.no_grad():
                cache = self.critic.prepare(tokens, mask)
        if n > 1:
            chunks, _ = rerank(lambda c: self.critic.energy(cache, c), chunks.view(b, n, *base.chunk_shape))
        if tt.correct_steps:
            chunks = correct_actions(lambda c: self.critic.energy(cache, c)[:, 0], chunks, steps=tt.correct_steps,
                                     alpha=tt.alpha, clip_frac=tt.clip_frac,
                                     grad_fn=lambda c: self.critic.action_grad(cache, c[:, None])[1][:, 0])
        return chunks

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None, *, z=None, noise=None, test_time: TestTime | None = None):
        return self.base.unnormalize_actions(self.sample_normalized(obs, generator, z=z, noise=noise, tt=test_time))


def load_base_policy(policy: EnergyPolicy, run_dir: str | Path) -> list[str]:
    """Load a trained base policy's checkpoint (EMA weights if it has them) into ``policy.base``.

    The checkpoint has no energy weights: they are reported (the returned list names every missing
    ``critic.*`` key) and keep their fresh initialization. Any other mismatch — a base key missing from the
    checkpoint, a key the policy does not have, a config that differs — is an error naming the keys."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"base_run {run_dir} is not a run directory (no config.json)")
    run_cfg = json.loads((run_dir / "config.json").read_text())
    base_cfg = config_from_dict_policy(run_cfg["policy"])
    if base_cfg != policy.cfg.base:
        diff = {k: (getattr(base_cfg, k, None), getattr(policy.cfg.base, k, None))
                for k in {f.name for f in dataclasses.fields(policy.cfg.base)}
                if getattr(base_cfg, k, None) != getattr(policy.cfg.base, k, None)}
        raise CheckpointError(f"base_run {run_dir} was trained with a different policy config: {diff} "
                              f"(checkpoint value, this config's value); set --policy.base to match")
    ckpt = latest_checkpoint(run_dir)
    state = load_weights(ckpt, ema=run_cfg.get("ema_decay") is not None)
    mapped = {f"base.{k}": v for k, v in state.items()}
    missing, unexpected = policy.load_state_dict(mapped, strict=False)
    not_energy = [k for k in missing if not k.startswith("critic.")]
    if unexpected or not_energy:
        raise CheckpointError(f"{ckpt}: keys do not match the base policy: missing {not_energy}, unexpected {list(unexpected)}")
    energy_missing = sorted(k for k in missing if k.startswith("critic."))
    print(f"[steerlab] loaded base policy from {ckpt}; energy weights not in it (initialized fresh, "
          f"{len(energy_missing)} keys): {', '.join(energy_missing)}")
    return energy_missing


def set_test_time(policy, tt: TestTime):
    if not isinstance(policy, EnergyPolicy):
        raise ValueError(f"re-ranking and correction need an energy critic run; this run holds a "
                         f"{type(policy).__name__}")
    policy.test_time = tt
    return policy


__all__ = ["EnergyPolicy", "EnergyPolicyConfig", "TestTime", "load_base_policy", "set_test_time"]
