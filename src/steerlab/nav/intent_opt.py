"""Intent optimization: optimize the fine intent z2 of a trained :class:`~steerlab.nav.policy.NavPolicy` (with z1
fixed from a route) by gradient through the full DDPM/DDIM sampling chain, optionally jointly with the chain's
initial noise z0, then check the result in closed loop.

The chain for a batch of maps (one decision at the map's start state): ``z2 (and z0) -> NavPolicy.sample(...,
noise=from_seed) -> env action -> world waypoints [B, 8, 2]``. The per-step noise is derived from z0
(``from_seed``), so a (z2, z0) pair fixes the chunk and can be held fixed in a rollout.

Objectives on the world waypoints (the robot's start prepended):

- ``collision`` (maximize): soft penetration of the robot disc into obstacles along the chunk (swept, 4
  sub-points per segment), ``sum softplus(k (r + margin - sdf)) / k`` with k = 30 -- smooth, so its gradient
  reaches z2 even when the chunk is clear of obstacles (the ReLU form of
  :func:`~steerlab.envs.nav2d.soft_collision_cost` is exactly flat there) -- adversarial intents;
- ``goal`` (minimize): distance of the last waypoint to the goal;
- ``route`` (minimize): mean distance of the waypoints to the *other* route of a two-route map (the one the
  intent z1 does not encode) -- route switching through z2 alone.

``IntentChain(..., variable="z1")`` makes the coarse intent z1 the variable instead (from the encoding of the map's
route, z2 held), e.g. to switch routes by optimizing z1 (``benchmarks/nav_route_switch.py``).

z2's prior is N(0, I), the same as z0's, so the noise optimizer's plausibility tools apply unchanged:
``project_shell`` keeps |z| at sqrt(d) (a typical draw), ``chi_weight`` adds the chi_d negative log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerlab.envs.nav2d import (
    ROBOT_RADIUS, Nav2DEnv, densify, resample_polyline, sample_distance_field, seeded_oracle, to_robot_frame,
    waypoints_to_world,
)
from steerlab.sampling import from_seed

OBJECTIVES = ("collision", "goal", "route")


@dataclass
class IntentProblem:
    """Maps at their start states, the policy's conditioning and the intent z1 of each map's route."""

    seeds: list[int]
    obs: dict[str, torch.Tensor]  # obs_img [B, n, 32, 32], obs_state [B, n, 6], goal_rel [B, 2], ref_traj [B, 32, 2]
    state: torch.Tensor  # [B, 6]
    goal: torch.Tensor  # [B, 2] world
    route_id: list[int]
    n_routes: list[int]
    other_route: list[np.ndarray | None]  # world polyline of a route the intent does not encode
    distance_field: torch.Tensor  # [B, G, G]
    maps: list  # NavMap per seed


def two_route_seeds(start: int, n: int, family: str = "mixed", max_tries: int | None = None) -> list[int]:
    """The first ``n`` env seeds from ``start`` on whose map there are at least two routes (at most ``max_tries``
    seeds scanned; None: until ``n`` are found)."""
    out, s = [], start
    while len(out) < n and (max_tries is None or s < start + max_tries):
        env = Nav2DEnv(family=family)
        env.reset(seed=s)
        if len(env.routes) >= 2:
            out.append(s)
        env.close()
        s += 1
    return out


def make_problem(policy, seeds: list[int], route: int | str = "random", family: str = "mixed") -> IntentProblem:
    """Reset one Nav2D env per seed; z1's route is the oracle's choice for the seed (``"random"``, as in the data)
    or the given index (clipped to the map's routes)."""
    obs_img, obs_state, goal_rel, refs, states, goals, rids, nr, others, fields, maps = ([] for _ in range(11))
    for s in seeds:
        env = Nav2DEnv(family=family)
        o, _ = env.reset(seed=int(s))
        oracle = seeded_oracle(env, s, route)
        obs_img.append(np.repeat(o["occupancy"][None], policy.n_obs_steps, 0))
        obs_state.append(np.repeat(o["state"][None], policy.n_obs_steps, 0))
        goal_rel.append(o["goal_rel"])
        refs.append(to_robot_frame(o["state"].astype(np.float64), oracle.ref_traj.astype(np.float64)))
        states.append(o["state"])
        goals.append(env.map.goal)
        rids.append(oracle.route_id)
        nr.append(len(env.routes))
        others.append(resample_polyline(np.asarray(env.routes[1 - oracle.route_id]), spacing=0.01)
                      if len(env.routes) >= 2 else None)
        fields.append(env.distance_field)
        maps.append(env.map)
        env.close()
    f32 = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32)  # noqa: E731
    obs = {"obs_img": f32(obs_img), "obs_state": f32(obs_state), "goal_rel": f32(goal_rel), "ref_traj": f32(refs)}
    return IntentProblem(list(map(int, seeds)), obs, f32(states), f32(goals), rids, nr, others, f32(fields), maps)


