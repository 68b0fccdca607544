"""The task protocol: what the training loop, evaluation, reports and ``steerlab collect`` need from a task.

A task is an object (usually one instance per registered name) implementing :class:`Task`. Its methods take the
run's config (a :class:`~steerlab.train.config.TrainConfig`, read only through its fields: ``n_dim``, ``episodes``,
``multimodal``, ``demo_noise``, ``val_episodes``, ``seed``, ``preset`` and ``eval``), so a task module never
imports the config module.
"""

from __future__ import annotations

import abc
import difflib
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.data.episodes import DatasetError
from steerlab.hw import module_device


class TaskDims(NamedTuple):
    """A task's sizes for building a policy: flat observation and action dimensions, and the action bounds."""

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray


@dataclass(frozen=True)
class CollectArgs:
    """Options every ``steerlab collect <task>`` takes; a task's own options subclass this."""

    episodes: int = 2000
    """episodes to collect; episode i uses env seed seed + i"""
    seed: int = 0
    out: str | None = None
    """output path (default: the task's dataset name, see `steerlab collect <task> --help`)"""
    workers: int | None = None
    """processes (default: all cores)"""
    overwrite: bool = False
    format: Literal["zarr", "lerobot"] = "zarr"
    """zarr (diffusion_policy layout) or lerobot (a LeRobotDataset v3.0 directory; default path ends -lerobot)"""


def format_path(zarr_path: str, format: str) -> str:
    """The default output path of a dataset in ``format``: ``x.zarr``, or the directory ``x-lerobot``."""
    return zarr_path if format == "zarr" else zarr_path.removesuffix(".zarr") + "-lerobot"


def near_paths(path: Path, n: int = 3) -> list[Path]:
    """Existing paths that differ from the missing ``path`` in its first missing component only, by a name close
    to it (:func:`difflib.get_close_matches` among that component's siblings): the paths a typo most likely meant."""
    path = Path(path)
    parts = path.parts
    for i, part in enumerate(parts):
        parent = Path(*parts[:i]) if i else Path(".")
        if not (parent / part).exists():
            break
    else:
        return []
    try:
        siblings = [p.name for p in parent.iterdir()]
    except OSError:  # the parent is a file, or unreadable
        return []
    rest = parts[i + 1:]
    near = [parent / name for name in difflib.get_close_matches(part, siblings, n=max(len(siblings), 1), cutoff=0.6)]
    return [p for p in (q.joinpath(*rest) for q in near) if p.exists()][:n]


