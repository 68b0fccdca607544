"""Rollouts and evaluation on fixed seeds by task name: each task rolls out its own way
(:meth:`steerlab.tasks.base.Task.evaluate`); particle-family tasks step many environments together, one batched
policy call per decision, the same code for every policy."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from steerlab.tasks import get_task
from steerlab.tasks.particle import run_episodes, summarize  # noqa: F401 (summarize: re-exported)
from steerlab.train.rundir import atomic_write_text


def rollout(policy, task: str, n_dim: int, seeds: list[int], generator: torch.Generator | None = None,
            progress: bool = False, desc: str = "eval", act_fn=None, make_env=None) -> list[dict]:
    """Roll ``policy`` out in one environment of particle-family ``task`` per seed, all stepped together
    (:func:`steerlab.tasks.particle.run_episodes`, which lists what each episode's dict holds).

    ``act_fn(obs_hist [b, n_obs, Do], env_indices [b]) -> chunk [b, H, A]`` replaces the policy's own
    ``predict_action_chunk`` when given (e.g. to hold a found noise fixed per episode, or to steer each chunk).

    ``make_env()`` builds each environment instead of the task's own (e.g. wrapped in
    :class:`~steerlab.envs.wrappers.ActionNoise`).
    """
    make_env = make_env if make_env is not None else partial(get_task(task).make_env, n_dim)
    return run_episodes(policy, make_env, seeds, generator=generator, progress=progress, desc=desc, act_fn=act_fn)


def evaluate_policy(policy, cfg, episodes: int | None = None, progress: bool = True, return_episodes: bool = False):
    """Evaluate on env seeds ``cfg.eval.seed0 + i`` for ``i < episodes`` in batches of ``cfg.eval.batch``, the way
    the run's task rolls out (:meth:`steerlab.tasks.base.Task.evaluate`)."""
    res, out = get_task(cfg.env).evaluate(policy, cfg, episodes=episodes, progress=progress)
    return (res, out) if return_episodes else res


def write_metrics(path: Path, res: dict) -> None:
    atomic_write_text(path, json.dumps(res, indent=2))
