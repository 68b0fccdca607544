"""Closed-loop rollouts of a :class:`~steerlab.nav.policy.NavPolicy` on ``steerlab/Nav2D-v0``: many maps stepped
together, one batched policy call per decision.

The route intent: ``route=None`` runs without ``ref_traj`` (level "none"); ``route="random"`` picks the route the
data collector's oracle would pick for the same env seed (``NavOracle`` with ``rng=[seed, 1]``); an int picks that
route index (clipped to the map's number of routes). The route is resampled to 32 points (world frame) and given
to the policy in the robot frame of every decision, as in the dataset.
"""

from __future__ import annotations

import numpy as np
import torch

from steerlab.envs.nav2d import Nav2DEnv, seeded_oracle, to_robot_frame
from steerlab.eval.metrics import wilson_interval


def rollout_nav(policy, seeds, *, family: str = "mixed", env_kwargs: dict | None = None, route="random",
                goal_masked: bool = False, generator: torch.Generator | None = None, lambda_cfg=None,
                level: str | None = None, z2: torch.Tensor | None = None, z0: torch.Tensor | None = None,
                noise_seed: int = 0, record: bool = False, execute_waypoints: int | None = None,
                rerank: int = 0, safety_margin: float = 0.01, z2_decisions: int | None = None,
                z2_fn=None) -> list[dict]:
    """Roll ``policy`` out on one map per env seed. Returns per episode: ``seed``, ``success``, ``collision``,
    ``timeout`` (exactly one is True), ``length`` (decisions), ``path [K, 2]`` (world positions of every
    controller sub-step), ``route_id`` (None without a route), ``n_routes``, ``family``, ``ref_traj`` (world
    ``[32, 2]`` or None).

    ``route`` may also be a list (one entry per seed). ``z2 [E, d2]`` / ``z0 [E, 8, 2]`` hold an episode's intent
    / initial noise fixed for every decision; with ``z0`` the sampler's per-step noise is derived from it
    (``from_seed(noise_seed)``), so the episode's chunks are a deterministic function of the observations.
    ``record=True`` adds ``frames``: the env's top-down RGB render after reset and after every decision.
    ``execute_waypoints=k`` executes only the first ``k`` of the chunk's waypoints per decision (the remaining
    deltas are zeroed, so the controller holds position) -- receding-horizon execution as NoMaD deploys it.
    ``rerank=K`` draws K chunks per decision (each with its own z0 and per-step noise; with ``z2`` all K share the
    episode's z2, otherwise each draws its own from the prior) and executes the first whose swept path keeps
    ``robot_radius + safety_margin`` from the occupied pixels of the current egocentric image, else the one
    with the most clearance (:mod:`steerlab.nav.safety`); each episode then also has ``rejected`` (draws passed
    over) and ``unsafe`` (decisions where no draw was safe). ``z2_decisions=n`` holds ``z2`` for an episode's first
    ``n`` decisions only and draws z2 from the prior afterwards (z2 is a per-chunk intent, encoded from one
    demonstrated chunk in training; held for a whole episode it repeats one manoeuvre at every decision).
    ``z2_fn(batch, envs, rows) -> z2 [n, d2]`` chooses z2 afresh at every decision for the ``n`` active episodes,
    given their policy batch, envs and indices into ``seeds`` (e.g. an adversary optimizing it, see
    ``benchmarks/nav_bench.py``); with ``rerank=K`` it may return one z2 per candidate, ``[n * K, d2]`` (row-major:
    episode 0's K candidates first). Each episode then has ``z2_chosen``, the list of the ``[1 or K, d2]`` z2 it
    was given. ``z2_fn`` may also return a pair ``(z1, z2)``: ``z1 [n or n * K, d1]`` then replaces the encoding
    of the route (e.g. a coarse intent optimized toward another route), ``z2 = None`` draws z2 from the prior, and
    each episode has ``z1_chosen`` too."""
    from steerlab.nav.safety import rerank as rerank_chunks, safe_threshold
    from steerlab.sampling import from_seed

    K = int(rerank)
    if K < 0:
        raise ValueError(f"rerank must be >= 0 (0 = execute the single draw), got {rerank!r}")
    if z2_fn is not None and (z2 is not None or z0 is not None):
        raise ValueError("z2_fn chooses z2 at every decision; do not also pass z2 or z0")
    if K and z0 is not None:
        raise ValueError("rerank draws its own initial noise for every candidate; pass z0=None with rerank > 0")

    routes = list(route) if isinstance(route, (list, tuple)) else [route] * len(seeds)
    envs = [Nav2DEnv(family=family, **(env_kwargs or {})) for _ in seeds]
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    n = policy.n_obs_steps
    eps, refs = [], []
    frames = [[env.render_rgb()] if record else None for env in envs]
    for env, s, route_i in zip(envs, seeds, routes):
        rid, ref = None, None
        if route_i is not None:
            oracle = seeded_oracle(env, s, route_i)
            rid, ref = oracle.route_id, oracle.ref_traj.astype(np.float64)
        refs.append(ref)
        eps.append({"seed": int(s), "success": False, "collision": False, "timeout": False, "length": 0,
                    "route_id": rid, "n_routes": len(env.routes), "family": env.map.family,
                    "ref_traj": None if ref is None else ref.astype(np.float32)})
        if K:
            eps[-1].update(rejected=0, unsafe=0)
    hist = [[(o["occupancy"], o["state"])] * n for o in obs]
    active = np.ones(len(envs), bool)
    policy.eval()
    while active.any():
        idx = np.flatnonzero(active)
        batch = {"obs_img": torch.as_tensor(np.stack([[f[0] for f in hist[i]] for i in idx]), dtype=torch.float32),
                 "obs_state": torch.as_tensor(np.stack([[f[1] for f in hist[i]] for i in idx]), dtype=torch.float32)}
        if not goal_masked:
            batch["goal_rel"] = torch.as_tensor(np.stack([obs[i]["goal_rel"] for i in idx]), dtype=torch.float32)
        if refs[idx[0]] is not None:
            batch["ref_traj"] = torch.as_tensor(np.stack(
                [to_robot_frame(obs[i]["state"].astype(np.float64), refs[i]) for i in idx]), dtype=torch.float32)
        ti = torch.as_tensor(idx)
        z2_now, per_candidate = (None if z2 is None else z2[ti]), False
        z1_now = None
        if z2_fn is not None:
            got = z2_fn(batch, [envs[i] for i in idx], [int(i) for i in idx])
            if isinstance(got, tuple):
                if len(got) != 2:
                    raise ValueError(f"z2_fn may return z2 or a pair (z1, z2); got a tuple of {len(got)}")
                z1_now, got = got
                z1_now = _per_decision(z1_now, eps, idx, K, policy.z1_dim, "z1")
                if len(z1_now) == len(idx):
                    z1_now = z1_now.repeat_interleave(max(K, 1), 0)
            if got is not None:
                z2_now = _per_decision(got, eps, idx, K, policy.z2_dim, "z2")
                per_candidate = bool(K) and len(z2_now) == len(idx) * K
        if z2_now is not None and z2_decisions is not None and not per_candidate:
            held = torch.as_tensor([eps[i]["length"] < int(z2_decisions) for i in idx])
            if not held.all():  # prior draws for the rows past their held decisions (one per candidate)
                prior = torch.randn((len(idx) * max(K, 1), z2_now.shape[1]), generator=generator).to(z2_now.dtype)
                rows = z2_now.repeat_interleave(max(K, 1), 0)
                z2_now = torch.where(held.repeat_interleave(max(K, 1))[:, None], rows, prior)
                per_candidate = True
        with torch.no_grad():
            if K:
                rep = {k: v.repeat_interleave(K, 0) for k, v in batch.items()}
                cand = policy.predict_action_chunk(
                    rep, generator=generator, lambda_cfg=lambda_cfg, level=level, z1=z1_now,
                    z2=None if z2_now is None else (z2_now if per_candidate else z2_now.repeat_interleave(K, 0)))[:, 0]
                e0 = envs[idx[0]]
                thr = safe_threshold(e0.robot_radius, safety_margin)
                act, pick, clear = rerank_chunks(batch["obs_img"][:, -1], cand, K, thr, e0.occ_window, e0.max_step)
                for j, i in enumerate(idx):
                    eps[i]["rejected"] += int(pick[j])
                    eps[i]["unsafe"] += int(clear[j].max() < thr)
            else:
                act = policy.predict_action_chunk(
                    batch, generator=generator, lambda_cfg=lambda_cfg, level=level, z1=z1_now,
                    z2=z2_now, z0=None if z0 is None else z0[ti],
                    noise=None if z0 is None else from_seed(noise_seed))[:, 0]
        if execute_waypoints is not None:
            act = act.clone()
            act[:, 2 * int(execute_waypoints):] = 0.0
        for j, i in enumerate(idx):
            o, _, term, trunc, info = envs[i].step(act[j].numpy())
            obs[i] = o
            hist[i] = hist[i][1:] + [(o["occupancy"], o["state"])]
            e = eps[i]
            e["length"] += 1
            if record:
                frames[i].append(envs[i].render_rgb())
            if term or trunc:
                e.update(success=bool(info["success"]), collision=bool(info["collision"]), timeout=bool(info["timeout"]))
                e["path"] = np.asarray(envs[i].path, dtype=np.float32)
                active[i] = False
    for env in envs:
        env.close()
    if record:
        for e, f in zip(eps, frames):
            e["frames"] = f
    return eps