def problem_from_envs(policy_batch: dict, envs: list, route_id: list[int] | None = None) -> IntentProblem:
    """An :class:`IntentProblem` at the current states of ``envs`` (mid-episode), from the policy batch the rollout
    built for them (``obs_img``, ``obs_state``, ``goal_rel``, ``ref_traj`` in the current robot frames).
    ``route_id`` (the route z1 encodes, per env) attaches the other route of two-route maps for objective
    ``route``."""
    f32 = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32)  # noqa: E731
    envs = [getattr(e, "unwrapped", e) for e in envs]
    rid = list(route_id) if route_id is not None else [-1] * len(envs)
    others = [resample_polyline(np.asarray(e.routes[1 - r]), spacing=0.01) if r in (0, 1) and len(e.routes) >= 2
              else None for e, r in zip(envs, rid)]
    return IntentProblem([-1] * len(envs), dict(policy_batch), f32([e.state for e in envs]),
                         f32([e.map.goal for e in envs]), rid, [len(e.routes) for e in envs], others,
                         f32([e.distance_field for e in envs]), [e.map for e in envs])


class IntentChain:
    """``sample_fn(z)`` -> world waypoints ``[B, 8, 2]``, where ``z`` is z2 ``[B, d2]`` or, with ``joint``, z2 and
    z0 packed as ``[B, d2 + 16]``; ``z0`` (used when not joint) fixes the chain's initial noise.

    ``variable="z1"`` makes the coarse intent the variable instead: ``z`` is z1 ``[B, d1]`` (starting, say, from
    ``chain.z1``, the encoding of the map's route) and z2 is held at ``z2`` (``[B, d2]``; None: level z1, no fine
    intent). z1 has no prior, so optimize it without ``project_shell``."""

    def __init__(self, policy, problem: IntentProblem, z0: torch.Tensor, *, joint: bool = False, grad: str = "full",
                 lambda_cfg=None, seed: int = 0, variable: str = "z2", z2: torch.Tensor | None = None):
        if variable not in ("z2", "z1"):
            raise ValueError(f"variable must be 'z2' or 'z1', got {variable!r}")
        if variable == "z1" and joint:
            raise ValueError("joint (z2 and z0 together) optimizes z2; it cannot be combined with variable='z1'")
        if z2 is not None and (variable != "z1" or tuple(z2.shape) != (len(problem.seeds), policy.z2_dim)):
            raise ValueError(f"z2 is the fixed fine intent of variable='z1': [{len(problem.seeds)}, {policy.z2_dim}], "
                             f"got {tuple(z2.shape)} with variable={variable!r}")
        self.policy, self.p, self.z0, self.joint = policy, problem, z0, joint
        self.grad, self.lambda_cfg, self.seed = grad, lambda_cfg, seed
        self.variable, self.z2 = variable, z2
        with torch.no_grad():
            self.cond = policy.condition(problem.obs)
            self.z1 = policy.encode_z1(problem.obs["ref_traj"])
        self.d2 = policy.z2_dim
        lam = policy.cfg.lambda_cfg if lambda_cfg is None else lambda_cfg  # what sample() will use
        self.nfe = policy.cfg.num_inference_steps * policy.network_calls(lam)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The variable (z2, or z1) and z0 of a packed ``z``."""
        if not self.joint:
            return z, self.z0
        return z[:, : self.d2], z[:, self.d2:].reshape(self.z0.shape)

    def pack(self, z2: torch.Tensor) -> torch.Tensor:
        return torch.cat([z2, self.z0.flatten(1)], 1) if self.joint else z2

    def sample_fn(self, z: torch.Tensor, step_noise=None) -> torch.Tensor:
        v, z0 = self.split(z)
        z1, z2 = (v, self.z2) if self.variable == "z1" else (self.z1, v)
        chunk = self.policy.sample(self.cond, z0, z1, z2, noise=from_seed(self.seed), grad=self.grad,
                                   lambda_cfg=self.lambda_cfg)
        action = self.policy.unnormalize_actions(chunk)  # [B, 16], clipped as the env executes it
        return waypoints_to_world(self.p.state, action)


class IntentObjective:
    """The objective of the module doc on world waypoints ``[B, 8, 2]`` -> ``[B]``."""

    def __init__(self, name: str, problem: IntentProblem):
        if name not in OBJECTIVES:
            raise ValueError(f"unknown intent objective {name!r}; use one of {', '.join(OBJECTIVES)}")
        if name == "route" and any(o is None for o in problem.other_route):
            bad = [s for s, o in zip(problem.seeds, problem.other_route) if o is None]
            raise ValueError(f"objective 'route' needs maps with two routes; seeds {bad} have one")
        self.name, self.p = name, problem
        self.direction = "maximize" if name == "collision" else "minimize"
        if name == "route":
            n = max(len(o) for o in problem.other_route)
            self.other = torch.as_tensor(np.stack([np.concatenate([o, np.repeat(o[-1:], n - len(o), 0)])
                                                   for o in problem.other_route]), dtype=torch.float32)

    def path(self, wp: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p.state[: len(wp), None, :2].to(wp.dtype), wp], 1)

    def __call__(self, wp: torch.Tensor) -> torch.Tensor:
        if self.name == "collision":
            sdf = sample_distance_field(self.p.distance_field[: len(wp)], densify(self.path(wp), 4))
            return torch.nn.functional.softplus(30.0 * (ROBOT_RADIUS + 0.01 - sdf)).sum(-1) / 30.0
        if self.name == "goal":
            return (wp[:, -1] - self.p.goal[: len(wp)].to(wp.dtype)).norm(dim=-1)
        d = torch.cdist(wp, self.other[: len(wp)].to(wp.dtype))  # [B, 8, K]
        return d.min(-1).values.mean(-1)


def replicate(problem: IntentProblem, k: int) -> IntentProblem:
    """``problem`` with every map repeated ``k`` times in a row (map 0 k times, then map 1, ...)."""
    rep = lambda xs: [x for x in xs for _ in range(k)]  # noqa: E731
    return IntentProblem(rep(problem.seeds), {n: v.repeat_interleave(k, 0) for n, v in problem.obs.items()},
                         problem.state.repeat_interleave(k, 0), problem.goal.repeat_interleave(k, 0),
                         rep(problem.route_id), rep(problem.n_routes), rep(problem.other_route),
                         problem.distance_field.repeat_interleave(k, 0), rep(problem.maps))


class CandidateChain:
    """The ``k`` candidate draws a re-ranked deployment (:mod:`steerlab.nav.safety`) chooses from, as one chain:
    ``sample_fn(z2 [B, d2])`` -> world waypoints ``[B, k, 8, 2]``. A map's ``k`` draws share its z2 and differ
    in their initial noise (``z0 [B * k, 8, 2]``) and per-step noise. ``nfe`` counts all ``k`` draws. With
    ``variable="z1"`` (passed on to :class:`IntentChain`, with the candidates' own fixed ``z2 [B * k, d2]``) the
    draws share an optimized z1 ``[B, d1]`` instead."""

    def __init__(self, policy, problem: IntentProblem, z0: torch.Tensor, k: int, **chain_kw):
        if k < 1 or z0.shape[0] != len(problem.seeds) * k:
            raise ValueError(f"z0 must hold k = {k} initial noises per map: [{len(problem.seeds) * k}, 8, 2], "
                             f"got {tuple(z0.shape)}")
        self.k, self.problem = int(k), problem
        self.chain = IntentChain(policy, replicate(problem, k), z0, **chain_kw)
        self.nfe = self.chain.nfe * self.k
        self.z0, self.z1 = z0, self.chain.z1[:: self.k]  # z1 of each map

    def pack(self, z2: torch.Tensor) -> torch.Tensor:
        return z2

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z, self.z0

    def sample_fn(self, z: torch.Tensor, step_noise=None) -> torch.Tensor:
        wp = self.chain.sample_fn(z.repeat_interleave(self.k, 0))
        return wp.reshape(z.shape[0], self.k, *wp.shape[1:])


class CandidateObjective:
    """An :class:`IntentObjective` on a map's ``k`` candidates reduced to one value per map: ``reduce="worst"``
    takes the candidate most favourable to the deployment (the least colliding for ``collision``; the farthest
    for ``goal`` / ``route``), so pushing it moves every candidate; ``"mean"`` averages them. Takes the
    ``[B, k, 8, 2]`` waypoints of :class:`CandidateChain` -> ``[B]``; ``waypoints=W`` scores only the first W (what
    a receding-horizon deployment executes)."""

    def __init__(self, name: str, problem: IntentProblem, k: int, reduce: str = "worst", waypoints: int | None = None):
        if reduce not in ("worst", "mean"):
            raise ValueError(f"reduce must be 'worst' or 'mean', got {reduce!r}")
        self.inner = IntentObjective(name, replicate(problem, k))
        self.name, self.k, self.reduce, self.direction = name, int(k), reduce, self.inner.direction
        self.waypoints = waypoints

    def __call__(self, wp: torch.Tensor) -> torch.Tensor:
        wp = wp[:, :, : self.waypoints]
        v = self.inner(wp.reshape(-1, *wp.shape[2:])).reshape(-1, self.k)  # [B, k, 8, 2] -> [B, k]
        if self.reduce == "mean":
            return v.mean(1)
        return v.min(1).values if self.direction == "maximize" else v.max(1).values


def swept_points(problem: IntentProblem, wp: torch.Tensor, substeps: int = 8) -> np.ndarray:
    """The straight segments from each map's start through the waypoints ``wp [B, 8, 2]``, sampled ``substeps``
    times each -> ``[B, 8 * substeps + 1, 2]`` (numpy, no gradient)."""
    from steerlab.envs.nav2d import densify

    return densify(torch.cat([problem.state[:, None, :2], wp.detach().to(problem.state.dtype)], 1), substeps).numpy()


def hard_collision(problem: IntentProblem, wp: torch.Tensor) -> np.ndarray:
    """Whether the straight segments through the waypoints ``[B, 8, 2]`` (from the start) hit an obstacle, per map;
    for the candidates of a :class:`CandidateChain` (``[B, k, 8, 2]``), whether every candidate does."""
    from steerlab.envs.nav2d import collides

    if wp.dim() == 4:
        k = wp.shape[1]
        return hard_collision(replicate(problem, k), wp.flatten(0, 1)).reshape(-1, k).all(1)
    return np.array([collides(m.grid, p).any() for m, p in zip(problem.maps, swept_points(problem, wp))])


def plot_intents(problem: IntentProblem, before: torch.Tensor, after: torch.Tensor, path: Path, title: str = "",
                 max_maps: int = 8) -> Path:
    """The chunk's waypoints ``[B, 8, 2]`` (or the candidates ``[B, k, 8, 2]``) before (grey) and after (red)
    optimization on each map, with its routes."""
    import matplotlib.pyplot as plt

    from steerlab.envs.nav2d import plot_map
    from steerlab.eval.plots import panel_grid

    fig, axes = panel_grid(min(len(problem.seeds), max_maps))
    for i, ax in enumerate(axes):
        plot_map(ax, problem.maps[i], title=f"seed {problem.seeds[i]} (route {problem.route_id[i]})")
        start = problem.state[i, :2].numpy()
        for wp, style, label in ((before[i], "o-", "before"), (after[i], "s-", "after")):
            cands = wp.detach().reshape(-1, *wp.shape[-2:]).numpy()
            for j, c in enumerate(cands):
                pts = np.concatenate([start[None], c])
                ax.plot(pts[:, 0], pts[:, 1], style, ms=3 if len(cands) == 1 else 1.5, lw=1.2 if len(cands) == 1 else 0.6,
                        color="0.3" if label == "before" else "tab:red", alpha=1.0 if len(cands) == 1 else 0.5,
                        label=label if j == 0 else None)
        ax.title.set_fontsize(8)
        if i == 0:
            ax.legend(fontsize=6, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
