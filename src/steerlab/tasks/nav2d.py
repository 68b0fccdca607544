"""The nav2d task: a NoMaD-style goal-conditioned nav policy on ``steerlab/Nav2D-v0``, trained on the route
planner oracle's demonstrations and evaluated with the oracle's route choice as its intent."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym

from steerlab.data.zarr_io import split_episodes
from steerlab.eval.metrics import success_summary
from steerlab.gym_registration import NAV2D_ID
from steerlab.tasks.base import CollectArgs, Task, format_path


@dataclass(frozen=True)
class NavCollectArgs(CollectArgs):
    """Collect the route-planner oracle's demonstrations on steerlab/Nav2D-v0 (successful episodes only) into a
    zarr dataset or a LeRobotDataset v3.0 (default path data/nav2d-<family>-<episodes>[-dart<noise>p<prob>].zarr)."""

    family: Literal["mixed", "corridors", "rooms", "clutter"] = "mixed"
    """map family; mixed draws one per episode"""
    action_noise: float = 0.0
    """DART noise injection, std of the perturbation added to the executed waypoint deltas (action units; the
    recorded action stays the oracle's); 0: none"""
    noise_prob: float = 0.5
    """probability that a decision is perturbed when --action-noise > 0"""


class Nav2DTask(Task):
    """Nav2D: the nav policy (:class:`~steerlab.nav.policy.NavPolicy`) reads the dataset's per-step arrays
    (:func:`~steerlab.nav.data.load_nav_dataset`) and is evaluated by :func:`~steerlab.nav.rollout.rollout_nav`
    (re-ranking and receding-horizon execution from ``cfg.eval.nav_*``)."""

    collect_args = NavCollectArgs

    def __init__(self, name: str = "nav2d", env_id: str = NAV2D_ID):
        self.name, self.env_id = name, env_id

    def make_env(self, n_dim: int) -> gym.Env:
        return gym.make(self.env_id)  # n_dim is a particle parameter

    def default_dataset_path(self, cfg) -> Path:
        from steerlab.data.collect_nav2d import nav_dataset_name  # `steerlab collect nav2d`'s default name

        return Path(nav_dataset_name("mixed", cfg.episodes, cfg.demo_noise))

    def collect_demos(self, cfg, path: Path, progress: bool = True) -> None:
        from steerlab.data.collect_nav2d import collect_nav2d

        dart = f" with DART noise {cfg.demo_noise:g}" if cfg.demo_noise > 0 else ""
        print(f"[steerlab] default dataset {path} not found: collecting {cfg.episodes} route-planner episodes on "
              f"Nav2D{dart}")
        path.parent.mkdir(parents=True, exist_ok=True)
        collect_nav2d(str(path), episodes=cfg.episodes, seed=0, progress=progress, action_noise=cfg.demo_noise)

    def collect_options(self, cfg) -> list[str]:
        noise = ["--action-noise", f"{cfg.demo_noise:g}"] if cfg.demo_noise > 0 else []
        return [*super().collect_options(cfg), *noise]

    def training_windows(self, cfg, path: Path, policy, horizon: int):
        from steerlab.nav.data import NavWindowDataset, load_nav_dataset

        train, val = split_episodes(load_nav_dataset(path), cfg.val_episodes)
        dims = self.dims(cfg.n_dim)
        policy.fit_normalizers(train.data, action_low=dims.action_low, action_high=dims.action_high,
                               episode_ends=train.episode_ends, seed=cfg.seed)
        ds = NavWindowDataset.from_episodes(train, policy.n_obs_steps)
        return ds, (NavWindowDataset.from_episodes(val, policy.n_obs_steps) if val is not None else None)

    def rollout(self, policy, cfg, seeds, generator, progress=False, desc="eval") -> list[dict]:
        """Goal-conditioned, with the oracle's route choice as the intent."""
        from steerlab.nav.rollout import rollout_nav

        ec = cfg.eval
        return rollout_nav(policy, seeds, generator=generator, rerank=ec.nav_rerank,
                           execute_waypoints=ec.nav_execute_waypoints, safety_margin=ec.nav_safety_margin)

    def summarize(self, episodes: list[dict], seconds: float) -> dict:
        from steerlab.nav.rollout import summarize as summarize_nav

        return {**success_summary(episodes, seconds), **summarize_nav(episodes)}

    def test_time(self, policy, cfg, *, correct, rerank, guidance, execute_waypoints, episodes, progress):
        """Rows: the single draw, and ``rerank`` chunks per decision re-ranked by the clearance they keep in the
        robot's egocentric image (:mod:`steerlab.nav.safety`), optionally executing only the first
        ``execute_waypoints`` waypoints."""
        if correct or guidance:
            raise ValueError("--correct and --guide need an energy-critic run; a nav run takes --rerank K "
                             "[--execute-waypoints W] (chunks re-ranked by their clearance in the egocentric image)")
        if not rerank or rerank < 2:
            raise ValueError(f"--rerank must be >= 2 candidate chunks for a nav run, got {rerank!r}")
        k, ec = int(rerank), cfg.eval
        w = f", execute {execute_waypoints} of 8 waypoints" if execute_waypoints else ""
        variants = {"single draw": dataclasses.replace(ec, nav_rerank=0, nav_execute_waypoints=None),
                    f"re-rank {k} by clearance{w}": dataclasses.replace(ec, nav_rerank=k,
                                                                        nav_execute_waypoints=execute_waypoints)}
        rows = {}
        for label, e in variants.items():
            res, _ = self.evaluate(policy, dataclasses.replace(cfg, eval=e), episodes=episodes, progress=progress)
            rows[label] = {**res, "eval": dataclasses.asdict(e)}
            lo, hi = res["success_ci95"]
            print(f"[steerlab] {label:44s} success {res['success_rate']:.1%} [{lo:.1%}, {hi:.1%}], collision "
                  f"{res['collision_rate']:.1%} ({res['episodes_per_s']:.2f} episodes/s)")
        return rows, f"re-ranked deployment of the nav policy — {cfg.preset}", ("collision", "timeout")

    def summary_line(self, res: dict) -> str:
        return f"collision {res['collision_rate']:.1%}, time-out {res['timeout_rate']:.1%}"

    def plot_rollouts(self, episodes, path, title):
        from steerlab.eval.plots import plot_nav_rollouts

        return plot_nav_rollouts(episodes, path, title=title)

    def collect(self, args: NavCollectArgs) -> dict:
        from steerlab.data.collect_nav2d import collect_nav2d, nav_dataset_name

        out = args.out or format_path(nav_dataset_name(args.family, args.episodes, args.action_noise, args.noise_prob),
                                      args.format)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return collect_nav2d(out, episodes=args.episodes, seed=args.seed, family=args.family, workers=args.workers,
                             overwrite=args.overwrite, action_noise=args.action_noise, noise_prob=args.noise_prob,
                             format=args.format)
