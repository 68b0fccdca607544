"""Collect oracle demonstrations for the particle task into a zarr dataset (diffusion_policy layout)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
from tqdm.auto import tqdm

from steerlab.data.formats import check_format, write_dataset
from steerlab.envs import PARTICLE_ID
from steerlab.envs.particle import OBS_KEYS, ParticleEnv, ParticleOracle, flatten_obs

_ORACLE_STREAM = 1  # separates the oracle's random stream from the env's (both derive from seed + i)


def _run_chunk(args: tuple[int, list[int], bool]) -> list[tuple[dict[str, np.ndarray], bool]]:
    """Run the oracle for the given env seeds. Returns ``(arrays, success)`` per episode."""
    n_dim, env_seeds, multimodal = args
    env = ParticleEnv(n_dim=n_dim)
    out = []
    for s in env_seeds:
        oracle = ParticleOracle(multimodal=multimodal, rng=np.random.default_rng([s, _ORACLE_STREAM]))
        obs, info = env.reset(seed=s)
        obs_log: dict[str, list[np.ndarray]] = {k: [] for k in OBS_KEYS}
        actions = []
        done = False
        while not done:
            action = oracle(obs)
            for k in OBS_KEYS:  # the observation the oracle acted on
                obs_log[k].append(obs[k])
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        ep = {k: np.stack(v).astype(np.float32) for k, v in obs_log.items()}
        ep["obs"] = flatten_obs(ep)
        ep["action"] = np.stack(actions).astype(np.float32)
        out.append((ep, bool(info["success"])))
    env.close()
    return out



def run_chunks(fn, tasks: list, workers: int, total: int, desc: str, progress: bool = True) -> list:
    """``fn`` over ``tasks`` (each returns a list of per-episode results) in ``workers`` processes.

    Results come back concatenated in the order of ``tasks`` whatever ``workers`` is; the progress bar counts
    the ``total`` episodes. ``fn`` must be a module-level function (it is pickled under ``spawn``).
    """
    results: list = []
    workers = max(1, min(int(workers), len(tasks)))
    bar = tqdm(total=total, desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1:
            for t in tasks:
                res = fn(t)
                results.extend(res)
                bar.update(len(res))
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers) as pool:
                for res in pool.imap(fn, tasks):  # imap keeps chunk order -> episodes in order of i
                    results.extend(res)
                    bar.update(len(res))
    finally:
        bar.close()
    return results

def collect_particle(out_path, n_dim: int, episodes: int, seed: int = 0, multimodal: bool = False,
                     workers: int | None = None, overwrite: bool = False, progress: bool = True,
                     format: str = "zarr") -> dict:
    """Run :class:`ParticleOracle` for ``episodes`` episodes and write them to ``out_path`` (zarr v2, or a
    LeRobotDataset v3 directory with ``format="lerobot"``).

    Episode ``i`` uses ``env.reset(seed=seed + i)`` (and an oracle RNG derived from ``seed + i``), so the
    data do not depend on ``workers``. Episodes run in ``workers`` processes (default ``os.cpu_count()``)
    in chunks and are written in order of ``i``; all episodes are kept, failures included.

    Keys: ``obs`` (float32 ``[T, 4N]``, :func:`flatten_obs` order), ``action`` (float32 ``[T, N]``) and the
    four per-key observations; ``obs[t]`` is the observation the oracle acted on with ``action[t]``.
    Root attrs: env_id, n_dim, seed, multimodal, episodes, n_success, steerlab_version and more.

    Returns ``{"path", "episodes", "steps", "n_success", "success_rate", "seconds"}``.
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
    episodes, seed, n_dim = int(episodes), int(seed), int(n_dim)
    ParticleEnv(n_dim=n_dim)  # validate n_dim before starting workers

    t0 = time.perf_counter()
    workers = max(1, int(workers or os.cpu_count() or 1))
    seeds = [seed + i for i in range(episodes)]
    chunk = max(1, min(100, -(-episodes // (workers * 4))))
    tasks = [(n_dim, seeds[j: j + chunk], bool(multimodal)) for j in range(0, episodes, chunk)]

    results: list[tuple[dict[str, np.ndarray], bool]] = run_chunks(
        _run_chunk, tasks, workers, total=episodes, desc=f"collect particle {n_dim}-D", progress=progress)

    n_success = int(sum(ok for _, ok in results))
    attrs = {
        "env_id": PARTICLE_ID,
        "task": "particle",
        "n_dim": n_dim,
        "seed": seed,
        "episodes": episodes,
        "multimodal": bool(multimodal),
        "n_success": n_success,
        "oracle": "ParticleOracle(switch_distance=0.01)",
        "obs_keys": list(OBS_KEYS),
        "episode_seeds": "episode i uses env.reset(seed=seed + i)",
        "steerlab_version": __version__,
    }
    env = ParticleEnv(n_dim=n_dim)
    write_dataset(out_path, [ep for ep, _ in results], attrs=attrs, overwrite=overwrite, format=format,
                  fps=round(1.0 / (env.dt * env.repeat_actions)), task="reach the first goal, then the second",
                  feature_names={"obs": [f"{k}_{i}" for k in OBS_KEYS for i in range(n_dim)]})
    steps = int(sum(len(ep["action"]) for ep, _ in results))
    return {
        "path": out_path,
        "episodes": episodes,
        "steps": steps,
        "n_success": n_success,
        "success_rate": n_success / episodes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
