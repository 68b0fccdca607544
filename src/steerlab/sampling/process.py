"""Generative processes: what a network is trained to output and how a sampler reads that output.

A process object is the single place that knows a parameterization. It yields the training pair and converts
the network's raw output, at a point ``(x_t, t)`` of its path, to the quantities samplers need:

- :class:`DiffusionProcess` -- the variance-preserving path ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` over
  integer training indices ``t`` (diffusion_policy, NoMaD), with diffusers' ``prediction_type``:

  ============== =================================================
  ``epsilon``    the network outputs ``eps``
  ``sample``     the network outputs ``x0``
  ``v_prediction`` the network outputs ``v = sqrt(abar) eps - sqrt(1 - abar) x0``
  ============== =================================================

- :class:`FlowProcess` -- pi0's path ``x_t = t noise + (1 - t) x0`` for ``t`` in ``[0, 1]`` (``t = 1`` noise), with
  the network's output ``velocity`` (``v = noise - x0``, pi0) or ``sample`` (``x0``; then ``v = (x_t - x0) / t``
  with ``t`` floored at the smallest training time, so the conversion is finite as ``t -> 0``).

Every method is a pure function of its arguments: random draws are made by the caller (``sample_t`` takes the
generator), so a policy keeps its documented draw order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from steerlab.sampling.samplers import abar_at, vp_prediction, vp_split

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DiffusionPrediction = Literal["epsilon", "sample", "v_prediction"]
FlowPrediction = Literal["velocity", "sample"]
DIFFUSION_PREDICTIONS = ("epsilon", "sample", "v_prediction")
FLOW_PREDICTIONS = ("velocity", "sample")


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row ``[B]`` (or scalar) tensor shaped to broadcast against ``x [B, ...]``, in ``x``'s dtype."""
    v = torch.as_tensor(v, device=x.device)
    if v.dim() == 0:
        return v.to(x.dtype)
    return v.to(x.dtype).view(-1, *[1] * (x.dim() - 1))


