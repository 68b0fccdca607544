"""Route modes of the nav policy on two-route maps: does the policy keep both routes the demonstrations take, and
does its noise choose between them?

    python benchmarks/nav_modes.py --run-dir RUN [--maps 100] [--draws 16] [--threads N] [--name nav_modes]

On the first ``--maps`` two-route maps from env seed 740,000:

- *demonstrations*: the route the collector's oracle takes on each map (its own random draw, the route the
  dataset's episode of that seed has); the share of the maps' first route (``env.routes[0]``, the planner's
  shortest) is the demonstrations' mode share.
- *closed loop*, one episode per map, at intent levels ``none`` (no route given: the classifier-free
  unconditional model, whose choice of route is its own) and ``z1z2`` (the oracle's route encoded as z1, z2 from
  the prior): the episode follows the route its path overlaps more (``route_overlap``, as route switching counts
  it); the share of the first route among the episodes that follow one, and among those that succeed.
- *noise leverage at a fixed observation*: ``--draws`` chunks at each map's start observation, each from its own
  initial noise (and z2); a chunk is assigned to the route its world waypoints are closer to (mean distance to the
  route polyline) when the two distances differ by more than ``--margin``, else it is undecided. *both routes*:
  share of the maps where the draws go both ways (the noise decides the route there), among the maps where the
  oracle's own first chunks along the two routes differ by that margin; *spread*: the draws' per-waypoint std
  (world units).

Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, load_policy_run, parser, rate, save

from steerlab.envs.nav2d import Nav2DEnv, route_overlap, seeded_oracle, waypoints_to_world
from steerlab.envs.nav2d.planner import resample_polyline
from steerlab.nav.intent_opt import make_problem, two_route_seeds
from steerlab.nav.rollout import rollout_nav


def polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Mean over the last axis' points ``[..., K, 2]`` of the distance to the nearest vertex of a densely
    resampled polyline ``[M, 2]``."""
    d = np.sqrt(((points[..., :, None, :] - line[None, :, :]) ** 2).sum(-1)).min(-1)
    return d.mean(-1)


def share(flags):
    """:func:`common.rate` of ``flags``, None when there are none."""
    return rate(flags) if len(flags) else None


def route_of_path(path: np.ndarray, routes) -> int:
    """0 or 1: the route a closed-loop path overlaps more; -1 on a tie (e.g. a path that stops at the start)."""
    o = [route_overlap(path, np.asarray(r)) for r in routes[:2]]
    return -1 if o[0] == o[1] else int(np.argmax(o))


def start_chunks(policy, seeds, draws: int, level: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` world-frame chunks ``[maps, draws, 8, 2]`` at each map's start observation, and the oracle's
    first chunks along route 0 and route 1 ``[maps, 2, 8, 2]``."""
    prob = make_problem(policy, seeds, route="random")
    g = torch.Generator().manual_seed(seed)
    obs = {k: v.repeat_interleave(draws, 0) for k, v in prob.obs.items()}
    acts = policy.predict_action_chunk(obs, g, level=level)[:, 0].numpy()  # [maps * draws, 16]
    states = prob.state.numpy().repeat(draws, 0)
    chunks = waypoints_to_world(states, acts).reshape(len(seeds), draws, -1, 2)
    oracle_chunks = []
    for s in seeds:
        per_route = []
        for r in (0, 1):
            env = Nav2DEnv()
            o, _ = env.reset(seed=int(s))
            oracle = seeded_oracle(env, s, r)
            per_route.append(waypoints_to_world(o["state"], oracle.act(o)).reshape(-1, 2))
            env.close()
        oracle_chunks.append(per_route)
    return chunks, np.asarray(oracle_chunks)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--maps", type=int, default=100)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--margin", type=float, default=0.02, help="world units: a chunk closer to one route by more")
    ap.add_argument("--seed0", type=int, default=740_000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default="nav_modes")
    a = ap.parse_args()
    cfg, policy, ckpt = load_policy_run(a)
    policy.eval()
    t0 = time.time()
    seeds = two_route_seeds(a.seed0, a.maps)
    routes, demo_route = [], []
    for s in seeds:
        env = Nav2DEnv()
        env.reset(seed=int(s))
        routes.append([resample_polyline(np.asarray(r), spacing=0.005) for r in env.routes[:2]])
        demo_route.append(seeded_oracle(env, s, "random").route_id)
        env.close()
    demo_route = np.asarray(demo_route)
    out = {"demonstrations": {"route0_share": rate(demo_route == 0)}}
    print(f"demonstrations: route 0 on {out['demonstrations']['route0_share']['rate']:.0%} of {len(seeds)} maps",
          flush=True)
    for level in ("none", "z1z2"):
        eps = rollout_nav(policy, seeds, route=list(demo_route), level=level,
                          generator=torch.Generator().manual_seed(0))
        followed = np.array([route_of_path(e["path"], routes[i]) for i, e in enumerate(eps)])
        success = np.array([e["success"] for e in eps])
        on = followed >= 0
        row = {"success": rate(success), "follows_a_route": rate(on),
               "route0_share": share(followed[on] == 0),
               "route0_share_successful": share(followed[on & success] == 0),
               "follows_the_oracles_route": share(followed[on] == demo_route[on])}
        chunks, oracle_chunks = start_chunks(policy, seeds, a.draws, level, seed=1)
        d0 = np.array([polyline_distance(chunks[i], routes[i][0]) for i in range(len(seeds))])  # [maps, draws]
        d1 = np.array([polyline_distance(chunks[i], routes[i][1]) for i in range(len(seeds))])
        od = np.array([[polyline_distance(oracle_chunks[i, r], routes[i][1 - r]) for r in (0, 1)]
                       for i in range(len(seeds))])  # the oracle's chunk along route r, from the other route
        distinct = (od > a.margin).all(1)
        to0, to1 = d1 - d0 > a.margin, d0 - d1 > a.margin
        both = to0.any(1) & to1.any(1)
        row.update({
            "maps_with_distinct_first_chunks": int(distinct.sum()),
            "both_routes_at": share(both[distinct]),
            "draws_to_route0": float(to0[distinct].sum() / max(1, (to0 | to1)[distinct].sum())),
            "undecided_draws": float((~(to0 | to1))[distinct].mean()) if distinct.any() else None,
            "spread": float(chunks.std(1).mean()),
        })
        out[level] = row
        pct = lambda r: "-" if r is None else f"{r['rate']:.0%}"  # noqa: E731
        print(f"level {level}: success {pct(row['success'])}, route 0 {pct(row['route0_share'])} of "
              f"{row['follows_a_route']['count']} episodes that follow a route; start draws: both routes at "
              f"{pct(row['both_routes_at'])} of {int(distinct.sum())} maps, spread {row['spread']:.4f}", flush=True)
    save(a.name, {"command": command_line(), "run_dir": a.run_dir, "checkpoint": str(ckpt),
                  "prediction_type": getattr(cfg.policy, "prediction_type", None), "maps": len(seeds),
                  "draws": a.draws, "margin": a.margin, "seconds": time.time() - t0, "results": out})


if __name__ == "__main__":
    main()
