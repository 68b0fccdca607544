"""Stress tests of a particle policy, verified in closed loop: search the initial noise for chunks that fail,
then roll the policy out with each episode's found noise held fixed and count real failures.

Searches at an equal budget of denoiser evaluations (a backward pass counted at its measured cost):
best-of-N, CEM (population 8) and gradient ascent (Adam, per-restart gradient clip 1, z0 projected onto the
``sqrt(d)`` shell after each step, so every found noise has the norm of a typical draw).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from steerlab.envs.particle import GOAL_DISTANCE
from steerlab.eval.metrics import wilson_interval
from steerlab.eval.rollout import rollout
from steerlab.sampling import no_noise
from steerlab.steer.noise_opt import NoiseOptConfig, chi_cdf, optimize_noise
from steerlab.steer.search import best_of_n, cem

FAILURE_MODES = ("missed_first_goal", "missed_second_goal", "left_second_goal")
METHODS = ("best-of-N", "CEM", "gradient")


def failure_mode(ep: dict) -> str | None:
    """Why a closed-loop particle episode failed (None when it succeeded): it never came within the success
    tolerance of the first goal, reached it but never the second, or reached both but did not end at the second."""
    if ep["success"]:
        return None
    d = np.linalg.norm(ep["positions"][:, None, :] - ep["goals"][None], axis=-1)  # [T+1, 2]
    if d[:, 0].min() >= GOAL_DISTANCE:
        return FAILURE_MODES[0]
    if d[:, 1].min() >= GOAL_DISTANCE:
        return FAILURE_MODES[1]
    return FAILURE_MODES[2]


def closed_loop(policy, task: str, n_dim: int, seeds, z: torch.Tensor, progress: bool = False) -> list[dict]:
    """Roll ``policy`` out on ``seeds`` with episode ``i``'s initial noise ``z[i]`` held fixed for every chunk and no
    per-step noise, so the noise alone decides each chunk."""

    def act_fn(hist, idx):
        with torch.no_grad():
            zi = z[torch.as_tensor(idx)].to(hist.device)
            return policy.predict_action_chunk(hist, z=zi, noise=no_noise())

    return rollout(policy, task, n_dim, list(seeds), act_fn=act_fn, progress=progress, desc="closed loop")


def inside_central(cdf, mass: float = 0.99) -> np.ndarray:
    """Whether each chi_d CDF value of a noise norm (:func:`~steerlab.steer.noise_opt.chi_cdf`) lies inside the
    prior's central ``mass`` (0.99: in (0.005, 0.995))."""
    cdf = np.asarray(cdf)
    tail = (1.0 - mass) / 2
    return (cdf > tail) & (cdf < 1.0 - tail)


@dataclass(frozen=True)
class StressRow:
    """One method's noises, rolled out: counts, rates with 95% Wilson intervals, and plausibility of the noises."""

    method: str
    budget_nfe: int
    nfe_spent: float
    episodes: int
    failures: int
    ci95: tuple[float, float]
    modes: dict
    failures_per_1000_nfe: float
    failing_inside_99: float | None
    search_seconds: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.episodes


def evaluate_noises(policy, task: str, n_dim: int, seeds, z: torch.Tensor, method: str, budget: int,
                    nfe: float, seconds: float) -> StressRow:
    eps = closed_loop(policy, task, n_dim, seeds, z)
    fail = np.array([not e["success"] for e in eps])
    modes = [failure_mode(e) for e in eps]
    plausible = inside_central(chi_cdf(z.cpu()).numpy())
    k = int(fail.sum())
    return StressRow(method, int(budget), float(nfe), len(eps), k, wilson_interval(k, len(eps)),
                     {m: sum(x == m for x in modes) for m in FAILURE_MODES},
                     1000.0 * k / (len(eps) * max(float(nfe), 1e-9)),
                     float(np.mean(plausible[fail])) if k else None, seconds)


def search_noises(method: str, chain, objective, z_first: torch.Tensor, budget: int, backward_cost: float,
                  lr: float = 0.1, seed: int = 0):
    """Maximize ``objective`` over the chain's initial noise with ``method`` at ``budget`` denoiser evaluations;
    returns the search result (``.z``, ``.nfe``)."""
    if method == "best-of-N":
        return best_of_n(chain.sample_fn, objective, chain.shape, max(1, budget // chain.nfe), direction="maximize",
                         nfe_per_sample=chain.nfe, generator=torch.Generator().manual_seed(seed + budget),
                         z_first=z_first)
    if method == "CEM":
        return cem(chain.sample_fn, objective, chain.shape, iterations=max(1, budget // (8 * chain.nfe)), population=8,
                   direction="maximize", nfe_per_sample=chain.nfe,
                   generator=torch.Generator().manual_seed(seed + budget))
    if method == "gradient":
        ocfg = NoiseOptConfig(direction="maximize", lr=lr, steps=10_000, grad_clip=1.0, project_shell=True,
                              budget_nfe=budget)
        return optimize_noise(chain.sample_fn, objective, z_first, ocfg, nfe_per_sample=chain.nfe,
                              backward_cost=backward_cost, progress=False, log=None)
    raise ValueError(f"unknown search method {method!r}; use one of {', '.join(METHODS)}")


def run_searches(chain, objective, z_first: torch.Tensor, budgets, backward_cost: float, lr: float, record,
                 methods=METHODS) -> None:
    """Each of ``methods`` at each budget; calls ``record(method, budget, z, nfe_spent, search_seconds)``."""
    for b in budgets:
        for m in methods:
            t0 = time.time()
            r = search_noises(m, chain, objective, z_first, b, backward_cost, lr)
            record(m, b, r.z, r.nfe, time.time() - t0)
