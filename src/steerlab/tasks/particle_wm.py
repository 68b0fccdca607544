"""The particle world-model task (``particle-wm``): a model of future particle positions given the state and a
plan, trained on a dataset only (:mod:`steerlab.data.collect_wm` writes it); it has no environment to roll out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steerlab.envs.particle import POS_AGENT_BOUNDS
from steerlab.tasks.base import Task, TaskDims
from steerlab.tasks.particle import flat_training_windows, load_flat_dataset, particle_dataset_path

WM_HORIZON = 16  # plan / future length of the particle world model
WM_TASK = "particle-wm"


class ParticleWorldModelTask(Task):
    """Observations: the flat particle observation ``4N`` then the plan ``WM_HORIZON * N``; "actions": the agent
    position ``N`` after each step, bounded by the particle's position bounds."""

    has_env = False

    def __init__(self, name: str = WM_TASK):
        self.name = name

    def _no_env(self) -> ValueError:
        return ValueError(f"{self.name!r} trains a world model, not a policy: it has no environment to roll out "
                          "(train it with --no-eval)")

    def make_env(self, n_dim: int):
        raise self._no_env()

    def dims(self, n_dim: int) -> TaskDims:
        lo, hi = POS_AGENT_BOUNDS
        return TaskDims(4 * n_dim + WM_HORIZON * n_dim, n_dim, np.full(n_dim, lo), np.full(n_dim, hi))

    def default_dataset_path(self, cfg) -> Path:
        return particle_dataset_path(self.name, cfg)

    def collect_demos(self, cfg, path: Path, progress: bool = True) -> None:
        raise FileNotFoundError(f"world-model dataset {path} not found: {self.collect_hint(cfg, path)}, and pass it "
                                "with --dataset")

    def collect_hint(self, cfg, path: Path) -> str:
        return (f"write it with steerlab.data.collect_wm.collect_world_model({str(path)!r}, <policy run>, ...) "
                "(benchmarks/world_model_stress.py does)")

    def training_windows(self, cfg, path: Path, policy, horizon: int):
        dims = self.dims(cfg.n_dim)
        data = load_flat_dataset(self.name, dims, cfg.n_dim, path, per_key_obs=False)
        return flat_training_windows(data, dims, cfg, policy, horizon)

    def rollout(self, policy, cfg, seeds, generator, progress=False, desc="eval"):
        raise self._no_env()

    def summarize(self, episodes, seconds):
        raise self._no_env()

    def run_dir_suffix(self, cfg) -> str:
        return f"-{cfg.n_dim}d"

    def dims_label(self, cfg) -> str:
        return f" {cfg.n_dim}-D"

    def summary_line(self, res: dict) -> str:
        raise self._no_env()

    def plot_rollouts(self, episodes, path, title):
        raise self._no_env()
