"""Collect :class:`~steerlab.envs.nav2d.oracle.NavOracle` demonstrations on ``steerlab/Nav2D-v0`` into a zarr
dataset (diffusion_policy layout, written with :func:`steerlab.data.zarr_io.write_episodes`).

Per-step keys (``T`` = total steps; step ``t`` holds the observation the oracle acted on and its action):

==============  ==================  =============================================================
key             dtype / shape       meaning
==============  ==================  =============================================================
occupancy       uint8 [T, 32, 32]   egocentric occupancy (1 = obstacle / outside the map)
state           float32 [T, 6]      ``[x, y, cos, sin, vx, vy]`` (world frame)
goal_rel        float32 [T, 2]      goal in the robot frame
goal_pos        float32 [T, 2]      goal in the world frame
action          float32 [T, 16]     8 robot-frame waypoint deltas / max_step, in [-1, 1]
distance        float32 [T]         geodesic distance to the goal before the action (world units)
action_mask     bool [T]            True (every step is a real decision)
ref_traj        float32 [T, 32, 2]  the episode's chosen route (32 points) in the robot frame of step t
route_id        int64 [T]           index of the chosen route in ``env.routes``
==============  ==================  =============================================================

plus ``meta/episode_ends``. Only successful episodes are written.

Noise injection (DART, Laskey et al. 2017): with ``action_noise = sigma > 0`` the env executes, at each decision
with probability ``noise_prob``, the oracle's action plus ``N(0, sigma^2)`` on every waypoint delta (in action
units, clipped to ``[-1, 1]``) -- unless the perturbed chunk's swept path would hit an obstacle, in which case the
clean action is executed. The *recorded* action is always the oracle's clean action at the state reached, so the
data show the oracle correcting from states off its route, which a policy that drifts in closed loop visits and a
noise-free demonstration never does. The perturbation has its own random stream ``[seed, 2]``. After a
perturbation the oracle's own next chunk can clip a corner (it re-plans only beyond ``off_track``); such episodes
end in a collision and, like every failed episode, are not written (about 0.5% of them at ``sigma = 0.3``; the collector reports the counts per family).
"""

from __future__ import annotations

import os
import time

import numpy as np

from steerlab.data.collect import run_chunks
from steerlab.data.formats import check_format, write_dataset
from steerlab.envs import NAV2D_ID
from steerlab.envs.nav2d import Nav2DEnv, collides, seeded_oracle, waypoints_to_world

_NOISE_STREAM = 2  # the DART perturbations' stream
N_REF = 32


def nav_dataset_name(family: str, episodes: int, action_noise: float = 0.0, noise_prob: float = 0.5) -> str:
    """Default path of a nav2d dataset: ``data/nav2d-<family>-<episodes>[-dart<noise>p<prob>].zarr``."""
    dart = f"-dart{action_noise:g}p{noise_prob:g}" if action_noise > 0 else ""
    return f"data/nav2d-{family}-{int(episodes)}{dart}.zarr"


