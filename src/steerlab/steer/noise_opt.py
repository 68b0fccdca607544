"""Optimize a sampler's initial noise ``z0`` (and optionally its explicit per-step noise) against an objective.

``sample_fn(z [B, ...], step_noise [K, B, ...] | None) -> sample`` runs the differentiable chain (see
:func:`steerlab.steer.policy_chain.policy_sampler` for a policy); ``objective(sample) -> [B]``. Each of the
``B`` rows is an independent restart (or an independent problem): losses are summed, so each row gets its
own gradient, its own clip and its own best iterate.

Priors that keep the noise plausible, all optional: the chi_d negative log-likelihood of ``|z|``
(``0.5 |z|^2 - (d - 1) log |z|``, in float32, weight ``chi_weight``), projection onto the ``sqrt(d)`` shell,
and a trust region ``|z - z_init| <= trust_radius``. The plausibility reported is the chi_d CDF of ``|z|``
(0.5 = the typical norm; inside [0.005, 0.995] = inside the central 99% of the prior).

The budget is counted in denoiser evaluations per restart: one forward chain costs ``nfe_per_sample``, and a
gradient step costs ``nfe_per_sample * (1 + backward_cost)`` with ``backward_cost`` the measured time of the
backward pass in units of the forward (:func:`measure_backward_cost`).

:func:`screened_optimize` spends part of a budget on prior draws and starts the gradient search from the best.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import torch
from tqdm.auto import tqdm

SampleFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class NoiseGradientError(RuntimeError):
    """The gradient of the objective did not reach the noise; the message names the cause."""


@dataclass(frozen=True)
class NoiseOptConfig:
    direction: Literal["minimize", "maximize"] = "minimize"
    """minimize the objective (steering) or maximize it (failure search)"""
    optimizer: Literal["adam", "sgd", "lbfgs"] = "adam"
    """Adam; SGD with Nesterov momentum (ReNO); L-BFGS with strong-Wolfe line search (D-Flow)"""
    lr: float = 0.05
    momentum: float = 0.9
    """SGD momentum (Nesterov)"""
    steps: int = 50
    """optimizer steps (fewer if the budget or early stopping ends the search first)"""
    grad_clip: float | None = None
    """clip each restart's gradient to this norm (ReNO: 0.1)"""
    chi_weight: float = 0.0
    """weight of the chi_d negative log-likelihood prior on |z0| (ReNO: 0.01)"""
    project_shell: bool = False
    """rescale each z0 to norm sqrt(d), the initial one and after each step"""
    trust_radius: float | None = None
    """keep |z0 - z_init| <= this (per restart)"""
    optimize_step_noise: bool = False
    """also optimize the explicit per-step noise tensor"""
    budget_nfe: float | None = None
    """stop when this many denoiser evaluations per restart are spent"""
    patience: int | None = None
    """stop when no restart improved its best by min_improvement for this many steps"""
    min_improvement: float = 1e-4


@dataclass
class NoiseOptResult:
    z: torch.Tensor
    """best z0 per restart"""
    step_noise: torch.Tensor | None
    loss: torch.Tensor
    """best objective per restart (the objective's own sign)"""
    sample: torch.Tensor
    """the sample at the best iterate"""
    initial_loss: torch.Tensor
    initial_sample: torch.Tensor
    grad_report: dict
    history: list[dict] = field(default_factory=list)
    nfe: float = 0.0
    """denoiser evaluations spent per restart"""
    steps: int = 0
    stopped: str = "steps"

    def summary(self) -> dict:
        return {"initial_loss_mean": float(self.initial_loss.mean()), "best_loss_mean": float(self.loss.mean()),
                "nfe_per_restart": self.nfe, "steps": self.steps, "stopped": self.stopped,
                "chi_cdf": chi_cdf(self.z).tolist(), "grad_report": self.grad_report}


def project_to_shell(z: torch.Tensor) -> torch.Tensor:
    """Each row of ``z`` rescaled to norm ``sqrt(d)`` (d = numel per row), the typical norm of a standard draw."""
    return z * (math.sqrt(z[0].numel()) / z.flatten(1).norm(dim=1).clamp(min=1e-12)).view(-1, *[1] * (z.dim() - 1))


