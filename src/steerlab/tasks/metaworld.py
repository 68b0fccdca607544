"""MetaWorld (state observations) as a family of tasks: a run names one MetaWorld task as
``env="metaworld/<task>"`` (``--env metaworld/push-v3``; the names are :func:`~steerlab.envs.metaworld.metaworld_tasks`).

The registered task ``metaworld`` is the family: :func:`~steerlab.tasks.registry.get_task` builds
``metaworld/<task>`` from it with :meth:`MetaWorldTask.variant`, so :class:`~steerlab.train.config.TrainConfig`
needs no MetaWorld field. ``metaworld`` itself only collects: ``steerlab collect metaworld --task push-v3``.

Observations 39-D, actions 4-D in [-1, 1] (:mod:`steerlab.envs.metaworld`). Demonstrations are MetaWorld's scripted
expert on env seeds ``0 .. episodes - 1`` (the run's ``episodes``; ``multimodal``: the via-point expert;
``demo_noise``: DART noise on half the steps), successful episodes only; evaluation starts at env seed
``eval.seed0`` (100 000), so the two are disjoint. Success is MetaWorld's ``info["success"]`` at any step; an
evaluated episode ends at its first success or after ``max_episode_steps`` (MetaWorld's 500).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steerlab.data.zarr_io import DatasetError
from steerlab.envs.metaworld import (
    ACT_DIM,
    DEMO_SEED0,
    EVAL_SEED0,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    check_task,
    make_metaworld_env,
    via_points,
)
from steerlab.tasks.base import CollectArgs, Task, TaskDims, format_path
from steerlab.tasks.particle import flat_training_windows, load_flat_dataset

FAMILY = "metaworld"
DART_PROB = 0.5  # share of the steps a training run's DART demonstrations (--demo-noise) perturb


def metaworld_dataset_name(task: str, episodes: int, multimodal: bool = False, action_noise: float = 0.0,
                           noise_prob: float = DART_PROB) -> str:
    """Default path of a MetaWorld dataset: ``data/metaworld-<task>-<episodes>[-mm][-dart<noise>p<prob>].zarr``."""
    mm = "-mm" if multimodal else ""
    dart = f"-dart{action_noise:g}p{noise_prob:g}" if action_noise > 0 else ""
    return f"data/{FAMILY}-{task}-{int(episodes)}{mm}{dart}.zarr"


@dataclass(frozen=True)
class MetaWorldCollectArgs(CollectArgs):
    """Collect MetaWorld's scripted-expert demonstrations (successful episodes only, each ending at its first
    success) on env seeds seed..seed+episodes-1 into a zarr dataset or a LeRobotDataset v3.0 (default path
    data/metaworld-<task>-<episodes>[-mm][-dart<noise>p<prob>].zarr)."""

    task: str = "push-v3"
    """MetaWorld v3 task name (reach-v3, push-v3, pick-place-v3, door-open-v3, ...)"""
    episodes: int = 50
    """episodes to run; episode i uses env seed seed + i (the failed ones are not written)"""
    action_noise: float = 0.0
    """DART noise: std of the perturbation added to the executed action (action units; the recorded action stays
    the expert's); 0: none"""
    noise_prob: float = DART_PROB
    """probability that a step is perturbed when --action-noise > 0"""
    multimodal: bool = False
    """the via-point expert: a detour through one of two via-points, drawn per episode, before the expert"""
    max_episode_steps: int = MAX_EPISODE_STEPS
    """episode limit of the expert's episodes"""


class MetaWorldTask(Task):
    """One MetaWorld task (``mw_task``, e.g. ``"push-v3"``), or with ``mw_task=None`` the family, which builds
    them (:meth:`variant`) and collects (``steerlab collect metaworld``).

    ``max_episode_steps`` caps :meth:`make_env`'s and evaluation's episodes (default MetaWorld's 500; a smaller
    cap makes a quick check, e.g. ``register_task("mw-quick", MetaWorldTask("mw-quick", "reach-v3",
    max_episode_steps=20))``); demonstrations always run to MetaWorld's limit.
    """

    collect_args = MetaWorldCollectArgs

    def __init__(self, name: str = FAMILY, mw_task: str | None = None, max_episode_steps: int = MAX_EPISODE_STEPS):
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self.name, self.max_episode_steps = name, int(max_episode_steps)
        self.mw_task = check_task(mw_task) if mw_task is not None else None  # an ImportError says how to install

    def variant(self, name: str) -> MetaWorldTask:
        if self.mw_task is not None:
            raise ValueError(f"{self.name!r} is one MetaWorld task already; name another as {FAMILY}/<task>")
        task = MetaWorldTask(f"{self.name}/{name}", name, self.max_episode_steps)
        task.collect_args = None  # `steerlab collect metaworld --task <name>` collects for it
        return task

    @property
    def task(self) -> str:
        """The MetaWorld task name; an error saying how to name one on the family itself."""
        if self.mw_task is None:
            raise ValueError(f"{self.name!r} is the MetaWorld family: name one task, e.g. --env {self.name}/push-v3 "
                             f"(the names: steerlab.envs.metaworld.metaworld_tasks())")
        return self.mw_task

    # ------------------------------------------------------------------------------ environment and sizes
    def make_env(self, n_dim: int):
        """The task's env for the first evaluation seed (MetaWorld fixes the variation when an env is made: other
        seeds need :func:`~steerlab.envs.metaworld.make_metaworld_env`); ``n_dim`` is a particle parameter."""
        return make_metaworld_env(self.task, EVAL_SEED0, max_episode_steps=self.max_episode_steps,
                                  terminate_on_success=True)

    def dims(self, n_dim: int) -> TaskDims:
        return TaskDims(OBS_DIM, ACT_DIM, -np.ones(ACT_DIM), np.ones(ACT_DIM))

    # ------------------------------------------------------------------------------ data
    def default_dataset_path(self, cfg) -> Path:
        return Path(metaworld_dataset_name(self.task, cfg.episodes, cfg.multimodal, cfg.demo_noise))

    def collect_demos(self, cfg, path: Path, progress: bool = True) -> None:
        from steerlab.data.collect_metaworld import collect_metaworld

        kind = "via-point expert" if cfg.multimodal else "scripted expert"
        dart = f" with DART noise {cfg.demo_noise:g}" if cfg.demo_noise > 0 else ""
        print(f"[steerlab] default dataset {path} not found: running the {self.task} {kind} for {cfg.episodes} "
              f"episodes{dart}")
        path.parent.mkdir(parents=True, exist_ok=True)
        res = collect_metaworld(str(path), self.task, cfg.episodes, seed=DEMO_SEED0, action_noise=cfg.demo_noise,
                                noise_prob=DART_PROB, multimodal=cfg.multimodal, progress=progress)
        print(f"[steerlab] {res['episodes_written']} of {cfg.episodes} expert episodes succeeded and were written")

    def collect_options(self, cfg) -> list[str]:
        noise = ["--action-noise", f"{cfg.demo_noise:g}"] if cfg.demo_noise > 0 else []
        return ["--task", self.task, *super().collect_options(cfg), *(["--multimodal"] if cfg.multimodal else []),
                *noise]

    def collect_command(self, cfg, path: Path) -> list[str]:
        """``steerlab collect metaworld --task <task> ...``: the family collects for every task."""
        return ["steerlab", "collect", FAMILY, *self.collect_options(cfg), "--out", str(path)]

    def training_windows(self, cfg, path: Path, policy, horizon: int):
        dims = self.dims(cfg.n_dim)
        data = load_flat_dataset(self.name, dims, cfg.n_dim, path, per_key_obs=False,
                                 fix=f"pass a MetaWorld dataset (`steerlab collect {FAMILY} --task {self.task}`)")
        collected = data.attrs.get("metaworld_task")
        if collected is not None and collected != self.task:
            raise DatasetError(f"{path} holds {collected} demonstrations but the run's task is {self.name}; pass "
                               f"--env {FAMILY}/{collected} or a {self.task} dataset")
        return flat_training_windows(data, dims, cfg, policy, horizon)

    # ------------------------------------------------------------------------------ evaluation
    def rollout(self, policy, cfg, seeds, generator, progress=False, desc="eval") -> list[dict]:
        """All ``seeds`` stepped together (:func:`~steerlab.eval.metaworld.evaluate_metaworld`); each episode dict
        adds ``via_points [2, 3]`` (the via-point expert's two candidates from its start) when the run's
        demonstrations were multimodal."""
        from steerlab.eval.metaworld import evaluate_metaworld

        if min(seeds) < DEMO_SEED0 + cfg.episodes and not cfg.dataset:
            warnings.warn(f"evaluation seeds from {min(seeds)} overlap the demonstration seeds {DEMO_SEED0}.."
                          f"{DEMO_SEED0 + cfg.episodes - 1}; use --eval.seed0 {EVAL_SEED0}", stacklevel=2)
        eps = evaluate_metaworld(policy, self.task, seeds, max_episode_steps=self.max_episode_steps,
                                 terminate_on_success=True, generator=generator, progress=progress)["episodes"]
        if cfg.multimodal:
            env = make_metaworld_env(self.task, EVAL_SEED0)  # the hand workspace the collector clips to
            low, high = env.unwrapped.mocap_low, env.unwrapped.mocap_high
            env.close()
            for e in eps:
                e["via_points"] = via_points(self.task, e["obs0"], low=low, high=high)
        return eps

    def summarize(self, episodes: list[dict], seconds: float) -> dict:
        """:func:`~steerlab.eval.metaworld.summarize_metaworld` (success with its Wilson interval, the mean
        first-success step over successful episodes, ...) with ``episodes`` the count and the task's name."""
        from steerlab.eval.metaworld import summarize_metaworld

        res = summarize_metaworld(episodes, seconds)
        res["episodes"] = res.pop("n_episodes")
        return {**res, "metaworld_task": self.task, "max_episode_steps": self.max_episode_steps}

    # ------------------------------------------------------------------------------ naming and reports
    def run_dir_suffix(self, cfg) -> str:
        """``-<task>[-mm][-dart<noise>]``: runs on the via-point or DART demos get their own default directory."""
        dart = f"-dart{cfg.demo_noise:g}" if cfg.demo_noise > 0 else ""
        return f"-{self.task}" + ("-mm" if cfg.multimodal else "") + dart

    def summary_line(self, res: dict) -> str:
        first = res.get("mean_first_success_step")
        first = f"mean first-success step {first:.0f}" if first is not None else "no success"
        return f"{first}, mean episode length {res['mean_length']:.0f} (limit {res['max_episode_steps']})"

    def plot_rollouts(self, episodes, path, title):
        from steerlab.eval.plots import plot_metaworld_rollouts

        return plot_metaworld_rollouts(episodes, path, title=f"MetaWorld {self.task}, {title}")

    # ------------------------------------------------------------------------------ `steerlab collect`
    def collect(self, args: MetaWorldCollectArgs) -> dict:
        from steerlab.data.collect_metaworld import collect_metaworld

        out = args.out or format_path(metaworld_dataset_name(check_task(args.task), args.episodes, args.multimodal,
                                                             args.action_noise, args.noise_prob), args.format)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return collect_metaworld(out, args.task, args.episodes, seed=args.seed, action_noise=args.action_noise,
                                 noise_prob=args.noise_prob, multimodal=args.multimodal, format=args.format,
                                 workers=args.workers, overwrite=args.overwrite,
                                 max_episode_steps=args.max_episode_steps)