def perturb_action(env, obs, action: np.ndarray, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """DART perturbation of one decision -> ``(executed action, perturbed?)``: ``action + N(0, sigma^2)`` per
    component, clipped to ``[-1, 1]``, kept only if the straight segments through its waypoints (from the robot,
    sampled every quarter cell) stay clear of obstacles; otherwise the clean ``action``."""
    noisy = np.clip(action + sigma * rng.standard_normal(action.shape), -1.0, 1.0).astype(np.float32)
    state = np.asarray(obs["state"], dtype=np.float64)
    pts = np.vstack([state[None, :2], waypoints_to_world(state, noisy.astype(np.float64), env.max_step)])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    n = np.maximum(1, np.ceil(seg / (env.map.cell / 4)).astype(int))
    dense = np.vstack([pts[k] + (pts[k + 1] - pts[k]) * (np.arange(n[k])[:, None] / n[k]) for k in range(len(seg))]
                      + [pts[-1:]])
    if collides(env.map, dense).any():
        return action, False
    return noisy, True


def _run_chunk(args) -> list[tuple[int, dict[str, np.ndarray] | None, dict]]:
    """Run the oracle on the given env seeds -> ``(seed, arrays or None if failed, stats)`` per episode."""
    family, env_seeds, env_kwargs, sigma, prob = args
    env = Nav2DEnv(family=family, **env_kwargs)
    out = []
    for s in env_seeds:
        obs, info = env.reset(seed=s)
        oracle = seeded_oracle(env, s, n_ref=N_REF)
        noise_rng = np.random.default_rng([int(s), _NOISE_STREAM])
        perturbed = 0
        log: dict[str, list] = {k: [] for k in ("occupancy", "state", "goal_rel", "goal_pos", "action",
                                                "distance", "ref_traj")}
        done = False
        while not done:
            action = oracle.act(obs)
            for k in ("occupancy", "state", "goal_rel", "goal_pos"):
                log[k].append(obs[k])
            log["action"].append(action)
            log["distance"].append(info["distance"])
            log["ref_traj"].append(oracle.ref_traj_robot(obs["state"]))
            if sigma > 0 and noise_rng.random() < prob:
                action, hit = perturb_action(env, obs, action, sigma, noise_rng)
                perturbed += hit
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        stats = {"family": env.map.family, "n_routes": len(env.routes), "success": bool(info["success"]),
                 "collision": bool(info["collision"]), "timeout": bool(info["timeout"]), "perturbed": perturbed}
        ep = None
        if info["success"]:
            T = len(log["action"])
            ep = {
                "occupancy": np.stack(log["occupancy"]).astype(np.uint8),
                "state": np.stack(log["state"]).astype(np.float32),
                "goal_rel": np.stack(log["goal_rel"]).astype(np.float32),
                "goal_pos": np.stack(log["goal_pos"]).astype(np.float32),
                "action": np.stack(log["action"]).astype(np.float32),
                "distance": np.asarray(log["distance"], dtype=np.float32),
                "action_mask": np.ones(T, dtype=bool),
                "ref_traj": np.stack(log["ref_traj"]).astype(np.float32),
                "route_id": np.full(T, oracle.route_id, dtype=np.int64),
            }
        out.append((s, ep, stats))
    env.close()
    return out


def collect_nav2d(out_path, episodes: int, seed: int = 0, family: str = "mixed", workers: int | None = None,
                  progress: bool = True, overwrite: bool = False, env_kwargs: dict | None = None,
                  action_noise: float = 0.0, noise_prob: float = 0.5, format: str = "zarr") -> dict:
    """Run the oracle for ``episodes`` episodes and write the successful ones to ``out_path`` (zarr v2, or a
    LeRobotDataset v3 directory with ``format="lerobot"``).

    Episode ``i`` uses ``env.reset(seed=seed + i)`` and an oracle RNG derived from ``seed + i``, so the data
    do not depend on ``workers`` (default ``os.cpu_count()`` processes; chunks are written in order of
    ``i``). ``env_kwargs`` go to :class:`Nav2DEnv` (``family`` is separate). ``action_noise`` / ``noise_prob``:
    the DART perturbation of the module doc (0: none). Keys: module docstring. Root
    attrs include env_id, family, seed, episodes, n_success, the kept episode seeds and per-family counts.

    Returns ``{"path", "episodes", "episodes_written", "steps", "success_rate", "seconds",
    "episodes_per_second", "perturbed_decisions", "per_family"}`` (``per_family``: episodes, success rate and fraction of maps with
    >= 2 routes, per map family).
    """
    from steerlab.version import __version__

    out_path = os.fspath(out_path)
    check_format(format)
    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0 (gymnasium seeds are non-negative), got {seed!r}")
    if os.path.lexists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} already exists; pass overwrite=True (or --overwrite) to replace it")
    episodes, seed = int(episodes), int(seed)
    if not float(action_noise) >= 0.0:
        raise ValueError(f"action_noise must be >= 0 (std of the perturbation in action units), got {action_noise!r}")
    if not 0.0 <= float(noise_prob) <= 1.0:
        raise ValueError(f"noise_prob must be in [0, 1], got {noise_prob!r}")
    env_kwargs = dict(env_kwargs or {})
    Nav2DEnv(family=family, **env_kwargs)  # validate arguments before starting workers

    t0 = time.perf_counter()
    workers = max(1, int(workers or os.cpu_count() or 1))
    seeds = [seed + i for i in range(episodes)]
    chunk = max(1, min(50, -(-episodes // (workers * 4))))
    tasks = [(family, seeds[j: j + chunk], env_kwargs, float(action_noise), float(noise_prob))
             for j in range(0, episodes, chunk)]
    results: list[tuple[int, dict | None, dict]] = run_chunks(
        _run_chunk, tasks, workers, total=episodes, desc=f"collect nav2d {family}", progress=progress)
    seconds = time.perf_counter() - t0

    kept = [(s, ep) for s, ep, _ in results if ep is not None]
    if not kept:
        raise RuntimeError(f"the oracle succeeded in none of the {episodes} episodes; nothing to write")
    per_family: dict[str, dict] = {}
    for _, _, st in results:
        f = per_family.setdefault(st["family"], {"episodes": 0, "success": 0, "collision": 0, "timeout": 0,
                                                 "two_routes": 0})
        f["episodes"] += 1
        f["success"] += st["success"]
        f["collision"] += st["collision"]
        f["timeout"] += st["timeout"]
        f["two_routes"] += st["n_routes"] >= 2
    for f in per_family.values():
        f["success_rate"] = f["success"] / f["episodes"]
        f["two_route_fraction"] = f["two_routes"] / f["episodes"]
    n_success = len(kept)
    attrs = {
        "env_id": NAV2D_ID,
        "task": "nav2d",
        "family": family,
        "env_kwargs": env_kwargs,
        "seed": seed,
        "episodes": episodes,
        "n_success": n_success,
        "oracle": f"NavOracle(n_ref={N_REF}); uniform route choice",
        "action_noise": float(action_noise),
        "noise_prob": float(noise_prob),
        "kept": "successful episodes only",
        "episode_seeds": [s for s, _ in kept],
        "episode_seed_rule": "episode i uses env.reset(seed=seed + i); episode_seeds lists the kept ones",
        "per_family": per_family,
        "steerlab_version": __version__,
    }
    write_dataset(out_path, [ep for _, ep in kept], attrs=attrs, overwrite=overwrite, format=format,
                  fps=Nav2DEnv.metadata["render_fps"], task=f"reach the goal ({family} maps)",
                  feature_names={"state": ["x", "y", "cos", "sin", "vx", "vy"]})
    steps = int(sum(len(ep["action"]) for _, ep in kept))
    return {
        "path": out_path,
        "episodes": episodes,
        "episodes_written": n_success,
        "steps": steps,
        "success_rate": n_success / episodes,
        "seconds": round(time.perf_counter() - t0, 3),
        "episodes_per_second": round(episodes / seconds, 2),
        "perturbed_decisions": int(sum(st["perturbed"] for _, _, st in results)),
        "per_family": per_family,
    }
