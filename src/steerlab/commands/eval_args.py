"""Parsing of ``steerlab eval``'s test-time options into a :class:`~steerlab.steer.critic_policy.TestTime`."""

from __future__ import annotations

from steerlab.steer.critic_policy import TestTime

CORRECT_KEYS = {"steps": "correct_steps", "alpha": "alpha", "clip": "clip_frac", "clip_frac": "clip_frac"}


def parse_test_time(correct: str | None = None, rerank: int | None = None, guidance: float | None = None) -> TestTime:
    """The :class:`TestTime` of ``--correct "steps=3,alpha=0.1[,clip=0.05]"`` (``steps`` defaults to 3 when
    ``--correct`` is given), ``--rerank 16`` and ``--guide 0.5``; an option that is None, 0 or empty stays off."""
    kw = {}
    if correct:
        for part in correct.split(","):
            k, _, v = part.partition("=")
            if k.strip() not in CORRECT_KEYS or not v:
                raise ValueError(f"--correct expects steps=N,alpha=A[,clip=C], got {correct!r}")
            kw[CORRECT_KEYS[k.strip()]] = int(v) if k.strip() == "steps" else float(v)
        kw.setdefault("correct_steps", 3)
    if rerank:
        kw["rerank"] = int(rerank)
    if guidance:
        kw["guidance"] = float(guidance)
    return TestTime(**kw)
