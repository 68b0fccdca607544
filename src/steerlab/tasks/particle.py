"""The particle task: IBC's N-D particle (``steerlab/Particle-v0``), its oracle's demonstrations and vectorized
closed-loop rollouts on fixed seeds (many environments stepped together, one batched policy call per decision,
the same code for every policy)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.data.windows import WindowDataset
from steerlab.data.zarr_io import DatasetError, EpisodeData, load_episodes, split_episodes
from steerlab.envs.particle import OBS_KEYS, flatten_obs
from steerlab.eval.metrics import success_summary
from steerlab.gym_registration import PARTICLE_ID
from steerlab.hw import module_device
from steerlab.tasks.base import CollectArgs, Task, TaskDims, format_path


def run_episodes(policy, make_env, seeds: list[int], generator: torch.Generator | None = None,
                 progress: bool = False, desc: str = "eval", act_fn=None) -> list[dict]:
    """Roll ``policy`` out in one particle environment per seed (each built by ``make_env()``), all stepped
    together.

    ``act_fn(obs_hist [b, n_obs, Do], env_indices [b]) -> chunk [b, H, A]`` replaces the policy's own
    ``predict_action_chunk`` when given (e.g. to hold a found noise fixed per episode, or to steer each chunk).

    Returns one dict per episode: ``seed``, ``success``, ``return``, ``length``, ``positions [T+1, N]``,
    ``goals [2, N]``, ``obs0`` (the first flat observation), ``obs [T+1, Do]`` (every flat observation) and
    ``actions [T, A]`` (the actions the policy commanded).
    """
    envs = [make_env() for _ in seeds]
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
    """:func:`~steerlab.eval.metrics.success_summary` and the mean return."""
    return {**success_summary(episodes, seconds), "mean_return": float(np.mean([e["return"] for e in episodes]))}


def particle_dataset_path(name: str, cfg) -> Path:
    """``data/<task>-<N>d-<episodes>[-mm].zarr``, the default dataset of a particle-family task."""
    mm = "-mm" if cfg.multimodal else ""
    return Path("data") / f"{name}-{cfg.n_dim}d-{cfg.episodes}{mm}.zarr"


def load_flat_dataset(name: str, dims: TaskDims, n_dim: int, path: Path, per_key_obs: bool,
                      fix: str | None = None) -> EpisodeData:
    """Load ``obs`` and ``action`` and check them against the task's sizes: obs ``[T, obs_dim]`` and action
    ``[T, act_dim]``; with ``per_key_obs`` a dataset holding the particle's four per-key observation arrays
    instead of ``obs`` is read too. ``fix``: what the size error tells the user to do (default: the particle's
    ``--n-dim`` advice)."""
    try:
        data = load_episodes(str(path), keys=["obs", "action"])
    except DatasetError as e:
        if "obs" not in str(e) or not per_key_obs:
            raise
        data = load_episodes(str(path), keys=["action", *OBS_KEYS])  # per-key observations only
        data.data["obs"] = flatten_obs(data.data)
    o, a = data.data["obs"], data.data["action"]
    if o.ndim != 2 or o.shape[1] != dims.obs_dim or a.ndim != 2 or a.shape[1] != dims.act_dim:
        what = name if fix else f"{name} with n_dim={n_dim}"
        if fix is None:
            fix = f"pass --n-dim {a.shape[-1] if a.ndim == 2 else '?'} or a dataset collected for n_dim={n_dim}"
        raise DatasetError(
            f"{path}: obs {list(o.shape)} / action {list(a.shape)} do not match {what} "
            f"(expects obs [T, {dims.obs_dim}] and action [T, {dims.act_dim}]); {fix}"
        )
    return data


def flat_training_windows(data: EpisodeData, dims: TaskDims, cfg, policy, horizon: int):
    """Split ``data`` (the last ``cfg.val_episodes`` held out), fit ``policy``'s normalizers on the training
    episodes and return ``(train windows, held-out windows or None)`` of ``obs`` / ``action`` arrays."""
    train, val = split_episodes(data, cfg.val_episodes)
    policy.fit_normalizers(train.data, action_low=dims.action_low, action_high=dims.action_high,
                           episode_ends=train.episode_ends, seed=cfg.seed)

    def windows(d: EpisodeData) -> WindowDataset:
        return WindowDataset.from_arrays(d.data["obs"], d.data["action"], d.episode_ends, policy.n_obs_steps, horizon)

    return windows(train), (windows(val) if val is not None else None)


@dataclass(frozen=True)
class ParticleCollectArgs(CollectArgs):
    """Collect IBC's oracle demonstrations on steerlab/Particle-v0 into a zarr dataset (diffusion_policy layout)
    or a LeRobotDataset v3.0 (default path data/particle-<N>d-<episodes>[-mm].zarr)."""

    n_dim: int = 2
    """particle dimension N"""
    multimodal: bool = False
    """IBC's multimodal oracle"""


