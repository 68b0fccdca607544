"""Nav2D benchmarks of a trained nav policy (issue 5): goal-conditioned success, exploration, the guidance sweep,
adversarial intents and route switching, all in closed loop on ``steerlab/Nav2D-v0``.

    python benchmarks/nav_bench.py --run-dir RUN [--maps 100] [--sweep-maps 50] [--adv-maps 50] [--budget 300]
        [--route-maps 30] [--threads N] [--name nav_bench] [--rerank K --execute-waypoints W]

- **nominal**: goal-conditioned rollouts, z1 from the route the oracle picks for the map, z2 from the prior;
  success / collision / time-out with 95% Wilson intervals.
- **exploration**: the goal masked and no intent; collision rate and coverage (distinct 0.05-cells visited).
- **guidance sweep**: lambda_cfg in {0, 1, 2, 4}: success and the mean distance of the path to the reference route.
- **adversarial z2**: per map (start state, z1 of its route), search z2 for a first chunk that collides (objective
  ``collision`` of :mod:`steerlab.nav.intent_opt`, maximized) at an equal budget of denoiser evaluations:
  random z2 (one draw), best-of-N, gradient on z2 (Adam, sqrt(d) shell), gradient on z2 and z0 jointly.
  *Predicted*: the chunk's straight segments hit an obstacle; *closed loop*: the episode, rolled out with that z2
  and z0 held fixed for every decision, ends in a collision. Plausibility: chi_d CDF of |z| inside [0.005, 0.995].
- **route switching** (two-route maps): (a) z1 encoded from the other route; (b) z1 of the original route, z2
  optimized toward the other route (objective ``route``) and held fixed. Switched = the closed-loop path overlaps
  the other route more than the original one (:func:`~steerlab.envs.nav2d.planner.route_overlap`).

With ``--rerank K`` every rollout is the re-ranked deployment of :mod:`steerlab.nav.safety`: K chunks drawn per
decision, the first that keeps the robot radius + ``--safety-margin`` from the occupied pixels of the robot's own
egocentric image executed (else the clearest), and with ``--execute-waypoints W`` only its first W waypoints before
the next decision. The adversary then attacks that deployment: z2 is shared by a map's K candidates, which get
their own noises (``CandidateChain``), and the objective is the least colliding candidate's
(``CandidateObjective(reduce="worst")``), so a found z2 must make every candidate collide. *Predicted* re-ranks K
fresh draws (noises the search never saw) at the start state and checks the executed prefix of the chosen chunk;
*closed loop* rolls out with z2 held fixed and the re-ranker drawing new noises at every decision. The budget is
``--budget`` NFE per candidate (so K times as many network calls as the single-draw attack), the same for every
method; the joint z2+z0 search is left out (the deployment draws its own noise). The first-decision rows are
followed by *the adversary at every decision*: z2 searched afresh (same method and budget) at each state the
episode reaches, closed-loop collision over the episode. Route switching by z2 minimizes the mean over the K
candidates of the distance to the other route, once at the start (z2 then held) and afresh at every decision
(``--route-steps-per-decision`` Adam steps).

Writes benchmarks/results/nav_bench.json and rollout videos of one map each, one frame per decision:
nav_nominal.gif (a successful episode), nav_route_switch.gif (z1 from the other route, a switched episode) and
nav_adversarial.gif (the gradient z2+z0 intent, an episode that collides).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, inside_central, parser, rate, results_path, save, search_intent, switched_route

from steerlab.envs.nav2d import ROBOT_RADIUS, resample_polyline, waypoints_to_world, world_to_action
from steerlab.eval.run import load_run
from steerlab.nav.intent_opt import (
    CandidateChain, CandidateObjective, IntentChain, IntentObjective, hard_collision, make_problem, problem_from_envs,
    two_route_seeds,
)
from steerlab.nav.safety import rerank, safe_threshold
from steerlab.nav.rollout import rollout_nav, save_gif, summarize
from steerlab.steer.noise_opt import NoiseOptConfig, chi_cdf, measure_backward_cost, optimize_noise


def path_to_route(path: np.ndarray, route: np.ndarray) -> float:
    r = resample_polyline(np.asarray(route, np.float64), spacing=0.005)
    return float(np.sqrt(((path[:, None] - r[None]) ** 2).sum(-1)).min(1).mean())


def coverage(path: np.ndarray, cell: float = 0.05) -> int:
    return len({tuple(c) for c in np.floor(np.asarray(path) / cell).astype(int)})


def adversarial_row(rows, method, nfe, pred, eps, z, seconds) -> np.ndarray:
    """Append one adversarial row (predicted and closed-loop collision rates, plausibility of ``z``); returns the
    closed-loop collision flags."""
    real = np.array([e["collision"] for e in eps])
    cdf = chi_cdf(z.detach()).numpy()
    rows.append({"method": method, "nfe": float(nfe), "predicted": rate(pred), "closed_loop": rate(real),
                 "closed_loop_given_predicted": rate(real[pred]) if pred.any() else None,
                 "inside_99": float(np.mean(inside_central(cdf))), "seconds": seconds})
    return real


def adversarial_reranked(policy, problem, seeds, z2r, a, deploy, rows, g, gif) -> float:
    """The adversarial rows against the re-ranked deployment (module doc)."""
    K, W = deploy["rerank"], deploy["execute_waypoints"]
    attack = CandidateChain(policy, problem, torch.randn((len(seeds) * K, *policy.chunk_shape), generator=g(1)), K,
                            grad="full")
    fresh = CandidateChain(policy, problem, torch.randn((len(seeds) * K, *policy.chunk_shape), generator=g(4)), K,
                           seed=1)
    objective = CandidateObjective("collision", problem, K, reduce="worst", waypoints=W)
    thr = safe_threshold(ROBOT_RADIUS, deploy["safety_margin"])
    state_k = problem.state.repeat_interleave(K, 0)

    def record(method, z, nfe, seconds):
        with torch.no_grad():
            cand = world_to_action(state_k, fresh.sample_fn(z).flatten(0, 1))
        chosen, _, _ = rerank(problem.obs["obs_img"][:, -1], cand, K, thr)
        pred = hard_collision(problem, waypoints_to_world(problem.state, chosen)[:, : W or None])
        eps = rollout_nav(policy, seeds, route=problem.route_id, z2=z.detach(), z2_decisions=1, generator=g(5), **deploy)
        real = adversarial_row(rows, method, nfe, pred, eps, z, seconds)
        print(f"adversarial {method:16s} (re-ranked, K={K}): predicted collision {pred.mean():.0%}, closed-loop "
              f"collision {real.mean():.0%}, {nfe:.0f} NFE, {seconds:.1f} s", flush=True)
        return eps

    bwd = measure_backward_cost(attack.sample_fn, objective, z2r, repeats=2)
    record("random z2", z2r, attack.nfe, 0.0)
    budget = a.budget * K
    for method in ("best-of-N z2", "gradient z2"):
        t0 = time.time()
        res = search_intent(method, attack.sample_fn, objective, z2r, budget, attack.nfe, bwd, g(3))
        eps = record(method, res.z, res.nfe, time.time() - t0)
    k = next((i for i, e in enumerate(eps) if e["collision"]), 0)  # video: the first map whose z2 collides
    (ep,) = rollout_nav(policy, seeds[k: k + 1], route=problem.route_id[k: k + 1], z2=res.z.detach()[k: k + 1],
                        z2_decisions=1, generator=g(5), record=True, **deploy)
    save_gif(ep["frames"], gif("adversarial"))

    # the adversary at every decision: z2 searched afresh at each state the episode reaches, same budget per decision
    gen = g(6)

    def adversary(method):
        def fn(batch, envs, rows):
            prob = problem_from_envs(batch, envs)
            n = len(envs)
            z2 = torch.randn((n, policy.z2_dim), generator=gen)
            if method != "random z2":
                ch = CandidateChain(policy, prob, torch.randn((n * K, *policy.chunk_shape), generator=gen), K, grad="full")
                obj = CandidateObjective("collision", prob, K, reduce="worst", waypoints=W)
                z2 = search_intent(method, ch.sample_fn, obj, z2, budget, ch.nfe, bwd, gen).z
            return z2
        return fn

    for method in ("random z2", "best-of-N z2", "gradient z2"):
        t0 = time.time()
        eps = rollout_nav(policy, seeds, route=problem.route_id, z2_fn=adversary(method), generator=g(5), **deploy)
        real = np.array([e["collision"] for e in eps])
        cdf = chi_cdf(torch.cat([z for e in eps for z in e["z2_chosen"]])).numpy()
        decisions = sum(e["length"] for e in eps)
        rows.append({"method": method, "every_decision": True, "nfe_per_decision": float(0 if method == "random z2"
                                                                                       else budget),
                     "closed_loop": rate(real), "decisions": decisions, "inside_99": float(np.mean(inside_central(cdf))),
                     "seconds": time.time() - t0})
        print(f"adversary at every decision, {method:14s}: closed-loop collision {real.mean():.0%} over "
              f"{decisions} decisions, {time.time() - t0:.0f} s", flush=True)
    return bwd


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("--maps", type=int, default=100)
    ap.add_argument("--sweep-maps", type=int, default=50)
    ap.add_argument("--adv-maps", type=int, default=50)
    ap.add_argument("--route-maps", type=int, default=30)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seed0", type=int, default=700_000)
    ap.add_argument("--name", default="nav_bench",
                    help="results file benchmarks/results/<name>.json; videos <prefix>_*.gif with prefix nav for the "
                         "default name, else <name>")
    ap.add_argument("--rerank", type=int, default=0,
                    help="re-ranked deployment: K candidate chunks per decision (0: execute the single draw)")
    ap.add_argument("--execute-waypoints", type=int, default=None,
                    help="execute only the first W waypoints of each chunk (receding horizon; default all 8)")
    ap.add_argument("--route-steps-per-decision", type=int, default=10,
                    help="re-ranked deployment: Adam steps of the z2 search toward the other route at every decision")
    ap.add_argument("--safety-margin", type=float, default=0.01,
                    help="clearance beyond the robot radius a re-ranked chunk must keep in the egocentric image")
    a = ap.parse_args()
    K, W = a.rerank, a.execute_waypoints
    deploy = {"rerank": K, "execute_waypoints": W, "safety_margin": a.safety_margin}
    if a.threads:
        torch.set_num_threads(a.threads)
    gif = lambda kind: results_path(f"{'nav' if a.name == 'nav_bench' else a.name}_{kind}.gif")  # noqa: E731
    cfg, policy, ckpt = load_run(a.run_dir)
    out: dict = {"command": command_line(), "checkpoint": str(ckpt),
                 "deployment": deploy}
    g = lambda s=0: torch.Generator().manual_seed(s)  # noqa: E731

    # ---- nominal and exploration
    t0 = time.time()
    seeds = list(range(a.seed0, a.seed0 + a.maps))
    eps = rollout_nav(policy, seeds, generator=g(), record=True, **deploy)
    out["nominal"] = {**summarize(eps), "seconds": time.time() - t0}
    save_gif(next((e for e in eps if e["success"]), eps[0])["frames"], gif("nominal"))  # a success
    print(f"nominal: success {out['nominal']['success_rate']:.0%}, collision {out['nominal']['collision_rate']:.0%}, "
          f"time-out {out['nominal']['timeout_rate']:.0%} over {a.maps} maps", flush=True)
    eps = rollout_nav(policy, seeds, route=None, goal_masked=True, generator=g(), **deploy)
    out["exploration"] = {**summarize(eps), "coverage_cells_mean": float(np.mean([coverage(e["path"]) for e in eps])),
                          "path_length_mean": float(np.mean([np.linalg.norm(np.diff(e["path"], axis=0), axis=1).sum()
                                                             for e in eps]))}
    print(f"exploration (goal masked): collision {out['exploration']['collision_rate']:.0%}, "
          f"{out['exploration']['coverage_cells_mean']:.1f} cells visited", flush=True)

    # ---- guidance sweep
    sweep = []
    for lam in (0.0, 1.0, 2.0, 4.0):
        eps = rollout_nav(policy, seeds[: a.sweep_maps], generator=g(), lambda_cfg=lam, **deploy)
        d = [path_to_route(e["path"], e["ref_traj"]) for e in eps]
        sweep.append({"lambda_cfg": lam, **summarize(eps), "distance_to_route_mean": float(np.mean(d))})
        print(f"lambda {lam:g}: success {sweep[-1]['success_rate']:.0%}, distance to route {np.mean(d):.4f}", flush=True)
    out["guidance_sweep"] = sweep

    # ---- adversarial z2
    adv_seeds = list(range(a.seed0 + 10_000, a.seed0 + 10_000 + a.adv_maps))
    problem = make_problem(policy, adv_seeds)
    z0 = torch.randn((len(adv_seeds), *policy.chunk_shape), generator=g(1))
    z2r = torch.randn((len(adv_seeds), policy.z2_dim), generator=g(2))
    objective = IntentObjective("collision", problem)
    rows = []

    def record(method, chain, z, nfe, seconds):
        with torch.no_grad():
            wp = chain.sample_fn(z)
        z2, zz0 = chain.split(z)
        pred = hard_collision(problem, wp)
        eps = rollout_nav(policy, adv_seeds, route=problem.route_id, z2=z2.detach(), z0=zz0.detach(), noise_seed=0,
                          execute_waypoints=W)
        real = adversarial_row(rows, method, nfe, pred, eps, z, seconds)
        print(f"adversarial {method:16s}: predicted collision {pred.mean():.0%}, closed-loop collision {real.mean():.0%}, "
              f"{nfe:.0f} NFE, {seconds:.1f} s", flush=True)

    if K:
        bwd = adversarial_reranked(policy, problem, adv_seeds, z2r, a, deploy, rows, g, gif)
    else:
        chain = IntentChain(policy, problem, z0, grad="full")
        bwd = measure_backward_cost(chain.sample_fn, objective, z2r, repeats=2)
        record("random z2", chain, z2r, chain.nfe, 0.0)
        t0 = time.time()
        r = search_intent("best-of-N z2", chain.sample_fn, objective, z2r, a.budget, chain.nfe, bwd, g(3))
        record("best-of-N z2", chain, r.z, r.nfe, time.time() - t0)
        for joint in (False, True):
            ch = IntentChain(policy, problem, z0, joint=joint, grad="full")
            method = "gradient z2+z0" if joint else "gradient z2"
            t0 = time.time()
            res = search_intent(method, ch.sample_fn, objective, ch.pack(z2r), a.budget, ch.nfe, bwd, g(3))
            record(method, ch, res.z, res.nfe, time.time() - t0)
            if joint:  # video of the first map whose found intent collides in closed loop (else the first map)
                z2, zz0 = ch.split(res.z.detach())
                eps = rollout_nav(policy, adv_seeds, route=problem.route_id, z2=z2, z0=zz0, noise_seed=0,
                                  execute_waypoints=W)
                k = next((i for i, e in enumerate(eps) if e["collision"]), 0)
                (ep,) = rollout_nav(policy, adv_seeds[k: k + 1], route=problem.route_id[k: k + 1], z2=z2[k: k + 1],
                                    z0=zz0[k: k + 1], noise_seed=0, record=True, execute_waypoints=W)
                save_gif(ep["frames"], gif("adversarial"))
    out["adversarial"] = {"maps": len(adv_seeds), "budget_nfe": a.budget, "backward_cost": bwd, "rows": rows}

    # ---- route switching
    rs = two_route_seeds(a.seed0 + 20_000, a.route_maps)
    problem = make_problem(policy, rs)
    other_id = [1 - r for r in problem.route_id]

    def switched(eps):
        return switched_route(eps, rs, problem.route_id)

    eps = rollout_nav(policy, rs, route=problem.route_id, generator=g(), **deploy)
    base_sw = switched(eps)
    eps = rollout_nav(policy, rs, route=other_id, generator=g(), record=True, **deploy)
    z1_sw = switched(eps)
    best = [i for i in range(len(eps)) if z1_sw[i] and eps[i]["success"]] or [int(np.argmax(z1_sw))]
    save_gif(eps[best[0]]["frames"], gif("route_switch"))  # a switched (and if any, successful) episode
    z2_init = torch.randn((len(rs), policy.z2_dim), generator=g(2))
    ocfg = NoiseOptConfig(lr=0.1, steps=50, project_shell=True)
    if K:
        ch = CandidateChain(policy, problem, torch.randn((len(rs) * K, *policy.chunk_shape), generator=g(1)), K)
        res = optimize_noise(ch.sample_fn, CandidateObjective("route", problem, K, reduce="mean"), z2_init, ocfg,
                             nfe_per_sample=ch.nfe, progress=False, log=None)
        eps = rollout_nav(policy, rs, route=problem.route_id, z2=res.z.detach(), generator=g(5), **deploy)
        out["route_switching"] = {}
        gen = g(7)

        def toward_other(batch, envs, rows):  # z2 optimized toward the other route afresh at every decision
            prob = problem_from_envs(batch, envs, [problem.route_id[r] for r in rows])
            c = CandidateChain(policy, prob, torch.randn((len(envs) * K, *policy.chunk_shape), generator=gen), K)
            z = torch.randn((len(envs), policy.z2_dim), generator=gen)
            return optimize_noise(c.sample_fn, CandidateObjective("route", prob, K, reduce="mean"), z,
                                  NoiseOptConfig(lr=0.1, steps=a.route_steps_per_decision, project_shell=True),
                                  nfe_per_sample=c.nfe, progress=False, log=None).z

        eps_every = rollout_nav(policy, rs, route=problem.route_id, z2_fn=toward_other, generator=g(5), **deploy)
        every_sw = switched(eps_every)
        out["route_switching"].update(z2_every_decision=rate(every_sw),
                                      z2_every_decision_success=rate([e["success"] for e in eps_every]),
                                      steps_per_decision=a.route_steps_per_decision)
        print(f"route switching, z2 optimized toward the other route at every decision: {every_sw.mean():.0%}", flush=True)
    else:
        z0 = torch.randn((len(rs), *policy.chunk_shape), generator=g(1))
        ch = IntentChain(policy, problem, z0, grad="full")
        res = optimize_noise(ch.sample_fn, IntentObjective("route", problem), z2_init, ocfg, nfe_per_sample=ch.nfe,
                             progress=False, log=None)
        eps = rollout_nav(policy, rs, route=problem.route_id, z2=res.z.detach(), z0=z0, noise_seed=0,
                          execute_waypoints=W)
    z2_sw = switched(eps)
    out["route_switching"] = {"maps": len(rs), "original_route_intent": rate(base_sw), "z1_from_other_route": rate(z1_sw),
                              "z2_optimized": rate(z2_sw), "z2_success": rate([e["success"] for e in eps]),
                              **out.get("route_switching", {})}
    print(f"route switching on {len(rs)} two-route maps: original intent {base_sw.mean():.0%}, z1 of the other route "
          f"{z1_sw.mean():.0%}, z2 optimized {z2_sw.mean():.0%}", flush=True)
    save(a.name, out)


if __name__ == "__main__":
    main()
