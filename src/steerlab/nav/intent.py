"""The two-stage latent intent of the navigation policy: z1 says *which route*, z2 *how it is driven*.

- **z1** (coarse, ``[B, d_z1]``): a deterministic encoding of the normalized reference trajectory
  ``ref_traj [B, 32, 2]`` (the planner's route in the robot frame) by a small MLP. It has no prior: at test time
  z1 comes from a route (the planner's, or another one to switch routes), or it is dropped (null).
- **z2** (fine, ``[B, d_z2]``): VAE-style. In training, ``z2 ~ q(z2 | demonstrated chunk, z1, obs)``
  (a diagonal Gaussian from an MLP on the normalized chunk, z1 and the observation embedding, reparameterized)
  and the loss adds ``kl_weight * KL(q || p)``. At test time ``z2 ~ p``.

**Prior choice: the standard normal p(z2) = N(0, I)**, not a learned conditional prior p(z2 | z1, obs). Reasons:
(1) z2 is then optimized exactly like the sampler's initial noise z0 (both unit isotropic Gaussians), so the
same prior terms apply to both (``0.5 ||z2||^2`` log-likelihood, chi-square norm bounds) and the
plausibility criterion "z2 inside the prior's 99th percentile" is a closed-form chi-square(d_z2) quantile that
does not depend on a network's calibration; (2) a learned prior is one more network to fit and, with a small
dataset, tends to collapse to a narrow variance that makes every optimized z2 look implausible. The cost: the
KL to N(0, I) charges the posterior for all the information it carries, which the conditioning on z1 and the
observation keeps to the residual "how". :func:`gaussian_kl` is general (any diagonal Gaussian pair) so a
conditional prior can be added later without changing the loss code.

**Dropout for classifier-free guidance.** Per training row, independently: with probability ``p_drop_z1`` drop
z1 *and* z2 (level "none"); otherwise drop z2 with probability ``p_drop_z2`` (level "z1"); else keep both
("z1+z2"). Dropped parts are replaced by learned null embeddings (``null_z1``, ``null_z2``), so the three levels
are ``[null_z1 | null_z2]``, ``[z1 | null_z2]``, ``[z1 | z2]`` -- this layout ``[z1 part | z2 part]`` is the
``latent_z`` of :meth:`~steerlab.nav.model.NavModel.noise_pred_net`. The expected level frequencies are
``p1``, ``(1 - p1) p2``, ``(1 - p1)(1 - p2)``.

**Guidance formula** (:func:`guided_eps`), the nested two-level form::

    eps = eps_none + l1 (eps_z1 - eps_none) + l2 (eps_z1z2 - eps_z1)

With a single ``lambda_cfg = l`` (``l1 = l2 = l``) the ``eps_z1`` terms cancel and it is the ordinary
``eps = eps_none + l (eps_cond - eps_none)`` with ``eps_cond`` the conditional prediction at whatever level the
latent holds (2 network calls). ``l = 0``: unconditional; ``l = 1``: plain conditional; ``l > 1``: stronger
adherence. A pair ``(l1, l2)`` weighs route and style separately (3 calls).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IntentConfig:
    ref_len: int = 32
    """points of the reference trajectory"""
    ref_dim: int = 2
    z1_dim: int = 8
    """coarse intent size"""
    z2_dim: int = 4
    """fine intent size"""
    hidden: int = 64
    """hidden width of the z1 encoder and the z2 posterior"""
    p_drop_z1: float = 0.1
    """training probability of dropping z1 (and with it z2): level 'none'"""
    p_drop_z2: float = 0.2
    """training probability of dropping z2 when z1 is kept: level 'z1'"""
    kl_weight: float = 1e-3
    """beta: weight of KL(q(z2 | chunk, z1, obs) || N(0, I)) in the loss"""
    logvar_range: tuple[float, float] = (-8.0, 4.0)
    """the posterior log-variance is clamped into this range"""


# ----------------------------------------------------------------------------------------- pure functions
def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | None = None,
                logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` of diagonal Gaussians, summed over the last axis -> ``[...]``.

    ``0.5 * sum(logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)``; ``mu_p`` / ``logvar_p``
    default to 0 (the standard normal prior).
    """
    mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p
    logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1).sum(-1)


