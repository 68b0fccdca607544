"""Learning-rate schedules."""

from __future__ import annotations

import math


def tf_exponential_decay(step: int, decay_rate: float, decay_steps: int) -> float:
    """TF ``ExponentialDecay`` multiplier (not staircase): ``rate ** (step / decay_steps)``."""
    return decay_rate ** (step / decay_steps)


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier rising linearly from 0 to 1 over ``warmup_steps``, then half a cosine to 0 at
    ``total_steps`` (diffusers' ``get_cosine_schedule_with_warmup``)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def lr_multiplier(kind: str, step: int, *, decay_rate: float = 0.99, decay_steps: int = 100,
                  warmup_steps: int = 0, total_steps: int = 1) -> float:
    if kind == "tf_exponential":
        return tf_exponential_decay(step, decay_rate, decay_steps)
    if kind == "cosine":
        return cosine_with_warmup(step, warmup_steps, total_steps)
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown lr_schedule {kind!r}; use tf_exponential, cosine or constant")