def chi_nll(z: torch.Tensor) -> torch.Tensor:
    """``[B]`` negative log-likelihood (up to a constant) of ``|z|`` under chi_d, d = numel per row, float32."""
    r = z.float().flatten(1).norm(dim=1).clamp(min=1e-12)
    d = z[0].numel()
    return 0.5 * r**2 - (d - 1) * torch.log(r)


def chi_cdf(z: torch.Tensor) -> torch.Tensor:
    """``[B]`` chi_d CDF of ``|z|``: ``P(d/2, |z|^2 / 2)`` (regularized lower incomplete gamma)."""
    r2 = z.detach().double().flatten(1).pow(2).sum(1)
    return torch.special.gammainc(torch.full_like(r2, z[0].numel() / 2), r2 / 2)


def measure_backward_cost(sample_fn: SampleFn, objective, z: torch.Tensor, step_noise=None, repeats: int = 3) -> float:
    """Time of a backward pass through ``sample_fn`` in units of one forward pass (min over ``repeats``)."""
    t_f, t_fb = math.inf, math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            objective(sample_fn(z, step_noise)).sum()
        t_f = min(t_f, time.perf_counter() - t0)
        zz = z.detach().requires_grad_()
        t0 = time.perf_counter()
        objective(sample_fn(zz, step_noise)).sum().backward()
        t_fb = min(t_fb, time.perf_counter() - t0)
    return max(t_fb / t_f - 1.0, 0.0)


def _diagnose(z, sample, obj) -> str:
    if not sample.requires_grad:
        return ("the sample carries no graph: the sampler ran under torch.no_grad or with grad='none' "
                "(run it with grad='full' or grad='checkpoint')")
    if not obj.requires_grad:
        return "the objective returned a value without a graph (a .detach(), .item() or NumPy round-trip inside it)"
    return "z0 is not in the sample's graph: sample_fn does not use its z argument (or detaches it)"


