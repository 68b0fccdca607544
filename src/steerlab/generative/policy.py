"""Diffusion and flow-matching policies over action chunks — one class, two generative processes.

- **diffusion** (diffusion_policy): DDPM training with the squared-cosine schedule, the network predicting
  diffusers' ``prediction_type`` (``epsilon``, ``sample`` = the clean chunk, or ``v_prediction``), sampled by DDPM
  ancestral, DDIM(eta) or RES.
- **flow** (pi0): ``x_t = t noise + (1 - t) action``, the network predicting the velocity ``noise - action``
  (pi0) or the clean chunk (``sample``), training times ``t ~ Beta(a, b) * 0.999 + 0.001`` (pi0: a = 1.5, b = 1),
  sampled by Euler (pi0), Heun or RES from ``t = 1`` to ``t = 0``.

The parameterization lives in a process object (:mod:`steerlab.sampling.process`) and the samplers in the
registry (:func:`steerlab.sampling.run_sampler`); this module only binds the network and the conditioning.

Both condition on the min-max-normalized observation history (flattened) and predict a min-max-normalized
chunk ``[B, horizon, A]`` of which the first ``n_action_steps`` are executed (receding horizon). The
denoiser is an MLP (low-dimensional tasks) or diffusion_policy's ConditionalUnet1D with FiLM.

For steering, :meth:`GenerativePolicy.sample` exposes the chain as a function of the initial noise ``z``,
the per-step noise source and the gradient mode (see :mod:`steerlab.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from steerlab.data.normalize import MinMax
from steerlab.nets.denoiser_mlp import DenoiserMLP
from steerlab.nets.unet1d import ConditionalUnet1D
from steerlab.policy import Policy
from steerlab.registry import register_policy
from steerlab.sampling import (
    DiffusionProcess, FlowProcess, NoiseSource, alphas_cumprod, default_noise, get_sampler, run_sampler,
    squaredcos_cap_v2,
)

FLOW_TIME_SCALE = 1000.0


@dataclass(frozen=True)
class DenoiserConfig:
    arch: Literal["mlp", "unet"] = "mlp"
    """'mlp' (flattened chunk, residual MLP) or 'unet' (ConditionalUnet1D with FiLM)"""
    width: int = 256
    """MLP hidden width"""
    depth: int = 4
    """MLP dense layers in the residual stack (even)"""
    time_embed_dim: int = 64
    """size of the sinusoidal time embedding"""
    down_dims: tuple[int, ...] = (64, 128, 256)
    """UNet channel widths per level (diffusion_policy: 256, 512, 1024)"""
    kernel_size: int = 5
    n_groups: int = 8


@dataclass(frozen=True)
class DiffusionConfig:
    kind: Literal["diffusion"] = "diffusion"
    horizon: int = 16
    """predicted chunk length"""
    n_obs_steps: int = 2
    """observation history length"""
    n_action_steps: int = 8
    """actions executed from each chunk before predicting again"""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    num_train_timesteps: int = 100
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    """what the network outputs (diffusers' names): the noise, the clean chunk, or v"""
    sampler: Literal["ddpm", "ddim", "res"] = "ddpm"
    """inference sampler"""
    num_inference_steps: int = 100
    eta: float = 0.0
    """DDIM stochasticity"""
    clip_sample: float | None = 1.0
    """clip the predicted clean chunk to [-c, c] in DDPM/DDIM (None: no clip)"""
    use_clipped_model_output: bool = False
    """DDIM with clip_sample: re-derive eps from the clipped clean chunk (diffusers'
    DDIMScheduler.step(use_clipped_model_output=True)); False keeps the model's eps (diffusers' default, which
    diffusion_policy uses)"""
    stats_samples: int | None = None
    """rows used for the normalizer statistics; None: all"""
    obs_range_eps: float = 1e-4
    """observation dimensions whose demonstrated range is below this are shifted, not scaled, by the min-max
    normalizer (diffusion_policy's range_eps): a dimension constant in the demos that jitters by ~1e-6 in the
    simulator would otherwise be divided by float32 epsilon; 0: divide anyway"""

    time_scale = 1.0  # the network embeds the training index itself

    def process(self) -> DiffusionProcess:
        return DiffusionProcess(alphas_cumprod(squaredcos_cap_v2(self.num_train_timesteps)), self.prediction_type,
                                self.clip_sample, self.use_clipped_model_output)


@dataclass(frozen=True)
class FlowConfig:
    kind: Literal["flow"] = "flow"
    horizon: int = 16
    """predicted chunk length"""
    n_obs_steps: int = 2
    """observation history length"""
    n_action_steps: int = 8
    """actions executed from each chunk before predicting again"""
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    prediction_type: Literal["velocity", "sample"] = "velocity"
    """what the network outputs: the velocity noise - chunk (pi0) or the clean chunk"""
    time_beta: tuple[float, float] = (1.5, 1.0)
    """training times t ~ Beta(a, b) * 0.999 + 0.001 (t = 1 is noise)"""
    sampler: Literal["euler", "heun", "res"] = "euler"
    """inference sampler"""
    num_inference_steps: int = 10
    stats_samples: int | None = None
    """rows used for the normalizer statistics; None: all"""
    obs_range_eps: float = 1e-4
    """observation dimensions whose demonstrated range is below this are shifted, not scaled, by the min-max
    normalizer (diffusion_policy's range_eps): a dimension constant in the demos that jitters by ~1e-6 in the
    simulator would otherwise be divided by float32 epsilon; 0: divide anyway"""

    time_scale = FLOW_TIME_SCALE  # flow times in [0, 1] are embedded as t * 1000, the range of diffusion indices

    def process(self) -> FlowProcess:
        return FlowProcess(self.prediction_type, self.time_beta)


GenerativeConfig = DiffusionConfig | FlowConfig


def build_denoiser(cfg: DenoiserConfig, horizon: int, act_dim: int, cond_dim: int) -> torch.nn.Module:
    if cfg.arch == "mlp":
        return DenoiserMLP(horizon, act_dim, cond_dim, cfg.width, cfg.depth, cfg.time_embed_dim)
    if cfg.arch == "unet":
        return ConditionalUnet1D(act_dim, cond_dim, cfg.time_embed_dim, tuple(cfg.down_dims), cfg.kernel_size, cfg.n_groups)
    raise ValueError(f"unknown denoiser arch {cfg.arch!r}; use 'mlp' or 'unet'")


@register_policy("diffusion", DiffusionConfig)
@register_policy("flow", FlowConfig)
class GenerativePolicy(Policy):
    def __init__(self, cfg: GenerativeConfig, obs_dim: int, act_dim: int):
        super().__init__()
        if cfg.n_action_steps > cfg.horizon:
            raise ValueError(f"n_action_steps ({cfg.n_action_steps}) cannot exceed horizon ({cfg.horizon})")
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.n_obs_steps, self.n_action_steps = cfg.n_obs_steps, cfg.n_action_steps
        self.net = build_denoiser(cfg.denoiser, cfg.horizon, act_dim, obs_dim * cfg.n_obs_steps)
        self.obs_norm = MinMax(obs_dim, cfg.obs_range_eps)
        self.act_norm = MinMax(act_dim)
        self.register_buffer("env_low", torch.zeros(act_dim))
        self.register_buffer("env_high", torch.ones(act_dim))
        self.process = cfg.process()

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (self.cfg.horizon, self.act_dim)

    @property
    def abar(self) -> torch.Tensor:
        """The diffusion process's cumulative alphas (float64 ``[T]``)."""
        if not isinstance(self.process, DiffusionProcess):
            raise AttributeError("a flow policy has no cumulative-alpha table")
        return self.process.abar

    def fit_normalizers(self, data, *, action_low=None, action_high=None, episode_ends=None, seed: int = 0):
        """Min-max normalizers of ``data["obs"]`` and ``data["action"]`` (see :class:`steerlab.policy.Policy`)."""
        self.obs_norm = MinMax.fit(data["obs"], self.cfg.stats_samples, seed, range_eps=self.cfg.obs_range_eps)
        self.act_norm = MinMax.fit(data["action"], self.cfg.stats_samples, seed)
        self.set_action_bounds(action_low, action_high)

    # ------------------------------------------------------------------------------------------- the chain

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw observation history ``[B, n_obs, Do]`` -> conditioning vector ``[B, n_obs * Do]``."""
        self.check_obs(obs, self.obs_dim)
        return self.obs_norm.normalize(obs).flatten(1)

    def denoiser(self, cond: torch.Tensor):
        """The network as the sampler sees it, ``model_fn(x, t)`` in the process's time convention (diffusion:
        training indices; flow: ``t`` in [0, 1]), returning the configured ``prediction_type``."""
        scale = self.cfg.time_scale
        return lambda x, t: self.net(x, t * scale, cond.to(x.dtype))

    def sampler_options(self, name: str) -> dict:
        """The config's options that sampler ``name`` takes (``eta`` for DDIM)."""
        spec = get_sampler(name, self.process)
        return {k: v for k, v in {"eta": getattr(self.cfg, "eta", 0.0)}.items() if k in spec.options}

    def sample(self, cond: torch.Tensor, z: torch.Tensor, *, noise: NoiseSource | None = None, grad="none",
               sampler: str | None = None, num_steps: int | None = None, denoiser=None) -> torch.Tensor:
        """Normalized chunk ``[B, H, A]`` from the initial noise ``z [B, H, A]``.

        ``noise`` is the per-step noise source (default: the sampler's, :func:`~steerlab.sampling.default_noise`);
        ``grad`` is ``none`` | ``full`` | ``checkpoint``; ``sampler`` / ``num_steps`` override the config's inference
        sampler; ``denoiser`` replaces :meth:`denoiser` ``(cond)`` with a function of the same convention (e.g. one
        that adds a guidance term), run by whichever sampler applies.
        """
        cfg = self.cfg
        if z.shape[1:] != self.chunk_shape or z.shape[0] != cond.shape[0]:
            raise ValueError(f"z must be [B={cond.shape[0]}, {cfg.horizon}, {self.act_dim}], got {list(z.shape)}")
        name, n = sampler or cfg.sampler, num_steps or cfg.num_inference_steps
        fn = self.denoiser(cond) if denoiser is None else denoiser
        return run_sampler(self.process, name, fn, z, n, noise=noise, grad=grad, **self.sampler_options(name))

    def default_noise(self, generator: torch.Generator | None) -> NoiseSource:
        return default_noise(self.cfg.sampler, generator, **self.sampler_options(self.cfg.sampler))

    def unnormalize_actions(self, chunk: torch.Tensor) -> torch.Tensor:
        a = self.act_norm.unnormalize(chunk)
        return torch.maximum(torch.minimum(a, self.env_high), self.env_low)

    # ---------------------------------------------------------------------------------- Policy interface

    def compute_loss(self, batch, generator=None, step: int = 0):
        cond = self.condition(batch["obs"])
        x = self.act_norm.normalize(batch["action"])
        b = x.shape[0]
        n = torch.randn(x.shape, generator=generator, device=x.device)
        t = self.process.sample_t(b, generator, x.device)
        xt, t_model, target = self.process.training_pair(x, n, t)
        pred = self.denoiser(cond)(xt, t_model)
        w = batch["action_mask"].to(x.dtype).unsqueeze(-1)
        loss = (((pred - target) ** 2) * w).sum() / (w.sum() * x.shape[-1]).clamp(min=1)
        return loss, {"loss": loss.item()}

    def sample_chunk(self, obs: torch.Tensor, generator: torch.Generator | None = None, *,
                     z: torch.Tensor | None = None, noise: NoiseSource | None = None) -> torch.Tensor:
        """Normalized chunk for raw observations; ``z`` defaults to a draw from ``generator``."""
        cond = self.condition(torch.as_tensor(obs, dtype=torch.float32, device=self.env_low.device))
        if z is None:
            z = torch.randn((cond.shape[0], *self.chunk_shape), generator=generator, device=cond.device)
        return self.sample(cond, z, noise=noise or self.default_noise(generator), grad="none")

    @torch.no_grad()
    def predict_action_chunk(self, obs, generator=None, *, z=None, noise=None):
        """Raw action chunk ``[B, H, A]``; steering inputs (keyword-only): ``z`` the initial noise ``[B, H, A]``
        (default: a draw from ``generator``) and ``noise`` the per-step source (default: the sampler's)."""
        return self.unnormalize_actions(self.sample_chunk(obs, generator, z=z, noise=noise))

    @torch.no_grad()
    def monitor(self, batch, generator=None) -> dict[str, float]:
        """MSE (normalized units) of the sampled chunk's executed part against the demonstration."""
        k = self.n_action_steps
        a = self.sample_chunk(batch["obs"], generator)[:, :k]
        x = self.act_norm.normalize(batch["action"][:, :k])
        w = batch["action_mask"][:, :k].to(x.dtype).unsqueeze(-1)
        return {"action_mse": float((((a - x) ** 2) * w).sum() / (w.sum() * x.shape[-1]).clamp(min=1))}
