"""Collect MetaWorld scripted-expert demonstrations (:mod:`steerlab.envs.metaworld`) into a zarr store or a
LeRobotDataset v3 directory (through :func:`steerlab.data.formats.write_dataset`).

Per-step keys (``T`` = total steps; step ``t`` holds the observation the expert acted on and its action):

=============  ==================  ==============================================================
key            dtype / shape       meaning
=============  ==================  ==============================================================
obs            float32 [T, 39]     MetaWorld's observation (layout: :mod:`steerlab.envs.metaworld`)
action         float32 [T, 4]      the expert's clean action, in [-1, 1]
via_index      int64 [T]           ``multimodal`` only: the episode's via-point index
via_point      float32 [T, 3]      ``multimodal`` only: the episode's via-point (metres)
=============  ==================  ==============================================================

Episodes end at the expert's first success step (``info["success"]``) or after ``max_episode_steps``; only the
successful ones are written (as the nav2d collector does), so every demonstration ends in success. Root attrs
list, per written episode, its env seed, length, first success step and via-point index, and count the episodes
run, the successes and the perturbed steps.

Episode ``i`` uses env seed ``seed + i`` (the task variation, :func:`~steerlab.envs.metaworld.make_metaworld_env`),
a via-point draw from the random stream ``[seed + i, 1]`` and DART perturbations from ``[seed + i, 2]``, so the
data do not depend on ``workers``. Keep demonstration seeds below
:data:`~steerlab.envs.metaworld.EVAL_SEED0` (100 000), where evaluation seeds start.

DART (Laskey et al. 2017): with ``action_noise = sigma > 0`` the env executes, at each step with probability
``noise_prob``, the expert's action plus ``N(0, sigma^2)`` per component (clipped to [-1, 1]); the recorded
action is always the expert's clean action at the observation reached.
"""

from __future__ import annotations

import os
import time

import numpy as np

from steerlab.data.collect import run_chunks
from steerlab.data.formats import check_format, write_dataset
from steerlab.envs.metaworld import (
    ACT_DIM,
    EVAL_SEED0,
    FPS,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    check_task,
    make_expert,
    make_metaworld_env,
    perturb,
)

_VIA_STREAM = 1  # the via-point draw's random stream, [seed + i, 1]
_NOISE_STREAM = 2  # the DART perturbations' stream, [seed + i, 2]
OBS_NAMES = ([f"hand_{c}" for c in "xyz"] + ["gripper"] + [f"obj_{i}" for i in range(14)]
             + [f"prev_{i}" for i in range(18)] + [f"goal_{c}" for c in "xyz"])


def run_expert_episode(task: str, seed: int, action_noise: float = 0.0, noise_prob: float = 0.5,
                       multimodal: bool = False, via_kwargs: dict | None = None,
                       max_episode_steps: int = MAX_EPISODE_STEPS) -> tuple[dict[str, np.ndarray], dict]:
    """One expert episode on env seed ``seed`` -> ``(arrays, stats)``; ``stats`` holds ``seed``, ``success``,
    ``first_success_step``, ``length``, ``perturbed`` (steps) and ``via_index`` (None without ``multimodal``)."""
    env = make_metaworld_env(task, seed, max_episode_steps=max_episode_steps, terminate_on_success=True)
    expert = make_expert(task, multimodal, env, **(via_kwargs or {}))
    noise_rng = np.random.default_rng([int(seed), _NOISE_STREAM])
    obs, info = env.reset()
    via_index = expert.reset(obs, np.random.default_rng([int(seed), _VIA_STREAM])) if multimodal else None
    obs_log, act_log = [], []
    perturbed, done = 0, False
    while not done:
        action = expert(obs)
        obs_log.append(obs)
        act_log.append(action)
        executed, hit = perturb(action, action_noise, noise_prob, noise_rng)
        perturbed += hit
        obs, _, terminated, truncated, info = env.step(executed)
        done = terminated or truncated
    env.close()
    T = len(act_log)
    ep = {"obs": np.stack(obs_log).astype(np.float32), "action": np.stack(act_log).astype(np.float32)}
    if multimodal:
        ep["via_index"] = np.full(T, via_index, dtype=np.int64)
        ep["via_point"] = np.repeat(expert.via_point[None].astype(np.float32), T, 0)
    stats = {"seed": int(seed), "success": bool(info["success_once"]), "first_success_step": info["first_success_step"],
             "length": T, "perturbed": int(perturbed), "via_index": via_index}
    return ep, stats


def _run_chunk(args) -> list[tuple[dict[str, np.ndarray], dict]]:
    task, seeds, kwargs = args
    return [run_expert_episode(task, s, **kwargs) for s in seeds]


