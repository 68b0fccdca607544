"""Evaluate a steerlab policy (or any batched action function, e.g. MetaWorld's scripted expert) on MetaWorld
task variations: one env per seed, all stepped together, one batched call per step.

Success is MetaWorld's ``info["success"]`` at any step of the episode; ``first_success_step`` is the 1-based index
of the first such step. Evaluation seeds conventionally start at :data:`~steerlab.envs.metaworld.EVAL_SEED0`
(100 000), disjoint from the demonstration seeds (``0 .. episodes - 1``); :func:`eval_seeds` lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.envs.metaworld import EVAL_SEED0, HAND, MAX_EPISODE_STEPS, make_metaworld_env, scripted_expert
from steerlab.eval.metrics import success_summary


def eval_seeds(n: int, seed0: int = EVAL_SEED0) -> list[int]:
    """The ``n`` evaluation env seeds ``seed0, seed0 + 1, ...``."""
    return [int(seed0) + i for i in range(int(n))]


def expert_act_fn(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """MetaWorld's scripted expert of ``task`` as a batched action function ``obs [B, 39] -> actions [B, 4]``."""
    expert = scripted_expert(task)
    return lambda obs: np.stack([expert(o) for o in np.asarray(obs)])


def _is_policy(obj) -> bool:
    return isinstance(obj, torch.nn.Module) and hasattr(obj, "select_action")


def evaluate_metaworld(policy_or_act_fn, task: str, seeds: Sequence[int], max_episode_steps: int = MAX_EPISODE_STEPS,
                       terminate_on_success: bool = True, generator: torch.Generator | None = None,
                       record_obs: bool = False, progress: bool = False) -> dict:
    """Roll ``policy_or_act_fn`` out on ``task`` in one env per seed (:func:`make_metaworld_env`), all stepped
    together.

    ``policy_or_act_fn`` is a steerlab :class:`~steerlab.policy.Policy` (reset once, then one
    ``select_action(obs [B, 39], generator=generator)`` per step for the whole batch, so its observation history
    and action queue stay batched) or a callable ``obs [B, 39] -> actions [B, 4]`` (numpy or tensor). Envs that
    have finished keep their place in the batch with their last observation; their actions are discarded. With
    ``terminate_on_success`` (the default) an episode stops at its first success; otherwise it runs to
    ``max_episode_steps``.

    Returns the summary (``n_episodes``, ``successes``, ``success_rate``, ``success_ci95`` (Wilson),
    ``mean_return``, ``mean_length``, ``mean_first_success_step`` (over successes; None without any),
    ``seconds``, ``episodes_per_s``, ``seeds``, ``task``) and ``"episodes"``: one dict per seed with ``seed``,
    ``success``, ``first_success_step``, ``return``, ``length``, ``obs0 [39]`` (the first observation: object and
    goal positions), ``hand [T+1, 3]`` (the end-effector
    positions, ``obs[:, 0:3]``, from the first observation on), ``actions [T, 4]`` and with ``record_obs``
    ``obs [T+1, 39]``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty; pass at least one env seed (e.g. eval_seeds(10))")
    is_policy = _is_policy(policy_or_act_fn)
    if not is_policy and not callable(policy_or_act_fn):
        raise TypeError(f"policy_or_act_fn must be a steerlab Policy or a callable obs [B, 39] -> actions [B, 4], "
                        f"got {type(policy_or_act_fn).__name__}")
    t0 = time.perf_counter()
    envs = [make_metaworld_env(task, s, max_episode_steps=max_episode_steps,
                               terminate_on_success=terminate_on_success) for s in seeds]
    obs = np.stack([env.reset()[0] for env in envs])
    eps = [{"seed": s, "success": False, "first_success_step": None, "return": 0.0, "length": 0,
            "obs0": obs[i].copy(), "hand": [obs[i, HAND].copy()], "actions": [], **({"obs": [obs[i].copy()]} if record_obs else {})}
           for i, s in enumerate(seeds)]
    active = np.ones(len(envs), bool)
    if is_policy:
        from steerlab.hw import module_device

        policy = policy_or_act_fn
        policy.eval()
        policy.reset()
        dev = module_device(policy)
    bar = tqdm(total=len(envs) * int(max_episode_steps), desc=f"eval {task}", unit="step", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        while active.any():
            if is_policy:
                with torch.no_grad():
                    # a copy: the policy keeps it in its observation history while obs is updated in place
                    actions = policy.select_action(torch.tensor(obs, device=dev), generator=generator)
            else:
                actions = policy_or_act_fn(obs.copy())
            if isinstance(actions, torch.Tensor):
                actions = actions.detach().cpu().numpy()
            actions = np.asarray(actions, dtype=np.float32)
            if actions.shape != (len(envs), 4):
                raise ValueError(f"the policy returned actions of shape {list(actions.shape)} for {len(envs)} "
                                 f"observations; expected [{len(envs)}, 4]")
            for i in np.flatnonzero(active):
                o, r, term, trunc, info = envs[i].step(actions[i])
                e = eps[i]
                e["actions"].append(actions[i].copy())
                e["hand"].append(o[HAND].copy())
                if record_obs:
                    e["obs"].append(o.copy())
                e["return"] += float(r)
                e["length"] += 1
                obs[i] = o
                bar.update(1)
                if term or trunc:
                    e["success"] = bool(info["success_once"])
                    e["first_success_step"] = info["first_success_step"]
                    active[i] = False
                    bar.update(int(max_episode_steps) - e["length"])
    finally:
        bar.close()
        for env in envs:
            env.close()
    for e in eps:
        e["hand"] = np.stack(e["hand"])
        e["actions"] = np.stack(e["actions"])
        if record_obs:
            e["obs"] = np.stack(e["obs"])
    seconds = time.perf_counter() - t0
    return {**summarize_metaworld(eps, seconds), "task": task, "episodes": eps}


def summarize_metaworld(episodes: list[dict], seconds: float) -> dict:
    """:func:`~steerlab.eval.metrics.success_summary` (the count as ``n_episodes``: ``episodes`` holds the episodes
    themselves in :func:`evaluate_metaworld`'s result), the mean return and the mean first success step over the
    successful episodes."""
    res = {**success_summary(episodes, seconds), "seconds": round(seconds, 3)}
    firsts = [e["first_success_step"] for e in episodes if e["first_success_step"] is not None]
    return {"n_episodes": res.pop("episodes"), **res, "mean_return": float(np.mean([e["return"] for e in episodes])),
            "mean_first_success_step": float(np.mean(firsts)) if firsts else None}