@dataclass(frozen=True, eq=False)
class DiffusionProcess:
    """The VP diffusion path of a cumulative-alpha table ``abar [T]`` (float64) and a prediction type.

    ``clip_sample`` clamps the predicted ``x0`` to ``±clip_sample`` in the DDPM/DDIM steps; ``eps`` stays the one
    implied by the network's output (diffusers' ``DDIMScheduler.step`` default) unless
    ``use_clipped_model_output``, which re-derives it from the clipped ``x0``."""

    abar: torch.Tensor
    prediction_type: DiffusionPrediction = "epsilon"
    clip_sample: float | None = None
    use_clipped_model_output: bool = False
    kind: str = field(default="diffusion", init=False)

    def __post_init__(self):
        if self.prediction_type not in DIFFUSION_PREDICTIONS:
            raise ValueError(f"unknown diffusion prediction_type {self.prediction_type!r}; "
                             f"use one of {', '.join(DIFFUSION_PREDICTIONS)}")
        if self.abar.dim() != 1 or len(self.abar) < 1:
            raise ValueError(f"abar must be a 1-D table of cumulative alphas, got shape {list(self.abar.shape)}")

    @property
    def num_train_timesteps(self) -> int:
        return len(self.abar)

    # ------------------------------------------------------------------------------------------ training
    def sample_t(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training indices ``t ~ U{0, ..., T - 1}``, int64 ``[b]``."""
        return torch.randint(self.num_train_timesteps, (b,), generator=generator, device=device)

    def abar_of(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar`` at integer or fractional indices ``t [B]`` (fractional: :func:`~steerlab.sampling.abar_at`),
        shaped to broadcast against ``like``."""
        t = torch.as_tensor(t, device=like.device)
        if t.dtype in (torch.int32, torch.int64):
            ab = self.abar.to(like.device)[t]
        else:
            ab = abar_at(self.abar, t)
        return _bcast(ab, like)

    def training_pair(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        """``(x_t, model time, target)`` for clean samples ``x0``, unit noise and indices ``t`` (int64 ``[B]``)."""
        ab = self.abar_of(t, x0)
        sa, sb = ab.sqrt(), (1 - ab).sqrt()
        xt = sa * x0 + sb * noise
        return xt, t.to(x0.dtype), self.target(x0, noise, sa, sb)

    def target(self, x0, noise, sa, sb):
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        return sa * noise - sb * x0

    # ----------------------------------------------------------------------------------------- conversions
    def split(self, out: torch.Tensor, x: torch.Tensor, ab) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` implied by the network output ``out`` at ``x = x_t`` where the cumulative alpha is ``ab``
        (a float or a tensor broadcastable to ``x``), with no clipping."""
        return vp_split(out, x, _sqrt(ab), _sqrt(1 - ab), self.prediction_type)

    def x0_of(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean sample implied by the output at ``(x_t, t)``, ``t`` integer or fractional indices ``[B]``."""
        return self.split(out, x, self.abar_of(t, x))[0]

    def join(self, x0: torch.Tensor, eps: torch.Tensor, ab) -> torch.Tensor:
        """The network output that :meth:`split` maps to ``(x0, eps)``."""
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x0
        return _sqrt(ab) * eps - _sqrt(1 - ab) * x0

    def predict(self, model_fn: Fn):
        """``predict(x, t, abar) -> (x0, eps)`` for the DDPM/DDIM tables of :func:`~steerlab.sampling.sample_vp`
        (``t`` a python float index, ``abar`` its cumulative alpha), with ``clip_sample`` applied."""

        return vp_prediction(model_fn, self.prediction_type, self.clip_sample, self.use_clipped_model_output)

    def x0_fn(self, model_fn: Fn) -> Fn:
        """An EDM ``x0_fn(x, sigma)`` (``x = x0 + sigma n``) for RES: ``x_vp = x / sqrt(1 + sigma^2)``,
        ``abar = 1 / (1 + sigma^2)``, the model called at the continuous index whose ``log sigma`` interpolates the
        training table."""
        log_sig = (0.5 * torch.log((1 - self.abar.double()) / self.abar.double())).numpy()  # increasing in t

        def x0_fn(x, sigma):
            s = sigma.double()
            t = torch.from_numpy(np.interp(torch.log(s).cpu().numpy(), log_sig, np.arange(len(log_sig))))
            s_b = _bcast(s, x)
            xv = x / torch.sqrt(1 + s_b**2)
            out = model_fn(xv, t.to(x.dtype).to(x.device))
            if self.prediction_type == "epsilon":
                return x - s_b * out
            x0, _ = self.split(out, xv, 1 / (1 + s_b**2))
            return x0

        return x0_fn

    def guide(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, grad: torch.Tensor, weight: float):
        """The network output with a guidance gradient ``grad`` (of an energy w.r.t. ``x_t``) added, in the
        network's own convention: ``eps' = eps + weight sqrt(1 - abar) grad`` at fixed ``x_t``, then back to the
        output type (for ``epsilon`` that is the classifier-guidance rule itself)."""
        ab = self.abar_of(t, x)
        x0, eps = self.split(out, x, ab)
        eps = eps + weight * (1 - ab).sqrt() * grad
        return self.join((x - (1 - ab).sqrt() * eps) / ab.sqrt(), eps, ab)

    def sigma_range(self) -> tuple[float, float]:
        """``(sigma_min, sigma_max)`` of the table in the EDM form ``sigma = sqrt((1 - abar) / abar)``."""
        s = torch.sqrt((1 - self.abar) / self.abar)
        return float(s[0]), float(s[-1])


@dataclass(frozen=True)
class FlowProcess:
    """pi0's flow ``x_t = t noise + (1 - t) x0``; training times ``t ~ Beta(a, b) * (1 - t_min) + t_min``.

    ``t_min`` is also the floor of ``t`` in ``v = (x_t - x0) / t`` for a ``sample`` network: it never saw an
    earlier time, so no conversion needs one. Heun's last call is at ``t = 0`` itself, where that velocity is
    ``0 / t_min`` rather than the limit: with ``sample``, use Euler or RES (both stop short of ``t = 0``)."""

    prediction_type: FlowPrediction = "velocity"
    time_beta: tuple[float, float] = (1.5, 1.0)
    t_min: float = 0.001
    kind: str = field(default="flow", init=False)

    def __post_init__(self):
        if self.prediction_type not in FLOW_PREDICTIONS:
            raise ValueError(f"unknown flow prediction_type {self.prediction_type!r}; "
                             f"use one of {', '.join(FLOW_PREDICTIONS)}")
        if not 0 < self.t_min < 1:
            raise ValueError(f"t_min must be in (0, 1), got {self.t_min}")

    def sample_t(self, b: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training times ``[b]``: a Beta(a, b) draw by the exact inverse CDF (one of a, b must be 1; torch's Beta
        sampler takes no generator), squeezed into ``[t_min, 1]``."""
        a, bb = self.time_beta
        u = torch.rand(b, generator=generator, device=device)
        if bb == 1.0:
            t = u ** (1.0 / a)
        elif a == 1.0:
            t = 1 - (1 - u) ** (1.0 / bb)
        else:
            raise ValueError(f"time_beta=({a}, {bb}) is not supported: one of the two parameters must be 1 "
                             "(pi0 uses (1.5, 1))")
        return t * (1 - self.t_min) + self.t_min

    def training_pair(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        """``(x_t, model time, target)`` for clean samples, unit noise and times ``t [B]`` in ``(0, 1]``."""
        tt = _bcast(t, x0)
        xt = tt * noise + (1 - tt) * x0
        return xt, t.to(x0.dtype), (noise - x0 if self.prediction_type == "velocity" else x0)

    def split(self, out: torch.Tensor, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, v)`` implied by the network output at ``x = x_t``, ``t`` a float or ``[B]`` tensor."""
        tt = _bcast(torch.as_tensor(t, dtype=torch.float64), x)
        if self.prediction_type == "velocity":
            return x - tt * out, out
        return out, (x - out) / tt.clamp(min=self.t_min)

    def x0_of(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean sample implied by the output at ``(x_t, t)``."""
        return self.split(out, x, t)[0]

    def join(self, x0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return v if self.prediction_type == "velocity" else x0

    def velocity_fn(self, model_fn: Fn) -> Fn:
        """``velocity_fn(x, t)`` for the Euler / Heun integrators."""
        if self.prediction_type == "velocity":
            return model_fn
        return lambda x, t: self.split(model_fn(x, t), x, t)[1]

    def x0_fn(self, model_fn: Fn) -> Fn:
        """An EDM ``x0_fn(x, sigma)`` for RES: ``t = sigma / (1 + sigma)``, ``x_t = x / (1 + sigma)``."""

        def x0_fn(x, sigma):
            s = _bcast(sigma, x)
            t = s / (1 + s)
            xt = x / (1 + s)
            return self.split(model_fn(xt, t.reshape(-1)), xt, t.reshape(-1))[0]

        return x0_fn

    def guide(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor, grad: torch.Tensor, weight: float):
        """The output with ``v' = v + weight grad`` at fixed ``x_t``, in the network's convention."""
        x0, v = self.split(out, x, t)
        v = v + weight * grad
        return self.join(x - _bcast(t, x) * v, v)

    def sigma_range(self) -> tuple[float, float]:
        """``(sigma_min, sigma_max)`` of the EDM form ``sigma = t / (1 - t)`` used by RES on flows."""
        return 1e-2, 1e2


Process = DiffusionProcess | FlowProcess


def _sqrt(v):
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def energy_guided(process: Process, model_fn: Fn, energy_fn: Callable[[torch.Tensor], torch.Tensor],
                  weight: float) -> Fn:
    """``model_fn`` with energy guidance, in the same output convention so that every sampler runs it: at each
    call the gradient ``g`` of ``energy_fn(x0)`` (a scalar) w.r.t. ``x_t``, through the clean sample the network
    predicts, is added by :meth:`DiffusionProcess.guide` / :meth:`FlowProcess.guide` with ``weight``."""

    def guided(x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_()
            out = model_fn(xg, t)
            (g,) = torch.autograd.grad(energy_fn(process.x0_of(out, xg, t)), xg)
        return process.guide(out.detach(), x, t, g, weight)

    return guided
