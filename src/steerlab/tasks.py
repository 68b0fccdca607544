"""Task glue: which environment, which dataset keys and how to collect demonstrations for a run."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

import steerlab.envs  # noqa: F401  (registers the environments)
from steerlab.data.zarr_io import DatasetError, EpisodeData, load_episodes
from steerlab.envs.particle import OBS_KEYS, flatten_obs

TASKS = {"particle": "steerlab/Particle-v0"}


def env_id(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown env {task!r}; known: {sorted(TASKS)}")
    return TASKS[task]


def env_kwargs(task: str, n_dim: int) -> dict:
    return {"n_dim": n_dim}


def make_env(task: str, n_dim: int) -> gym.Env:
    return gym.make(env_id(task), **env_kwargs(task, n_dim))


def dims(task: str, n_dim: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(obs_dim, act_dim, action_low, action_high)`` of a task."""
    env = make_env(task, n_dim)
    space = env.action_space
    obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_space.spaces.values())
    env.close()
    return obs_dim, int(np.prod(space.shape)), np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)


def ensure_dataset(task: str, n_dim: int, episodes: int, path: Path, multimodal: bool = False,
                   seed: int = 0, progress: bool = True) -> Path:
    """Collect oracle demonstrations into ``path`` unless it already exists."""
    path = Path(path)
    if path.exists():
        return path
    from steerlab.data.collect import collect_particle

    print(f"[steerlab] dataset {path} not found: collecting {episodes} oracle demos (n_dim={n_dim})")
    path.parent.mkdir(parents=True, exist_ok=True)
    collect_particle(str(path), n_dim=n_dim, episodes=episodes, seed=seed, multimodal=multimodal, progress=progress)
    return path


def load_task_dataset(task: str, n_dim: int, path: Path) -> EpisodeData:
    """Load a dataset and check it matches the task: obs ``[T, 4N]`` (or the four per-key arrays) and
    action ``[T, N]``."""
    obs_dim, act_dim, _, _ = dims(task, n_dim)
    try:
        data = load_episodes(str(path), keys=["obs", "action"])
    except DatasetError as e:
        if "obs" not in str(e):
            raise
        data = load_episodes(str(path), keys=["action", *OBS_KEYS])  # per-key observations only
        data.data["obs"] = flatten_obs(data.data)
    o, a = data.data["obs"], data.data["action"]
    if o.ndim != 2 or o.shape[1] != obs_dim or a.ndim != 2 or a.shape[1] != act_dim:
        raise DatasetError(
            f"{path}: obs {list(o.shape)} / action {list(a.shape)} do not match {task} with n_dim={n_dim} "
            f"(expects obs [T, {obs_dim}] and action [T, {act_dim}]); pass --n-dim {a.shape[-1] if a.ndim == 2 else '?'} "
            f"or a dataset collected for n_dim={n_dim}"
        )
    return data
