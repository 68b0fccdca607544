"""Route switching in the re-ranked nav deployment by optimizing an intent (issue 5): the policy is given the
intent of one route of a two-route map and an optimizer, at every decision, moves the intent so that the chunks
follow the other route; switched = the closed-loop path overlaps the other route more than the original one.

    python benchmarks/nav_route_switch.py --run-dir RUN [--maps 30] [--rerank 16] [--execute-waypoints 4]
        [--steps 10] [--lr-z1 0.2] [--lr-z2 0.1] [--methods original other-z1 z2 z1] [--threads N]
        [--name nav_route_intent]

Rows (all on the same maps, env seeds from 720,000 as in nav_bench.py's route switching, the same deployment):

- ``original intent``: z1 of the map's original route, z2 from the prior (how often the policy switches anyway);
- ``z1 of the other route``: z1 encoded from the other route's reference trajectory (no optimization);
- ``z2 optimized``: z1 of the original route; every candidate's z2 moved toward the other route by ``--steps``
  Adam steps (lr ``--lr-z2``, on the prior's sqrt(d) shell) through the full sampling chain, from its prior draw;
- ``z1 optimized``: z1 itself moved toward the other route by ``--steps`` Adam steps (lr ``--lr-z1``) through the
  full chain, starting from the encoding of the original route. A map's K candidates share the z1 (each with
  its own prior z2 and noise, the mean of their objectives is minimized); the deployment then draws fresh z2 and
  noise, so the z1 has to carry the route by itself.

The objective is ``route`` of :mod:`steerlab.nav.intent_opt` (mean distance of the 8 waypoints to the other
route's polyline). z1 has no prior; as its plausibility the script reports how far the optimizer moves it, as a
fraction of the distance from the original route's encoding to the other route's at the same state (1 = as far
as the other route's own encoding).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, load_policy_run, parser, rate, save, switched_route

from steerlab.envs.nav2d import Nav2DEnv, seeded_oracle, to_robot_frame
from steerlab.nav.intent_opt import (
    CandidateChain, CandidateObjective, IntentChain, IntentObjective, make_problem, problem_from_envs, replicate,
    two_route_seeds,
)
from steerlab.nav.rollout import rollout_nav
from steerlab.steer.noise_opt import NoiseOptConfig, optimize_noise

METHODS = {"original": "original intent", "other-z1": "z1 of the other route", "z2": "z2 optimized",
           "z1": "z1 optimized"}


def other_routes(seeds, route_id) -> list[np.ndarray]:
    """World reference trajectories ``[32, 2]`` of the route each map's intent does not encode."""
    refs = []
    for s, r in zip(seeds, route_id):
        env = Nav2DEnv()
        env.reset(seed=int(s))
        refs.append(seeded_oracle(env, s, 1 - r).ref_traj.astype(np.float64))
        env.close()
    return refs


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("--maps", type=int, default=30)
    ap.add_argument("--seed0", type=int, default=720_000)
    ap.add_argument("--rerank", type=int, default=16)
    ap.add_argument("--execute-waypoints", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="Adam steps of the intent search at every decision")
    ap.add_argument("--lr-z1", type=float, default=0.2)
    ap.add_argument("--lr-z2", type=float, default=0.1)
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--name", default="nav_route_intent")
    a = ap.parse_args()
    cfg, policy, ckpt = load_policy_run(a)
    K, W = a.rerank, a.execute_waypoints
    if K < 1:
        raise SystemExit("--rerank must be >= 1 (this benchmark studies the re-ranked deployment)")
    deploy = {"rerank": K, "execute_waypoints": W}
    seeds = two_route_seeds(a.seed0, a.maps)
    route = make_problem(policy, seeds).route_id
    other = [1 - r for r in route]
    other_ref = other_routes(seeds, route)
    out: dict = {"command": command_line(), "checkpoint": str(ckpt),
                 "maps": len(seeds), "deployment": deploy, "steps_per_decision": a.steps, "lr_z1": a.lr_z1,
                 "lr_z2": a.lr_z2, "rows": []}

    for key in a.methods:
        method = METHODS[key]
        gen = torch.Generator().manual_seed(7)
        moved: list[float] = []

        def toward_other(batch, envs, rows, key=key, gen=gen, moved=moved):
            n = len(envs)
            prob = problem_from_envs(batch, envs, [route[r] for r in rows])
            z0 = torch.randn((n * K, *policy.chunk_shape), generator=gen)
            z2 = torch.randn((n * K, policy.z2_dim), generator=gen)
            if key == "z2":  # each candidate's z2 on its own
                rep = replicate(prob, K)
                chain = IntentChain(policy, rep, z0)
                return optimize_noise(chain.sample_fn, IntentObjective("route", rep), z2,
                                      NoiseOptConfig(lr=a.lr_z2, steps=a.steps, project_shell=True),
                                      nfe_per_sample=chain.nfe, progress=False, log=None).z
            chain = CandidateChain(policy, prob, z0, K, variable="z1", z2=z2)
            z1 = optimize_noise(chain.sample_fn, CandidateObjective("route", prob, K, reduce="mean"), chain.z1,
                                NoiseOptConfig(lr=a.lr_z1, steps=a.steps, project_shell=False),
                                nfe_per_sample=chain.nfe, progress=False, log=None).z
            with torch.no_grad():
                ref = torch.as_tensor(np.stack([to_robot_frame(np.asarray(e.state, np.float64), other_ref[r])
                                                for e, r in zip(envs, rows)]), dtype=torch.float32)
                z1_other = policy.encode_z1(ref)
            gap = (z1_other - chain.z1).norm(dim=1).clamp(min=1e-6)
            moved.extend(((z1 - chain.z1).norm(dim=1) / gap).tolist())
            return z1, None

        t0 = time.time()
        kw = {"z2_fn": toward_other} if key in ("z1", "z2") else {}
        eps = rollout_nav(policy, seeds, route=other if key == "other-z1" else route,
                          generator=torch.Generator().manual_seed(5), **deploy, **kw)
        sw = switched_route(eps, seeds, route)
        row = {"method": method, "switched": rate(sw), "success": rate([e["success"] for e in eps]),
               "switched_and_success": rate([s and e["success"] for s, e in zip(sw, eps)]),
               "decisions": int(sum(e["length"] for e in eps)), "seconds": time.time() - t0}
        if moved:
            row["z1_moved_fraction"] = {"median": float(np.median(moved)), "p90": float(np.quantile(moved, 0.9))}
        out["rows"].append(row)
        print(f"{method:22s}: switched {sw.mean():.0%}, success {row['success']['rate']:.0%}, "
              f"{row['decisions']} decisions"
              + (f", z1 moved {row['z1_moved_fraction']['median']:.2f} of the way (median)" if moved else "")
              + f", {row['seconds']:.0f} s", flush=True)
    save(a.name, out)


if __name__ == "__main__":
    main()
