"""Derivative-free optimizers over actions (IBC's ``iterative_dfo`` and the paper's Algorithm 2).

Pure functions: the energy/logit function and the generator are arguments.
"""

from __future__ import annotations

from typing import Callable

import torch


def resample(a: torch.Tensor, logits: torch.Tensor, temperature: float, generator: torch.Generator | None):
    """Resample ``a [B, N, A]`` with replacement from ``softmax(logits [B, N] / T)`` (per row)."""
    probs = torch.softmax(logits / temperature, dim=-1)
    idx = torch.multinomial(probs, a.shape[1], replacement=True, generator=generator)
    return torch.gather(a, 1, idx[..., None].expand(-1, -1, a.shape[-1]))


def dfo(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    a: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    iterations: int = 3,
    noise_std: float = 0.33,
    noise_shrink: float = 0.5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IBC's iterative DFO from samples ``a [B, N, A]``.

    Each iteration: evaluate ``f = logits_fn(a) [B, N]``, resample with replacement from ``softmax(f/T)``,
    add ``N(0, std²)`` noise, clip to ``[lo, hi]``, shrink ``std`` by ``noise_shrink``. Finally the samples
    are re-evaluated (unlike the TF code, whose returned probabilities belong to the pre-resample set).

    Returns:
        ``(a [B, N, A], f [B, N])``: the final samples and their logits; the action is ``a[argmax f]``.
    """
    std = noise_std
    for _ in range(iterations):
        a = resample(a, logits_fn(a), temperature, generator)
        a = a + std * torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        a = torch.maximum(torch.minimum(a, hi), lo)
        std *= noise_shrink
    return a, logits_fn(a)


def autoregressive_dfo(
    logits_fn: Callable[[torch.Tensor, int], torch.Tensor],
    a: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    iterations: int = 3,
    noise_std: float = 0.33,
    noise_shrink: float = 0.5,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Autoregressive DFO (IBC paper, Algorithm 2) from samples ``a [B, N, A]``.

    ``logits_fn(a, j) [B, N]`` is head ``j``'s logit ``f^j(x, a_{0..j})``: it must depend only on the
    action prefix up to dimension ``j``. For each iteration and each dimension ``j``: evaluate head ``j``,
    resample whole samples from ``softmax(f^j / T)`` (so the prefix ``0..j`` is chosen by head ``j``),
    perturb dimension ``j`` with ``N(0, std²)``, clip. ``std`` shrinks after each iteration. Returns the
    samples and the last head's logits; the action is ``a[argmax f]``.
    """
    n_dim = a.shape[-1]
    std = noise_std
    for _ in range(iterations):
        for j in range(n_dim):
            a = resample(a, logits_fn(a, j), temperature, generator)
            a = a.clone()
            a[..., j] = a[..., j] + std * torch.randn(a.shape[:-1], generator=generator, dtype=a.dtype, device=a.device)
            a = torch.maximum(torch.minimum(a, hi), lo)
        std *= noise_shrink
    return a, logits_fn(a, n_dim - 1)
