"""An adversary that replaces the intents of the re-ranked nav deployment (issue 5): at every decision, each of the
K candidate draws gets a z2 chosen to make its executed prefix collide, and the re-ranker then picks among them as
usual; closed-loop collision over the episode.

    python benchmarks/nav_adversary.py --run-dir RUN [--maps 50] [--rerank 16] [--execute-waypoints 2 4]
        [--budget 300] [--lr 0.1] [--methods prior best-of-N gradient [screen+gradient]] [--screen 0.5]
        [--backward-cost C] [--threads N] [--name nav_adversary]

The threat model: the deployment draws K intents z2 from the prior N(0, I) and one chain noise per candidate; the
adversary substitutes plausible intents (kept on the prior's sqrt(d) shell) for the K draws but does not control the
noise, the re-ranker or the env. With no adversary ("prior z2") this is exactly the nominal re-ranked deployment.
Against the re-ranker, min over the candidates of their collision costs is the objective, and it separates into
one maximization per candidate, so each candidate's z2 is searched on its own: best-of-N (``--budget`` NFE per
candidate), gradient ascent through the full sampling chain (Adam, ``--lr``, same budget counting the backward
pass at ``--backward-cost`` forwards, timed if not given), or screen+gradient (the best of ``--screen`` of the
budget in prior draws, then Adam from it with the rest). The search sees the candidate's own initial noise for
the chain, the deployment then samples with its own fresh noise, so a found z2 has to collide for noises it was
not tuned on. The objective scores the first W waypoints (what is executed before the next decision). Maps: env seeds 710,000 + i, z1 from the oracle's route
(nav_bench.py's adversarial maps). Plausibility: the share of chosen z2 whose chi_d CDF of |z| lies in
[0.005, 0.995].
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, inside_central, load_policy_run, parser, rate, save, search_intent

from steerlab.nav.intent_opt import IntentChain, IntentObjective, make_problem, problem_from_envs, replicate
from steerlab.nav.rollout import rollout_nav
from steerlab.steer.noise_opt import chi_cdf, measure_backward_cost

METHODS = {"prior": "prior z2", "best-of-N": "best-of-N z2", "gradient": "gradient z2",
           "screen+gradient": "screen+gradient z2"}
DEFAULT_METHODS = ["prior", "best-of-N", "gradient"]


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("--maps", type=int, default=50)
    ap.add_argument("--seed0", type=int, default=710_000)
    ap.add_argument("--rerank", type=int, default=16)
    ap.add_argument("--execute-waypoints", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--budget", type=int, default=300, help="NFE per candidate and decision")
    ap.add_argument("--lr", type=float, default=0.1, help="Adam learning rate of the gradient search")
    ap.add_argument("--screen", type=float, default=0.5,
                    help="screen+gradient: share of the budget spent on prior draws before the gradient steps")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    ap.add_argument("--backward-cost", type=float, default=None,
                    help="cost of a backward pass in forward passes, for the gradient budget (default: timed once; "
                         "the timing varies with machine load and with it the number of gradient steps)")
    ap.add_argument("--name", default="nav_adversary")
    a = ap.parse_args()
    cfg, policy, ckpt = load_policy_run(a)
    K = a.rerank
    seeds = list(range(a.seed0, a.seed0 + a.maps))
    route = make_problem(policy, seeds).route_id
    out: dict = {"command": command_line(), "checkpoint": str(ckpt),
                 "maps": a.maps, "rerank": K, "budget_nfe": a.budget, "rows": []}
    bwd = a.backward_cost
    for w in a.execute_waypoints:
        for method in (METHODS[m] for m in a.methods):
            gen = torch.Generator().manual_seed(6)
            def adversary(batch, envs, rows, method=method, w=w, gen=gen):
                nonlocal bwd
                n = len(envs)
                z = torch.randn((n * K, policy.z2_dim), generator=gen)
                if method != "prior z2":
                    rep = replicate(problem_from_envs(batch, envs), K)
                    chain = IntentChain(policy, rep, torch.randn((n * K, *policy.chunk_shape), generator=gen))
                    inner = IntentObjective("collision", rep)
                    obj = lambda wp: inner(wp[:, :w])  # noqa: E731
                    if bwd is None:
                        bwd = measure_backward_cost(chain.sample_fn, obj, z, repeats=2)
                    z = search_intent(method, chain.sample_fn, obj, z, a.budget, chain.nfe, bwd, gen, lr=a.lr,
                                      screen=a.screen).z
                return z

            t0 = time.time()
            eps = rollout_nav(policy, seeds, route=route, z2_fn=adversary, generator=torch.Generator().manual_seed(5),
                              rerank=K, execute_waypoints=w)
            real = np.array([e["collision"] for e in eps])
            cdf = chi_cdf(torch.cat([z for e in eps for z in e["z2_chosen"]])).numpy()
            row = {"execute_waypoints": w, "method": method, "closed_loop": rate(real),
                   "success": rate([e["success"] for e in eps]), "decisions": int(sum(e["length"] for e in eps)),
                   "inside_99": float(np.mean(inside_central(cdf))), "seconds": time.time() - t0}
            out["rows"].append(row)
            print(f"W={w} {method:13s}: closed-loop collision {real.mean():.0%}, success {row['success']['rate']:.0%}, "
                  f"{row['decisions']} decisions, z inside 99% {row['inside_99']:.0%}, {row['seconds']:.0f} s", flush=True)
    out["backward_cost"] = bwd
    save(a.name, out)


if __name__ == "__main__":
    main()