def optimize_noise(sample_fn: SampleFn, objective, z_init: torch.Tensor, cfg: NoiseOptConfig = NoiseOptConfig(), *,
                   step_noise_init: torch.Tensor | None = None, nfe_per_sample: float = 1.0,
                   backward_cost: float | None = None, progress: bool = True,
                   log: Callable[[str], None] | None = print) -> NoiseOptResult:
    """Gradient search over ``z0`` for a batch of restarts; returns the best iterate of each. See the module doc."""
    log = log or (lambda s: None)
    if cfg.direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {cfg.direction!r}")
    if cfg.optimize_step_noise and step_noise_init is None:
        raise ValueError("optimize_step_noise needs step_noise_init (the explicit per-step noise [K, B, ...])")
    sign = 1.0 if cfg.direction == "minimize" else -1.0
    z = z_init.detach().clone()
    if cfg.project_shell:  # every iterate on the shell, the first included (it can be the best one)
        z.copy_(project_to_shell(z))
    z.requires_grad_()
    xi = step_noise_init.detach().clone().requires_grad_(cfg.optimize_step_noise) if step_noise_init is not None else None
    params = [z] + ([xi] if cfg.optimize_step_noise else [])
    if backward_cost is None:
        backward_cost = measure_backward_cost(sample_fn, objective, z_init, step_noise_init, repeats=1) if cfg.budget_nfe else 2.0
    step_cost = nfe_per_sample * (1 + backward_cost)
    log(f"[noise] config: {asdict(cfg)}; restarts {len(z)}, |z0| dims {z[0].numel()}, chain NFE {nfe_per_sample}, "
        f"backward = {backward_cost:.2f} forwards")

    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    elif cfg.optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=1, line_search_fn="strong_wolfe")
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, sgd or lbfgs")

    best = {}

    def evaluate():
        """Forward chain at the current noise; records the best iterate of each restart."""
        sample = sample_fn(z, xi)
        obj = objective(sample)
        if obj.shape != (len(z),):
            raise ValueError(f"the objective must return one value per restart [{len(z)}], got {list(obj.shape)}")
        o, smp = obj.detach(), sample.detach()
        if not best:
            best.update(loss=o.clone(), z=z.detach().clone(), sample=smp.clone(),
                        xi=xi.detach().clone() if xi is not None else None)
        else:
            imp = sign * (best["loss"] - o) > 0
            best["loss"] = torch.where(imp, o, best["loss"])
            best["z"] = torch.where(imp.view(-1, *[1] * (z.dim() - 1)), z.detach(), best["z"])
            best["sample"] = torch.where(imp.view(-1, *[1] * (smp.dim() - 1)), smp, best["sample"])
            if xi is not None:
                best["xi"] = torch.where(imp.view(1, -1, *[1] * (xi.dim() - 2)), xi.detach(), best["xi"])
        total = sign * obj
        if cfg.chi_weight:
            total = total + cfg.chi_weight * chi_nll(z).to(total.dtype)
        state["evals"] += 1
        state["last"] = o
        return sample, obj, total

    def clip_grads():
        if cfg.grad_clip is None:
            return
        if z.grad is not None:
            scale = (cfg.grad_clip / z.grad.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
            z.grad.mul_(scale.view(-1, *[1] * (z.dim() - 1)))
        if xi is not None and xi.grad is not None:
            scale = (cfg.grad_clip / xi.grad.transpose(0, 1).flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
            xi.grad.mul_(scale.view(1, -1, *[1] * (xi.dim() - 2)))

    def closure():
        opt.zero_grad(set_to_none=True)
        _, _, total = evaluate()
        total.sum().backward()
        clip_grads()
        return total.sum()

    state = {"evals": 0}
    # ---- the initial evaluation: initial loss and the check that the gradient reaches z0
    sample, obj, total = evaluate()
    if total.requires_grad:
        total.sum().backward()
    if z.grad is None:
        raise NoiseGradientError(f"the gradient did not reach z0: {_diagnose(z, sample, obj)}")
    g = z.grad
    grad_report = {"mean": float(g.mean()), "max_abs": float(g.abs().max()),
                   "norm": float(g.flatten(1).norm(dim=1).mean()), "finite": bool(torch.isfinite(g).all())}
    if not grad_report["finite"]:
        raise NoiseGradientError("the gradient reached z0 but is not finite (NaN/inf in the chain or the objective)")
    if grad_report["max_abs"] == 0.0:
        raise NoiseGradientError("the gradient reached z0 but is exactly zero for every restart: the objective is flat "
                                 "there (e.g. every action clipped at a bound, an argmax, or a saturated clamp)")
    log(f"[noise] initial loss {obj.mean().item():.5g} (min {obj.min().item():.5g}, max {obj.max().item():.5g}); "
        f"gradient reached z0: mean {grad_report['mean']:.3g}, max |g| {grad_report['max_abs']:.3g}, "
        f"norm {grad_report['norm']:.3g}")
    clip_grads()
    initial_loss, initial_sample = obj.detach().clone(), sample.detach().clone()
    nfe = step_cost
    history = [{"step": 0, "loss_mean": float(initial_loss.mean()), "best_mean": float(best["loss"].mean()),
                "chi_cdf_mean": float(chi_cdf(z).mean()), "nfe": nfe}]
    stale, stopped, step = 0, "steps", 0
    bar = tqdm(total=cfg.steps, desc=f"noise {cfg.direction}", disable=not progress, dynamic_ncols=True, leave=False)
    while step < cfg.steps:
        if cfg.budget_nfe is not None and nfe + step_cost + nfe_per_sample > cfg.budget_nfe:
            stopped = "budget"
            break
        before = best["loss"].clone()
        if cfg.optimizer == "lbfgs":
            n0 = state["evals"]
            opt.step(closure)
            nfe += step_cost * (state["evals"] - n0)
        else:
            if step > 0:  # step 0 uses the gradient of the initial evaluation
                opt.zero_grad(set_to_none=True)
                sample, obj, total = evaluate()
                total.sum().backward()
                clip_grads()
                nfe += step_cost
            opt.step()
        with torch.no_grad():
            if cfg.project_shell:
                z.copy_(project_to_shell(z))
            if cfg.trust_radius is not None:
                d = z - z_init
                n = d.flatten(1).norm(dim=1).clamp(min=1e-12)
                z.copy_(z_init + d * (cfg.trust_radius / n).clamp(max=1.0).view(-1, *[1] * (z.dim() - 1)))
        step += 1
        gain = sign * (before - best["loss"])
        stale = 0 if (gain > cfg.min_improvement * before.abs().clamp(min=1e-8)).any() else stale + 1
        rec = {"step": step, "loss_mean": float(state["last"].mean()), "best_mean": float(best["loss"].mean()),
               "chi_cdf_mean": float(chi_cdf(z).mean()), "nfe": nfe}
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss_mean']:.4g}", best=f"{rec['best_mean']:.4g}", chi=f"{rec['chi_cdf_mean']:.2f}")
        bar.update(1)
        if cfg.patience is not None and stale >= cfg.patience:
            stopped = "early stop"
            break
    with torch.no_grad():  # the point reached by the last step
        evaluate()
        nfe += nfe_per_sample
    bar.close()
    log(f"[noise] done after {step} steps ({stopped}), {nfe:.0f} NFE per restart: loss {initial_loss.mean():.5g} -> "
        f"best {best['loss'].mean():.5g}; chi CDF of the best z0 {chi_cdf(best['z']).mean():.3f}")
    return NoiseOptResult(best["z"], best["xi"], best["loss"], best["sample"], initial_loss, initial_sample,
                          grad_report, history, nfe, step, stopped)


def screened_optimize(sample_fn: SampleFn, objective, z_first: torch.Tensor, cfg: NoiseOptConfig, *,
                      screen_draws: int, nfe_per_sample: float = 1.0, backward_cost: float | None = None,
                      generator: torch.Generator | None = None, progress: bool = False,
                      log: Callable[[str], None] | None = None) -> NoiseOptResult:
    """Screen, then descend: the best of ``screen_draws`` prior draws per row (``z_first`` the first, the rest from
    ``generator``; :func:`~steerlab.steer.search.best_of_n`), then :func:`optimize_noise` from it with what is left
    of ``cfg.budget_nfe``. Random draws find the basin, gradient steps climb it; where the objective has several
    local optima (e.g. a low-dimensional intent), a gradient run from one random start stays in its own.

    The result is :func:`optimize_noise`'s, started at the screen's best (with ``cfg.project_shell``, at its
    projection onto the shell, so the result is only guaranteed to match or beat that projection), with ``nfe``
    counting the screen too. Needs ``cfg.budget_nfe``, large enough for one gradient step after
    the screen (``nfe_per_sample * (2 + backward_cost)``)."""
    from steerlab.steer.search import best_of_n

    if cfg.budget_nfe is None:
        raise ValueError("screened_optimize splits a budget between draws and gradient steps: set cfg.budget_nfe")
    if screen_draws < 1:
        raise ValueError(f"screen_draws must be >= 1, got {screen_draws!r}")
    if backward_cost is None:
        backward_cost = measure_backward_cost(sample_fn, objective, z_first, repeats=1)
    first = best_of_n(sample_fn, objective, tuple(z_first.shape), int(screen_draws), direction=cfg.direction,
                      nfe_per_sample=nfe_per_sample, generator=generator, z_first=z_first)
    rest = cfg.budget_nfe - first.nfe
    if rest < nfe_per_sample * (2 + backward_cost):
        raise ValueError(f"a budget of {cfg.budget_nfe:g} NFE leaves {rest:g} after {screen_draws} draws of "
                         f"{nfe_per_sample:g}, less than one gradient step ({nfe_per_sample * (2 + backward_cost):g}): "
                         "raise the budget or screen fewer draws")
    r = optimize_noise(sample_fn, objective, first.z, replace(cfg, budget_nfe=rest), nfe_per_sample=nfe_per_sample,
                       backward_cost=backward_cost, progress=progress, log=log)
    r.nfe += first.nfe
    return r
