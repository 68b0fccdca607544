"""Vectorized rollouts on fixed seeds: many environments stepped together, one batched policy call
per decision, the same code for every policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab import tasks
from steerlab.envs.particle import flatten_obs
from steerlab.eval.metrics import wilson_interval
from steerlab.hw import module_device
from steerlab.train.rundir import atomic_write_text


def rollout(policy, task: str, n_dim: int, seeds: list[int], generator: torch.Generator | None = None,
            progress: bool = False, desc: str = "eval", act_fn=None, make_env=None) -> list[dict]:
    """Roll ``policy`` out in one environment per seed, all stepped together.

    ``act_fn(obs_hist [b, n_obs, Do], env_indices [b]) -> chunk [b, H, A]`` replaces the policy's own
    ``predict_action_chunk`` when given (e.g. to hold a found noise fixed per episode, or to steer each chunk).

    ``make_env()`` builds each environment instead of the task's own (e.g. wrapped in
    :class:`~steerlab.envs.wrappers.ActionNoise`).

    Returns one dict per episode: ``seed``, ``success``, ``return``, ``length``, ``positions [T+1, N]``,
    ``goals [2, N]``, ``obs0`` (the first flat observation), ``obs [T+1, Do]`` (every flat observation) and
    ``actions [T, A]`` (the actions the policy commanded).
    """
    envs = [make_env() if make_env is not None else tasks.make_env(task, n_dim) for _ in seeds]
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    flat = np.stack([flatten_obs(o) for o in obs])
    n_obs = policy.n_obs_steps
    hist = np.repeat(flat[:, None], n_obs, axis=1)  # the first frame tiles the history
    eps = [
        {"seed": int(s), "success": False, "return": 0.0, "length": 0, "positions": [o["pos_agent"].copy()],
         "goals": np.stack([o["pos_first_goal"], o["pos_second_goal"]]), "obs0": flat[i].copy(),
         "obs": [flat[i].copy()], "actions": []}
        for i, (s, o) in enumerate(zip(seeds, obs))
    ]
    active = np.ones(len(envs), bool)
    queue: list[list[np.ndarray]] = [[] for _ in envs]
    max_steps = getattr(envs[0].spec, "max_episode_steps", None) if envs and envs[0].spec else None
    # counted in env steps so the bar moves (and estimates the time) while episodes run side by side
    bar = tqdm(desc=desc, total=len(envs) * max_steps if max_steps else None, unit="step", disable=not progress,
               leave=False, dynamic_ncols=True)
    policy.eval()
    dev = module_device(policy)  # observations go to the policy's device, actions come back to numpy
    while active.any():
        need = [i for i in np.flatnonzero(active) if not queue[i]]
        if need:
            if act_fn is not None:
                chunk = act_fn(torch.as_tensor(hist[need], device=dev), np.asarray(need)).detach().cpu().numpy()
            else:
                with torch.no_grad():
                    chunk = policy.predict_action_chunk(torch.as_tensor(hist[need], device=dev),
                                                        generator=generator).cpu().numpy()
            for j, i in enumerate(need):
                queue[i] = list(chunk[j, : policy.n_action_steps])
        for i in np.flatnonzero(active):
            act = queue[i].pop(0).astype(np.float32)
            o, r, term, trunc, info = envs[i].step(act)
            e = eps[i]
            e["actions"].append(act)
            e["return"] += float(r)
            e["length"] += 1
            e["positions"].append(o["pos_agent"].copy())
            f = flatten_obs(o)
            e["obs"].append(f)
            hist[i] = np.concatenate([hist[i, 1:], f[None]], 0)
            bar.update(1)
            if term or trunc:
                e["success"] = bool(info.get("success", False))
                active[i] = False
                if max_steps:
                    bar.update(max_steps - e["length"])  # an episode ending early leaves no steps to wait for
                bar.set_postfix(episodes=f"{int((~active).sum())}/{len(envs)}")
    bar.close()
    for e in eps:
        e["positions"] = np.stack(e["positions"])
        e["obs"], e["actions"] = np.stack(e["obs"]), np.stack(e["actions"])
    for env in envs:
        env.close()
    return eps


def summarize(episodes: list[dict], seconds: float) -> dict:
    n = len(episodes)
    k = sum(e["success"] for e in episodes)
    lo, hi = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": int(k),
        "success_rate": k / n,
        "success_ci95": [lo, hi],
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "mean_length": float(np.mean([e["length"] for e in episodes])),
        "episodes_per_s": n / max(seconds, 1e-9),
        "seconds": seconds,
        "seeds": [e["seed"] for e in episodes],
    }


def evaluate_policy(policy, cfg, episodes: int | None = None, progress: bool = True, return_episodes: bool = False):
    """Evaluate on env seeds ``cfg.eval.seed0 + i`` for ``i < episodes`` in batches of ``cfg.eval.batch``."""
    ec = cfg.eval
    n = episodes or ec.episodes
    seeds = [ec.seed0 + i for i in range(n)]
    gen = torch.Generator(device=module_device(policy)).manual_seed(ec.inference_seed)
    t0 = time.time()
    out: list[dict] = []
    n_batches = -(-n // ec.batch)
    bar = tqdm(total=n, desc="eval episodes", disable=not progress or n_batches == 1, dynamic_ncols=True)
    for s in range(0, n, ec.batch):
        if cfg.env == "nav2d":  # goal-conditioned, the oracle's route choice as the intent
            from steerlab.nav.rollout import rollout_nav

            out += rollout_nav(policy, seeds[s : s + ec.batch], generator=gen, rerank=ec.nav_rerank,
                               execute_waypoints=ec.nav_execute_waypoints, safety_margin=ec.nav_safety_margin)
        else:
            out += rollout(policy, cfg.env, cfg.n_dim, seeds[s : s + ec.batch], generator=gen, progress=progress,
                           desc=f"eval {len(seeds[s : s + ec.batch])} episodes"
                           + (f" (batch {s // ec.batch + 1}/{n_batches})" if n_batches > 1 else ""))
        bar.update(len(seeds[s : s + ec.batch]))
    bar.close()
    if cfg.env == "nav2d":
        from steerlab.nav.rollout import summarize as summarize_nav

        res = {**summarize_nav(out), "mean_length": float(np.mean([e["length"] for e in out])),
               "episodes_per_s": n / max(time.time() - t0, 1e-9), "seconds": time.time() - t0,
               "seeds": [e["seed"] for e in out]}
        res["successes"] = int(sum(e["success"] for e in out))
        return (res, out) if return_episodes else res
    res = summarize(out, time.time() - t0)
    return (res, out) if return_episodes else res


def write_metrics(path: Path, res: dict) -> None:
    atomic_write_text(path, json.dumps(res, indent=2))
