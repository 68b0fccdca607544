"""Task glue: which environment, which dataset keys and how to collect demonstrations for a run."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from steerlab.data.zarr_io import DatasetError, EpisodeData, load_episodes, split_episodes
from steerlab.envs.particle import OBS_KEYS, flatten_obs

TASKS = {"particle": "steerlab/Particle-v0", "nav2d": "steerlab/Nav2D-v0"}
# Tasks without an environment of their own: datasets for models that are not policies of an env.
# "particle-wm": world model of future particle positions given the state and a plan (steerlab.data.collect_wm).
MODEL_TASKS = ("particle-wm",)


def env_id(task: str) -> str:
    if task in MODEL_TASKS:
        raise ValueError(f"{task!r} trains a world model, not a policy: it has no environment to roll out "
                         "(train it with --no-eval)")
    if task not in TASKS:
        raise ValueError(f"unknown env {task!r}; known: {sorted(TASKS) + list(MODEL_TASKS)}")
    return TASKS[task]


def env_kwargs(task: str, n_dim: int) -> dict:
    return {} if task == "nav2d" else {"n_dim": n_dim}


def make_env(task: str, n_dim: int) -> gym.Env:
    return gym.make(env_id(task), **env_kwargs(task, n_dim))


def dims(task: str, n_dim: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(obs_dim, act_dim, action_low, action_high)`` of a task."""
    if task == "particle-wm":
        from steerlab.data.collect_wm import WM_HORIZON
        from steerlab.envs.particle import POS_AGENT_BOUNDS

        lo, hi = POS_AGENT_BOUNDS
        return 4 * n_dim + WM_HORIZON * n_dim, n_dim, np.full(n_dim, lo), np.full(n_dim, hi)
    env = make_env(task, n_dim)
    space = env.action_space
    obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_space.spaces.values())
    env.close()
    return obs_dim, int(np.prod(space.shape)), np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)


def ensure_dataset(task: str, n_dim: int, episodes: int, path: Path, multimodal: bool = False,
                   seed: int = 0, progress: bool = True, demo_noise: float = 0.0) -> Path:
    """Collect oracle demonstrations into ``path`` unless it already exists."""
    path = Path(path)
    if path.exists():
        return path
    if task in MODEL_TASKS:
        raise FileNotFoundError(f"world-model dataset {path} not found: write it first with "
                                "steerlab.data.collect_wm.collect_world_model (benchmarks/world_model_stress.py "
                                "does) and pass it with --dataset")
    if task == "nav2d":
        from steerlab.data.collect_nav2d import collect_nav2d

        dart = f" with DART noise {demo_noise:g}" if demo_noise > 0 else ""
        print(f"[steerlab] dataset {path} not found: collecting {episodes} route-planner episodes on Nav2D{dart}")
        path.parent.mkdir(parents=True, exist_ok=True)
        collect_nav2d(str(path), episodes=episodes, seed=seed, progress=progress, action_noise=demo_noise)
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
        if "obs" not in str(e) or task in MODEL_TASKS:
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


def training_windows(task: str, n_dim: int, path: Path, policy, horizon: int, val_episodes: int, seed: int):
    """Load the dataset at ``path``, fit ``policy``'s normalizers and return ``(train windows, held-out windows or
    None)``; the last ``val_episodes`` episodes are held out. Windows have ``len`` and ``batch(idx)``."""
    from steerlab.data.windows import WindowDataset

    if task == "nav2d":
        from steerlab.nav.data import NavWindowDataset, load_nav_dataset

        train, val = split_episodes(load_nav_dataset(path), val_episodes)
        policy.fit_normalizers(train.data, seed=seed)
        ds = NavWindowDataset.from_episodes(train, policy.n_obs_steps)
        return ds, (NavWindowDataset.from_episodes(val, policy.n_obs_steps) if val is not None else None)
    _, _, env_low, env_high = dims(task, n_dim)
    data = load_task_dataset(task, n_dim, path)
    policy.fit_normalizers(data.data["obs"], data.data["action"], env_low, env_high, episode_ends=data.episode_ends, seed=seed)
    train, val = split_episodes(data, val_episodes)

    def windows(d: EpisodeData) -> WindowDataset:
        return WindowDataset.from_arrays(d.data["obs"], d.data["action"], d.episode_ends, policy.n_obs_steps, horizon)

    return windows(train), (windows(val) if val is not None else None)