def drop_masks(b: int, p_drop_z1: float, p_drop_z2: float, generator: torch.Generator | None = None,
               device=None):
    """Independent CFG dropout for ``b`` rows -> ``(drop_z1 [b], drop_z2 [b])`` bool; ``drop_z1`` implies ``drop_z2``.

    Draws ``u1, u2 ~ U[0, 1)`` (in that order, ``[b]`` each, from ``generator``): ``drop_z1 = u1 < p_drop_z1``,
    ``drop_z2 = drop_z1 | (u2 < p_drop_z2)``.
    """
    for name, p in (("p_drop_z1", p_drop_z1), ("p_drop_z2", p_drop_z2)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    u1 = torch.rand(b, generator=generator, device=device)
    u2 = torch.rand(b, generator=generator, device=device)
    d1 = u1 < p_drop_z1
    return d1, d1 | (u2 < p_drop_z2)


def guided_eps(eps_none: torch.Tensor, eps_z1: torch.Tensor | None, eps_z1z2: torch.Tensor, l1: float,
               l2: float | None = None) -> torch.Tensor:
    """Classifier-free guidance over the levels none / z1 / z1+z2 (module docstring).

    ``l2=None``: ``eps_none + l1 (eps_z1z2 - eps_none)`` (``eps_z1`` unused; ``eps_z1z2`` is then "the conditional
    prediction", whatever its level). Otherwise ``eps_none + l1 (eps_z1 - eps_none) + l2 (eps_z1z2 - eps_z1)``.
    """
    if l2 is None:
        return eps_none + l1 * (eps_z1z2 - eps_none)
    if eps_z1 is None:
        raise ValueError("the nested form (l1, l2) needs eps_z1")
    return eps_none + l1 * (eps_z1 - eps_none) + l2 * (eps_z1z2 - eps_z1)


# ------------------------------------------------------------------------------------------------ module
class TwoStageIntent(nn.Module):
    """z1 encoder, z2 posterior and the null embeddings; ``latent_dim = z1_dim + z2_dim``.

    ``obs_dim`` is the observation-embedding size the posterior reads; ``chunk_numel`` the flattened size of a
    normalized action chunk (``8 * 2``).
    """

    def __init__(self, cfg: IntentConfig, obs_dim: int, chunk_numel: int):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.z1_enc = nn.Sequential(nn.Linear(cfg.ref_len * cfg.ref_dim, h), nn.Mish(), nn.Linear(h, h), nn.Mish(),
                                    nn.Linear(h, cfg.z1_dim))
        self.posterior_net = nn.Sequential(nn.Linear(chunk_numel + cfg.z1_dim + obs_dim, h), nn.Mish(),
                                           nn.Linear(h, h), nn.Mish(), nn.Linear(h, 2 * cfg.z2_dim))
        self.null_z1 = nn.Parameter(torch.randn(cfg.z1_dim) * 0.1)
        self.null_z2 = nn.Parameter(torch.randn(cfg.z2_dim) * 0.1)

    @property
    def latent_dim(self) -> int:
        return self.cfg.z1_dim + self.cfg.z2_dim

    def encode_z1(self, ref_traj: torch.Tensor) -> torch.Tensor:
        """Normalized reference trajectory ``[B, ref_len, ref_dim]`` -> z1 ``[B, z1_dim]``."""
        c = self.cfg
        if ref_traj.dim() != 3 or ref_traj.shape[1:] != (c.ref_len, c.ref_dim):
            raise ValueError(f"ref_traj must be [B, {c.ref_len}, {c.ref_dim}], got {list(ref_traj.shape)}")
        return self.z1_enc(ref_traj.flatten(1).to(self.null_z1.dtype))

    def posterior(self, chunk: torch.Tensor, z1: torch.Tensor, obs_emb: torch.Tensor):
        """``q(z2 | chunk [B, H, A] normalized, z1 [B, d1], obs_emb [B, E])`` -> ``(mu, logvar)`` each ``[B, d2]``."""
        out = self.posterior_net(torch.cat([chunk.flatten(1), z1, obs_emb], -1).to(self.null_z1.dtype))
        mu, logvar = out.chunk(2, -1)
        return mu, logvar.clamp(*self.cfg.logvar_range)

    def latent(self, z1: torch.Tensor | None, z2: torch.Tensor | None, drop_z1: torch.Tensor | None = None,
               drop_z2: torch.Tensor | None = None) -> torch.Tensor:
        """``[z1 part | z2 part]`` ``[B, d1 + d2]``; a None part or a True row of ``drop_*`` uses the null embedding.

        z2 without z1 is not a trained level and is refused (a row with ``drop_z1`` also gets the null z2).
        """
        if z1 is None and z2 is not None:
            raise ValueError("z2 without z1 is not a conditioning level (none / z1 / z1+z2); pass z1 too")
        ref = z1 if z1 is not None else z2
        if ref is None:
            raise ValueError("latent() needs z1 (or call null_latent)")
        b, dt = ref.shape[0], ref.dtype
        c = self.cfg
        if z1.shape != (b, c.z1_dim):
            raise ValueError(f"z1 must be [B, {c.z1_dim}], got {list(z1.shape)}")
        if z2 is not None and z2.shape != (b, c.z2_dim):
            raise ValueError(f"z2 must be [B={b}, {c.z2_dim}], got {list(z2.shape)}")
        n1 = self.null_z1.to(dt).expand(b, -1)
        n2 = self.null_z2.to(dt).expand(b, -1)
        p1 = z1 if drop_z1 is None else torch.where(drop_z1[:, None], n1, z1)
        if z2 is None:
            p2 = n2
        else:
            d2 = drop_z2 if drop_z2 is not None else torch.zeros(b, dtype=torch.bool, device=z2.device)
            if drop_z1 is not None:
                d2 = d2 | drop_z1
            p2 = torch.where(d2[:, None], n2, z2)
        return torch.cat([p1, p2], -1)

    def null_latent(self, b: int) -> torch.Tensor:
        """The unconditional latent ``[null_z1 | null_z2]`` repeated ``b`` times."""
        return torch.cat([self.null_z1, self.null_z2]).expand(b, -1)

    def with_null_z2(self, latent: torch.Tensor) -> torch.Tensor:
        """``latent`` with its z2 part replaced by the null z2 (level "z1")."""
        d1 = self.cfg.z1_dim
        return torch.cat([latent[:, :d1], self.null_z2.to(latent.dtype).expand(latent.shape[0], -1)], -1)