def collect_metaworld(path, task: str, episodes: int, seed: int = 0, action_noise: float = 0.0,
                      noise_prob: float = 0.5, multimodal: bool = False, format: str = "zarr",
                      workers: int | None = None, overwrite: bool = False, progress: bool = True,
                      max_episode_steps: int = MAX_EPISODE_STEPS, via_kwargs: dict | None = None) -> dict:
    """Run MetaWorld's scripted expert of ``task`` for ``episodes`` episodes (env seeds ``seed + i``) and write
    the successful ones to ``path`` (``format``: ``"zarr"`` or ``"lerobot"``). Keys and attrs: module doc.

    ``action_noise`` / ``noise_prob``: the DART perturbation (0: none). ``multimodal``: the
    :class:`~steerlab.envs.metaworld.ViaPointExpert` (``via_kwargs`` go to it: ``k``, ``offset``, ``tol``, ...).
    Episodes run in ``workers`` processes (default ``os.cpu_count()``) and are written in order of ``i``.

    Returns ``{"path", "episodes", "episodes_written", "steps", "success_rate", "seconds",
    "episodes_per_second", "perturbed_steps", "via_counts"}`` (``via_counts``: written episodes per via-point).
    """
    from steerlab.version import __version__

    path = os.fspath(path)
    check_format(format)
    check_task(task)
    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    if int(seed) + int(episodes) > EVAL_SEED0:
        raise ValueError(f"demonstration seeds {seed}..{int(seed) + int(episodes) - 1} reach the evaluation seeds "
                         f"(from {EVAL_SEED0}); use fewer episodes or a lower seed")
    if not float(action_noise) >= 0.0:
        raise ValueError(f"action_noise must be >= 0 (std of the perturbation in action units), got {action_noise!r}")
    if not 0.0 <= float(noise_prob) <= 1.0:
        raise ValueError(f"noise_prob must be in [0, 1], got {noise_prob!r}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (or --overwrite) to replace it")
    episodes, seed = int(episodes), int(seed)

    t0 = time.perf_counter()
    workers = max(1, int(workers or os.cpu_count() or 1))
    seeds = [seed + i for i in range(episodes)]
    chunk = max(1, min(20, -(-episodes // (workers * 4))))
    kwargs = {"action_noise": float(action_noise), "noise_prob": float(noise_prob), "multimodal": bool(multimodal),
              "via_kwargs": dict(via_kwargs or {}), "max_episode_steps": int(max_episode_steps)}
    tasks = [(task, seeds[j: j + chunk], kwargs) for j in range(0, episodes, chunk)]
    results = run_chunks(_run_chunk, tasks, workers, total=episodes, desc=f"collect metaworld {task}",
                         progress=progress)
    seconds = time.perf_counter() - t0

    kept = [(ep, st) for ep, st in results if st["success"]]
    if not kept:
        raise RuntimeError(f"the {task} expert succeeded in none of the {episodes} episodes; nothing to write")
    k = int((via_kwargs or {}).get("k", 2))
    via_counts = [sum(st["via_index"] == i for _, st in kept) for i in range(k)] if multimodal else None
    attrs = {
        "env_id": f"metaworld/{task}",
        "task": "metaworld",
        "metaworld_task": task,
        "obs_dim": OBS_DIM,
        "act_dim": ACT_DIM,
        "seed": seed,
        "episodes": episodes,
        "n_success": len(kept),
        "expert": "metaworld.policies.ENV_POLICY_MAP[task]" + (" after a via-point detour" if multimodal else ""),
        "multimodal": bool(multimodal),
        "via_kwargs": dict(via_kwargs or {}),
        "action_noise": float(action_noise),
        "noise_prob": float(noise_prob),
        "max_episode_steps": int(max_episode_steps),
        "kept": "successful episodes only; each ends at its first success step",
        "episode_seeds": [st["seed"] for _, st in kept],
        "episode_lengths": [st["length"] for _, st in kept],
        "first_success_steps": [st["first_success_step"] for _, st in kept],
        "via_indices": [st["via_index"] for _, st in kept] if multimodal else None,
        "failed_seeds": [st["seed"] for _, st in results if not st["success"]],
        "episode_seed_rule": "episode i uses make_metaworld_env(task, seed + i); episode_seeds lists the kept ones",
        "steerlab_version": __version__,
    }
    write_dataset(path, [ep for ep, _ in kept], attrs=attrs, overwrite=overwrite, format=format, fps=FPS,
                  task=f"MetaWorld {task}", feature_names={"obs": OBS_NAMES, "action": ["dx", "dy", "dz", "grip"]})
    return {
        "path": path,
        "episodes": episodes,
        "episodes_written": len(kept),
        "steps": int(sum(len(ep["action"]) for ep, _ in kept)),
        "success_rate": len(kept) / episodes,
        "seconds": round(time.perf_counter() - t0, 3),
        "episodes_per_second": round(episodes / seconds, 2),
        "perturbed_steps": int(sum(st["perturbed"] for _, st in results)),
        "via_counts": via_counts,
    }
