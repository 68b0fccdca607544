"""Derivative-free optimizers over actions (IBC's ``iterative_dfo`` and the paper's Algorithm 2).

Pure functions: the energy/logit function and the generator are arguments.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def resample(
    a: torch.Tensor,
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
):
    """Resample ``a [B, N, A]`` with replacement from ``softmax(logits [B, N] / T)`` (per row).

    Draws ``N`` categorical indices by inverting the CDF at ``N`` uniforms (``uniforms [B, N]`` in ``[0, 1)``, drawn
    from ``generator`` when omitted). The uniforms are sorted first, so the indices come out in ascending order:
    the resampled set holds each chosen sample ``count`` times in a row, the layout IBC's ``categorical_bincount``
    followed by ``tf.repeat`` produces.
    """
    b, n = logits.shape
    if uniforms is None:
        uniforms = torch.rand((b, n), generator=generator, dtype=logits.dtype, device=logits.device)
    elif uniforms.shape != (b, n):
        raise ValueError(f"uniforms must have shape {(b, n)}, got {tuple(uniforms.shape)}")
    cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
    idx = torch.searchsorted(cdf, uniforms.sort(-1).values * cdf[:, -1:], right=True).clamp_(max=n - 1)
    return torch.gather(a, 1, idx[..., None].expand(-1, -1, a.shape[-1])), idx


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
    uniforms: Sequence[torch.Tensor] | None = None,
    noise: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IBC's ``iterative_dfo`` from samples ``a [B, N, A]``.

    ``iterations`` evaluations of ``f = logits_fn(a) [B, N]``, each followed by a resampling with replacement from
    ``softmax(f / T)``. Between two of them the samples get ``N(0, std²)`` noise and are clipped to ``[lo, hi]``;
    ``std`` starts at ``noise_std`` and shrinks by ``noise_shrink`` after each use. With the defaults: evaluate,
    resample, (+0.33 noise, clip, evaluate, resample), (+0.165 noise, clip, evaluate, resample): the final samples
    are copies of the last evaluated ones, with no noise after the last resampling.

    The random draws come from ``generator``, or are given: ``uniforms`` (``iterations`` tensors ``[B, N]`` in
    ``[0, 1)``, see :func:`resample`) and ``noise`` (``iterations - 1`` standard-normal tensors ``[B, N, A]``, scaled
    by the current std here).

    Returns:
        ``(a [B, N, A], f [B, N])``: the final samples and their logits, read off the last evaluation through the
        resampling indices (each final sample is a copy of an evaluated one); the action is ``a[argmax f]``.
        IBC's function returns the probabilities of the last evaluated set beside the resampled set, which its
        policy then pairs index by index; pairing each sample with its own logit is what that intends.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if uniforms is not None and len(uniforms) != iterations:
        raise ValueError(f"need {iterations} uniform draws (one per resampling), got {len(uniforms)}")
    if noise is not None and len(noise) != iterations - 1:
        raise ValueError(f"need {iterations - 1} noise draws (one between two resamplings), got {len(noise)}")
    std = noise_std
    for it in range(iterations):
        if it > 0:
            xi = noise[it - 1] if noise is not None else torch.randn(
                a.shape, generator=generator, dtype=a.dtype, device=a.device)
            a = torch.maximum(torch.minimum(a + std * xi, hi), lo)
            std *= noise_shrink
        f = logits_fn(a)
        a, idx = resample(a, f, temperature, generator, None if uniforms is None else uniforms[it])
    return a, torch.gather(f, 1, idx)


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
    action prefix up to dimension ``j``. Every iteration but the last visits the dimensions in order; at
    dimension ``j`` it evaluates head ``j``, resamples the *prefix* ``a_{0..j}`` from ``softmax(f^j / T)``
    (the later dimensions keep each slot's own values, so the next head still chooses among ``N`` distinct
    values of its dimension), perturbs dimension ``j`` with ``N(0, std²)`` and clips; ``std`` shrinks after each
    iteration. The last iteration only evaluates (the paper resamples "if iter < N_iters"), so with
    ``iterations = 3`` there are two resampling passes. Returns the samples and the last head's logits; the
    action is ``a[argmax f]``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n_dim = a.shape[-1]
    std = noise_std
    for _ in range(iterations - 1):
        for j in range(n_dim):
            prefix, _ = resample(a[..., : j + 1], logits_fn(a, j), temperature, generator)
            a = a.clone()
            a[..., : j + 1] = prefix
            a[..., j] = a[..., j] + std * torch.randn(a.shape[:-1], generator=generator, dtype=a.dtype, device=a.device)
            a = torch.maximum(torch.minimum(a, hi), lo)
        std *= noise_shrink
    return a, logits_fn(a, n_dim - 1)