def _per_decision(z, eps: list[dict], idx, k: int, dim: int, name: str) -> torch.Tensor:
    """``z2_fn``'s ``z1`` / ``z2`` for the active episodes ``idx`` as a tensor -- ``[n, dim]``, or with ``rerank=k``
    one per candidate ``[n * k, dim]``; anything else raises an error that names the shapes -- each episode's rows
    appended to its ``<name>_chosen``."""
    n = len(idx)
    z = torch.as_tensor(z).detach()
    if tuple(z.shape) != (n, dim) and not (k and tuple(z.shape) == (n * k, dim)):
        raise ValueError(f"z2_fn must return {name} [{n}, {dim}]" + (f" or one per candidate [{n * k}, {dim}]" if k else "")
                         + f", got {tuple(z.shape)}")
    for rows, i in zip(z.reshape(n, -1, dim), idx):
        eps[i].setdefault(f"{name}_chosen", []).append(rows.clone())
    return z


def save_gif(frames: list[np.ndarray], path, fps: float = 4.0, hold_last: int = 4) -> None:
    """RGB frames ``[H, W, 3]`` uint8 -> an animated GIF (the last frame held ``hold_last`` extra frames)."""
    from PIL import Image

    imgs = [Image.fromarray(np.asarray(f)) for f in list(frames) + [frames[-1]] * hold_last]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)


def summarize(episodes: list[dict]) -> dict:
    """Success / collision / time-out rates with 95% Wilson intervals."""
    n = len(episodes)
    out: dict = {"episodes": n}
    for k in ("success", "collision", "timeout"):
        c = sum(bool(e[k]) for e in episodes)
        out[f"{k}_rate"] = c / n
        out[f"{k}_ci95"] = list(wilson_interval(c, n))
    return out