class Task(abc.ABC):
    """One task: its environment, demonstrations, training windows, evaluation, report and collector.

    Subclasses implement the abstract methods; the others have defaults that fit a task with a gymnasium
    environment whose observation space is a ``Dict`` of flat boxes.
    """

    #: the name runs select it by (``TrainConfig.env``)
    name: str
    #: False for a task with no environment to roll out (a model trained on a dataset only)
    has_env: bool = True
    #: the dataclass of ``steerlab collect <name>`` options (a :class:`CollectArgs`); None: no collector
    collect_args: type[CollectArgs] | None = None

    def variant(self, name: str) -> "Task":
        """The task a run names ``<self.name>/<name>`` (a family of tasks, e.g. ``metaworld/push-v3``), built by
        :func:`~steerlab.tasks.registry.get_task` on first use; its ``name`` must be ``<self.name>/<name>``."""
        raise ValueError(f"task {self.name!r} has no variants: use env={self.name!r}, not {self.name}/{name}")

    # ------------------------------------------------------------------------------ environment and sizes
    @abc.abstractmethod
    def make_env(self, n_dim: int) -> gym.Env:
        """A fresh environment of the task (``n_dim``: the run's ``--n-dim``, which a task may ignore)."""

    def dims(self, n_dim: int) -> TaskDims:
        """Flat observation size (the sum over the ``Dict`` observation space), action size and action bounds."""
        env = self.make_env(n_dim)
        space = env.action_space
        obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_space.spaces.values())
        env.close()
        return TaskDims(obs_dim, int(np.prod(space.shape)), np.asarray(space.low, np.float64),
                        np.asarray(space.high, np.float64))

    # ------------------------------------------------------------------------------ data
    @abc.abstractmethod
    def default_dataset_path(self, cfg) -> Path:
        """Where a run without ``--dataset`` reads (and, if missing, collects) its demonstrations."""

    def ensure_dataset(self, cfg, path: Path, progress: bool = True) -> Path:
        """``path``, after collecting demonstrations into it if it does not exist yet. The training loop calls
        it for the default dataset only; a missing ``--dataset`` is :meth:`missing_dataset_error` instead."""
        path = Path(path)
        if not path.exists():
            self.collect_demos(cfg, path, progress)
        return path

    @abc.abstractmethod
    def collect_demos(self, cfg, path: Path, progress: bool = True) -> None:
        """Collect the run's demonstrations (``cfg.episodes`` of them, env seeds from 0) into ``path``."""

    def collect_options(self, cfg) -> list[str]:
        """The ``steerlab collect`` options that reproduce the demonstrations :meth:`collect_demos` collects for
        ``cfg`` (``--episodes`` and the task's own fields of ``cfg``)."""
        return ["--episodes", str(cfg.episodes)]

    def collect_command(self, cfg, path: Path) -> list[str] | None:
        """The ``steerlab collect`` command line that writes those demonstrations into ``path``; None for a task
        with no collector."""
        if self.collect_args is None:
            return None
        return ["steerlab", "collect", self.name, *self.collect_options(cfg), "--out", str(path)]

    def collect_hint(self, cfg, path: Path) -> str:
        """How to create the dataset ``path`` for ``cfg``: :meth:`collect_command`, or a sentence for a task with
        no collector."""
        cmd = self.collect_command(cfg, path)
        if cmd is None:
            return f"task {self.name!r} has no collector: write the dataset first"
        return f"`{shlex.join(cmd)}`"

    def missing_dataset_error(self, cfg, path: Path) -> DatasetError:
        """The error of a run whose ``--dataset`` does not exist: it names the path, the existing paths a typo
        may have meant (:func:`near_paths`), how to create it (:meth:`collect_hint`) and, for a task that can
        collect, the default dataset, which a run without ``--dataset`` collects when missing."""
        path = Path(path)
        msg = f"--dataset {path} does not exist (only a run's default dataset is collected automatically)."
        near = near_paths(path)
        if near:
            msg += " Did you mean " + " or ".join(str(p) for p in near) + "?"
        msg += f" To create it: {self.collect_hint(cfg, path)}."
        if self.collect_command(cfg, path) is not None:
            msg += f" Or drop --dataset to train on the default {self.default_dataset_path(cfg)} (collected if " \
                   "missing)."
        return DatasetError(msg)

    @abc.abstractmethod
    def training_windows(self, cfg, path: Path, policy, horizon: int) -> tuple[Any, Any | None]:
        """Load the dataset at ``path``, hold out its last ``cfg.val_episodes`` episodes, fit ``policy``'s
        normalizers on the training episodes only (:meth:`steerlab.policy.Policy.fit_normalizers`) and return
        ``(train windows, held-out windows or None)``; windows have ``len``, ``batch(idx)`` and ``n_episodes``
        (the episodes they come from, which the run's ``meta.json`` and report state). The training windows are
        one per step of the data given to ``fit_normalizers``, in order (row ``i`` is its step ``i``), which
        per-row training state relies on (IBC's persistent chains look up a row's episode in its
        ``episode_ends``)."""

    # ------------------------------------------------------------------------------ evaluation
    @abc.abstractmethod
    def rollout(self, policy, cfg, seeds: list[int], generator: torch.Generator, progress: bool = False,
                desc: str = "eval") -> list[dict]:
        """One closed-loop episode per env seed; a list of per-episode dicts with at least ``seed``,
        ``success`` and ``length``."""

    @abc.abstractmethod
    def summarize(self, episodes: list[dict], seconds: float) -> dict:
        """The metrics of evaluated episodes (``episodes``, ``successes``, ``success_rate``, ``success_ci95``,
        ``episodes_per_s``, ``seeds`` and the task's own rates)."""

    def evaluate(self, policy, cfg, episodes: int | None = None, progress: bool = True) -> tuple[dict, list[dict]]:
        """``(metrics, episodes)`` on env seeds ``cfg.eval.seed0 + i`` for ``i < episodes`` (default
        ``cfg.eval.episodes``), rolled out in batches of ``cfg.eval.batch`` with one sampling generator seeded by
        ``cfg.eval.inference_seed``."""
        ec = cfg.eval
        n = episodes or ec.episodes
        seeds = [ec.seed0 + i for i in range(n)]
        gen = torch.Generator(device=module_device(policy)).manual_seed(ec.inference_seed)
        t0 = time.time()
        out: list[dict] = []
        n_batches = -(-n // ec.batch)
        bar = tqdm(total=n, desc="eval episodes", disable=not progress or n_batches == 1, dynamic_ncols=True)
        for s in range(0, n, ec.batch):
            batch = seeds[s : s + ec.batch]
            out += self.rollout(policy, cfg, batch, gen, progress=progress,
                                desc=f"eval {len(batch)} episodes"
                                + (f" (batch {s // ec.batch + 1}/{n_batches})" if n_batches > 1 else ""))
            bar.update(len(batch))
        bar.close()
        return self.summarize(out, time.time() - t0), out

    def test_time(self, policy, cfg, *, correct: str | None, rerank: int | None, guidance: float | None,
                  execute_waypoints: int | None, episodes: int | None, progress: bool):
        """The task's own test-time evaluation (``steerlab eval --rerank ...``) as ``(rows, title, rates)`` for
        the side-by-side table, or None when the policy's test-time uses apply (the energy critic's)."""
        return None

    # ------------------------------------------------------------------------------ naming and reports
    def run_dir_suffix(self, cfg) -> str:
        """What the default run directory name ``<preset><suffix>-s<seed>`` adds for this task's parameters."""
        return ""

    def dims_label(self, cfg) -> str:
        """What report headers and plot titles add after the task or preset name (e.g. ``" 2-D"``)."""
        return ""

    @abc.abstractmethod
    def summary_line(self, res: dict) -> str:
        """The report's line of the task's own metrics (besides success), e.g. ``mean return 0.812``."""

    @abc.abstractmethod
    def plot_rollouts(self, episodes: list[dict], path: Path, title: str) -> Path | None:
        """Plot evaluated episodes into ``path``; the path written (None: nothing to plot)."""

    # ------------------------------------------------------------------------------ `steerlab collect`
    def collect(self, args: CollectArgs) -> dict:
        """Run ``steerlab collect <name>`` with parsed ``args`` (of :attr:`collect_args`); a summary dict."""
        raise ValueError(f"task {self.name!r} has no demonstration collector for `steerlab collect`")
