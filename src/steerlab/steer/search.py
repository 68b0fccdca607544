"""Zero-order searches over the initial noise, the baselines of gradient search at equal budget.

Each takes ``sample_fn(z [B, ...], None) -> sample`` and ``objective(sample) -> [B]`` and treats each of the
``B`` rows as an independent problem; one call of ``sample_fn`` costs ``nfe_per_sample`` denoiser
evaluations per row. All return :class:`SearchResult` with the best noise found per row.

- :func:`best_of_n`: ``n`` independent draws from N(0, I), keep the best (inference-time scaling's
  random search).
- :func:`zo_search`: ZO-N neighbourhood search: from the current pivot, ``n_neighbors`` perturbations
  ``pivot + radius * eps`` rescaled to the pivot's norm; move to the best if it beats the pivot.
- :func:`cem`: the cross-entropy method: a diagonal Gaussian over z refit to the elite fraction of each
  population.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SearchResult:
    z: torch.Tensor
    loss: torch.Tensor
    sample: torch.Tensor
    nfe: float
    history: list[dict] = field(default_factory=list)


class _Best:
    def __init__(self, sign: float):
        self.sign, self.loss, self.z, self.sample, self.history, self.nfe = sign, None, None, None, [], 0.0

    def offer(self, z, sample, loss, nfe):
        self.nfe += nfe
        if self.loss is None:
            self.loss, self.z, self.sample = loss.clone(), z.clone(), sample.clone()
        else:
            imp = self.sign * (self.loss - loss) > 0
            self.loss = torch.where(imp, loss, self.loss)
            self.z = torch.where(imp.view(-1, *[1] * (z.dim() - 1)), z, self.z)
            self.sample = torch.where(imp.view(-1, *[1] * (sample.dim() - 1)), sample, self.sample)
        self.history.append({"nfe": self.nfe, "best_mean": float(self.loss.mean())})

    def result(self) -> SearchResult:
        return SearchResult(self.z, self.loss, self.sample, self.nfe, self.history)


def _sign(direction: str) -> float:
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    return 1.0 if direction == "minimize" else -1.0


@torch.no_grad()
def _eval(sample_fn, objective, z):
    s = sample_fn(z, None)
    return s, objective(s)


def best_of_n(sample_fn, objective, shape: tuple[int, ...], n: int, *, direction: str = "minimize",
              nfe_per_sample: float = 1.0, generator: torch.Generator | None = None,
              z_first: torch.Tensor | None = None) -> SearchResult:
    """``n`` random noises per row (the first may be given as ``z_first``); the best by the objective."""
    best = _Best(_sign(direction))
    for i in range(n):
        z = z_first if (i == 0 and z_first is not None) else torch.randn(shape, generator=generator)
        s, o = _eval(sample_fn, objective, z)
        best.offer(z, s, o, nfe_per_sample)
    return best.result()


def zo_search(sample_fn, objective, z_init: torch.Tensor, *, iterations: int, n_neighbors: int = 4,
              radius: float = 0.5, direction: str = "minimize", nfe_per_sample: float = 1.0,
              generator: torch.Generator | None = None) -> SearchResult:
    """ZO-N: ``iterations`` rounds of ``n_neighbors`` norm-preserving perturbations around the pivot."""
    sign = _sign(direction)
    best = _Best(sign)
    pivot = z_init.clone()
    s, o = _eval(sample_fn, objective, pivot)
    best.offer(pivot, s, o, nfe_per_sample)
    pivot_loss = o
    view = (-1, *[1] * (pivot.dim() - 1))
    for _ in range(iterations):
        cand_best_z, cand_best_loss = pivot, pivot_loss
        for _ in range(n_neighbors):
            c = pivot + radius * torch.randn(pivot.shape, generator=generator)
            c = c * (pivot.flatten(1).norm(dim=1) / c.flatten(1).norm(dim=1).clamp(min=1e-12)).view(view)
            s, o = _eval(sample_fn, objective, c)
            best.offer(c, s, o, nfe_per_sample)
            imp = sign * (cand_best_loss - o) > 0
            cand_best_z = torch.where(imp.view(view), c, cand_best_z)
            cand_best_loss = torch.where(imp, o, cand_best_loss)
        pivot, pivot_loss = cand_best_z, cand_best_loss
    return best.result()


def cem(sample_fn, objective, shape: tuple[int, ...], *, iterations: int, population: int = 16,
        elite_frac: float = 0.25, direction: str = "minimize", nfe_per_sample: float = 1.0,
        min_std: float = 0.05, generator: torch.Generator | None = None) -> SearchResult:
    """Cross-entropy method with a per-row diagonal Gaussian starting at N(0, I)."""
    sign = _sign(direction)
    best = _Best(sign)
    mean, std = torch.zeros(shape), torch.ones(shape)
    n_elite = max(1, int(round(elite_frac * population)))
    for _ in range(iterations):
        zs = mean[None] + std[None] * torch.randn((population, *shape), generator=generator)
        losses = []
        for z in zs:
            s, o = _eval(sample_fn, objective, z)
            best.offer(z, s, o, nfe_per_sample)
            losses.append(o)
        L = torch.stack(losses)  # [P, B]
        elite = torch.argsort(sign * L, dim=0)[:n_elite]  # [E, B]
        idx = elite.view(n_elite, shape[0], *[1] * (len(shape) - 1)).expand(n_elite, *shape)
        ez = torch.gather(zs, 0, idx)
        mean, std = ez.mean(0), ez.std(0, unbiased=False).clamp(min=min_std)
    return best.result()
