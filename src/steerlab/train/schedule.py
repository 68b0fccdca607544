"""Learning-rate schedules."""

from __future__ import annotations


def tf_exponential_decay(step: int, decay_rate: float, decay_steps: int) -> float:
    """TF ``ExponentialDecay`` multiplier (not staircase): ``rate ** (step / decay_steps)``."""
    return decay_rate ** (step / decay_steps)
