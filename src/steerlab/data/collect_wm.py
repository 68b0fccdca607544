"""World-model data for the particle task: rollouts of a trained policy under actuation noise, stored as
conditional-generation pairs for a model of *future agent positions given the state and a plan*.

Per step ``t`` of an episode of length ``L`` (zarr, diffusion_policy layout, ``meta/episode_ends``):

=======  ======================  ===================================================================
key      shape                   meaning
=======  ======================  ===================================================================
obs      float32 [T, 4N + H*N]   the flat particle observation at ``t`` followed by the plan: the
                                 commanded actions ``t .. t+H-1`` (past the episode end: the last one)
action   float32 [T, N]          the agent position after step ``t`` (``pos_agent`` at ``t + 1``)
=======  ======================  ===================================================================

A window of ``H`` targets starting at ``t`` is then the future ``pos_{t+1..t+H}`` that the plan in ``obs[t]``
produced, so a generative "policy" trained on these arrays (task ``particle-wm``) is a world model
``p(future | state, plan)``. The actuation noise (:class:`~steerlab.envs.wrappers.ActionNoise`) is what makes
the future uncertain given the state and the commanded plan.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.data.zarr_io import write_episodes
from steerlab.tasks.particle_wm import WM_HORIZON, WM_TASK


def world_model_arrays(episodes: list[dict], horizon: int = WM_HORIZON) -> list[dict[str, np.ndarray]]:
    """Rollout episodes (``obs [L+1, 4N]``, ``actions [L, N]``, ``positions [L+1, N]``, as
    :func:`steerlab.eval.rollout.rollout` returns them) -> per-episode ``{"obs", "action"}`` arrays (module doc)."""
    out = []
    for e in episodes:
        obs, act, pos = np.asarray(e["obs"]), np.asarray(e["actions"]), np.asarray(e["positions"])
        n_steps = len(act)
        if n_steps < 1 or len(obs) != n_steps + 1 or len(pos) != n_steps + 1:
            raise ValueError(f"episode arrays do not line up: obs {obs.shape}, actions {act.shape}, positions {pos.shape}")
        padded = np.concatenate([act, np.repeat(act[-1:], horizon - 1, 0)], 0)
        plans = np.stack([padded[t: t + horizon].ravel() for t in range(n_steps)])
        out.append({"obs": np.concatenate([obs[:-1], plans], 1).astype(np.float32),
                    "action": pos[1:].astype(np.float32)})
    return out


def collect_world_model(out_path, policy_run, episodes: int, seed: int = 0, action_noise: float = 0.05,
                        batch: int = 100, progress: bool = True, overwrite: bool = False) -> dict:
    """Roll the trained particle policy of ``policy_run`` out ``episodes`` times (env seeds ``seed + i``, its
    own sampling noise from a generator seeded by ``seed``) in ``steerlab/Particle-v0`` wrapped in
    :class:`~steerlab.envs.wrappers.ActionNoise` (``action_noise`` std), and write the world-model arrays."""
    from steerlab import tasks
    from steerlab.version import __version__
    from steerlab.envs.wrappers import ActionNoise
    from steerlab.eval.rollout import rollout
    from steerlab.eval.run import load_run

    out_path = os.fspath(out_path)
    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes!r}")
    if os.path.lexists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} already exists; pass overwrite=True to replace it")
    cfg, policy, ckpt = load_run(policy_run)
    if not isinstance(tasks.get_task(cfg.env), tasks.ParticleTask):
        raise ValueError(f"{policy_run} is a {cfg.env!r} run; world-model data need a particle policy")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    seeds = [int(seed) + i for i in range(int(episodes))]
    eps: list[dict] = []
    bar = tqdm(total=len(seeds), desc="collect world-model rollouts", disable=not progress, dynamic_ncols=True)
    for s in range(0, len(seeds), batch):
        eps += rollout(policy, cfg.env, cfg.n_dim, seeds[s: s + batch], generator=gen,
                       make_env=lambda: ActionNoise(tasks.make_env(cfg.env, cfg.n_dim), action_noise))
        bar.update(len(seeds[s: s + batch]))
    bar.close()
    arrays = world_model_arrays(eps)
    attrs = {"task": WM_TASK, "n_dim": cfg.n_dim, "horizon": WM_HORIZON, "action_noise": float(action_noise),
             "policy_run": os.fspath(policy_run), "policy_checkpoint": str(ckpt), "seed": int(seed),
             "episodes": len(eps), "policy_success_rate": float(np.mean([e["success"] for e in eps])),
             "episode_seeds": "episode i uses env.reset(seed=seed + i)", "steerlab_version": __version__}
    write_episodes(out_path, arrays, attrs=attrs, overwrite=overwrite)
    return {"path": out_path, "episodes": len(eps), "steps": int(sum(len(a["action"]) for a in arrays)),
            "policy_success_rate": attrs["policy_success_rate"], "seconds": round(time.perf_counter() - t0, 3)}