class ParticleTask(Task):
    """A policy on IBC's particle environment: observations ``4N``, actions ``N`` (the agent's set-point).

    ``env_id`` / ``env_kwargs`` pick the environment (any gymnasium id whose env is a particle env, e.g. the
    registered ``steerlab/Particle-v0`` with other ``n_steps``); the oracle's demonstrations come from
    :func:`steerlab.data.collect.collect_particle`."""

    collect_args = ParticleCollectArgs

    def __init__(self, name: str = "particle", env_id: str = PARTICLE_ID, env_kwargs: dict | None = None):
        self.name, self.env_id, self.env_kwargs = name, env_id, dict(env_kwargs or {})

    def make_env(self, n_dim: int) -> gym.Env:
        return gym.make(self.env_id, n_dim=n_dim, **self.env_kwargs)

    def default_dataset_path(self, cfg) -> Path:
        return particle_dataset_path(self.name, cfg)

    def collect_demos(self, cfg, path: Path, progress: bool = True) -> None:
        from steerlab.data.collect import collect_particle

        print(f"[steerlab] default dataset {path} not found: collecting {cfg.episodes} oracle demos "
              f"(n_dim={cfg.n_dim})")
        path.parent.mkdir(parents=True, exist_ok=True)
        collect_particle(str(path), n_dim=cfg.n_dim, episodes=cfg.episodes, seed=0, multimodal=cfg.multimodal,
                         progress=progress)

    def collect_options(self, cfg) -> list[str]:
        return [*super().collect_options(cfg), "--n-dim", str(cfg.n_dim), *(["--multimodal"] if cfg.multimodal else [])]

    def load_dataset(self, n_dim: int, path: Path) -> EpisodeData:
        """The dataset at ``path``, checked against the task's sizes (flat ``obs`` or the per-key arrays)."""
        return load_flat_dataset(self.name, self.dims(n_dim), n_dim, path, per_key_obs=True)

    def training_windows(self, cfg, path: Path, policy, horizon: int):
        return flat_training_windows(self.load_dataset(cfg.n_dim, path), self.dims(cfg.n_dim), cfg, policy, horizon)

    def rollout(self, policy, cfg, seeds, generator, progress=False, desc="eval") -> list[dict]:
        return run_episodes(policy, partial(self.make_env, cfg.n_dim), seeds, generator=generator, progress=progress,
                            desc=desc)

    def summarize(self, episodes: list[dict], seconds: float) -> dict:
        return summarize(episodes, seconds)

    def run_dir_suffix(self, cfg) -> str:
        return f"-{cfg.n_dim}d"  # n_dim is a particle parameter

    def dims_label(self, cfg) -> str:
        return f" {cfg.n_dim}-D"

    def summary_line(self, res: dict) -> str:
        return f"mean return {res['mean_return']:.3f}"

    def plot_rollouts(self, episodes, path, title):
        from steerlab.eval.plots import plot_rollouts

        return plot_rollouts(episodes, path, title=title)

    def collect(self, args: ParticleCollectArgs) -> dict:
        from steerlab.data.collect import collect_particle

        out = args.out or format_path(particle_dataset_path(self.name, args).as_posix(), args.format)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return collect_particle(out, n_dim=args.n_dim, episodes=args.episodes, seed=args.seed,
                                multimodal=args.multimodal, workers=args.workers, overwrite=args.overwrite,
                                format=args.format)
