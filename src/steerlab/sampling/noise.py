"""Noise sources: what each stochastic sampler step injects. Noise is an argument, never a global.

A sampler calls ``source.draw(k, z0, like)`` for its step ``k`` (``z0`` is the sampler's initial unit noise,
``like`` the tensor whose shape/dtype the noise must have) and gets a tensor, or ``None`` for no injection.

- ``fresh(generator)``: independent N(0, I) each step from ``generator`` (plain inference; no gradient path).
  Re-seeding the generator replays the same noises, which is what a search over ``z0`` needs.
- ``no_noise()``: deterministic sampling; stochastic samplers inject nothing (DDPM then uses its posterior mean).
- ``from_seed(seed)``: step ``k``'s noise is ``s_k * z0[pi_k]`` — a fixed random permutation ``pi_k`` and random
  signs ``s_k`` (drawn from ``seed + k``) of the flattened per-sample ``z0``. It is a deterministic,
  differentiable function of ``z0`` and, when ``z0 ~ N(0, I)``, each step's noise is exactly N(0, I)
  (the steps are not independent of each other or of ``z0``: it is a re-use of ``z0``'s randomness).
- ``explicit(noises)``: step ``k`` injects ``noises[k]`` (``[K, *z0.shape]``), a tensor that can itself be a
  leaf being optimized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

NoiseMode = Literal["fresh", "none", "from_seed", "explicit"]
NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)  # the one vocabulary of per-step noise modes


@dataclass(frozen=True, eq=False)
class NoiseSource:
    mode: NoiseMode = "fresh"
    generator: torch.Generator | None = None
    seed: int = 0
    noises: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {self.mode!r}; use one of {', '.join(NOISE_MODES)}")
        if self.mode == "explicit" and self.noises is None:
            raise ValueError("explicit noise needs a tensor of per-step noises [K, *z0.shape]")

    def draw(self, k: int, z0: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        if self.mode == "none":
            return None
        if self.mode == "fresh":
            # drawn where the generator lives (one stream on every device), then moved to the chain's device
            dev = self.generator.device if self.generator is not None else like.device
            return torch.randn(like.shape, generator=self.generator, dtype=like.dtype, device=dev).to(like.device)
        if self.mode == "explicit":
            if k >= len(self.noises) or self.noises.shape[1:] != like.shape:
                raise ValueError(
                    f"explicit noise has shape {list(self.noises.shape)}; step {k} needs [K > {k}, {', '.join(map(str, like.shape))}]"
                )
            return self.noises[k].to(like.dtype)
        # from_seed
        flat = z0.reshape(z0.shape[0], -1)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k + 1)
        perm = torch.randperm(flat.shape[1], generator=g)
        sign = torch.randint(0, 2, (flat.shape[1],), generator=g).to(flat.dtype) * 2 - 1
        return (flat[:, perm.to(flat.device)] * sign.to(flat.device)).reshape(like.shape).to(like.dtype)


def fresh(generator: torch.Generator | None = None) -> NoiseSource:
    return NoiseSource("fresh", generator=generator)


def no_noise() -> NoiseSource:
    return NoiseSource("none")


def from_seed(seed: int = 0) -> NoiseSource:
    return NoiseSource("from_seed", seed=seed)


def explicit(noises: torch.Tensor) -> NoiseSource:
    return NoiseSource("explicit", noises=noises)

