"""Re-ranked deployment of a nav policy (issue 5): goal-conditioned closed-loop success against the number of
candidate chunks K drawn per decision, the waypoints W executed per decision and the safety margin.

    python benchmarks/nav_rerank_sweep.py --run-dir RUN [--maps 100] [--threads N] [--name nav_rerank_sweep]

Every cell rolls out the same maps (env seeds 700,000 + i, as nav_bench.py's nominal rollouts) with z1 from the
oracle's route and z2 from the prior. K = 1 is the policy's own single draw (no re-ranking). A candidate is safe
when its swept path keeps the robot radius + margin from the occupied pixels of the robot's egocentric image
(:mod:`steerlab.nav.safety`); the first safe draw is executed, else the clearest. Also reported: the share of
decisions at which no candidate was safe and the mean number of draws passed over per decision. The last cell
draws one z2 per decision from the prior and shares it among the K candidates (as when the deployment is given an
intent, e.g. by an adversary), so only the chain noise differs between them.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, load_policy_run, parser, save

from steerlab.nav.rollout import rollout_nav, summarize
from steerlab.train.checkpoint import checkpoint_step

CELLS = ([(k, w, 0.01, False) for w in (8, 4, 2) for k in (1, 4, 16)]
         + [(32, 4, 0.01, False), (16, 4, 0.0, False), (16, 4, 0.02, False), (16, 4, 0.01, True)])


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("--maps", type=int, default=100)
    ap.add_argument("--seed0", type=int, default=700_000)
    ap.add_argument("--name", default="nav_rerank_sweep")
    ap.add_argument("--cells", nargs="+", default=None, metavar="K:W",
                    help="only these cells, K candidates and W executed waypoints each (margin 0.01, own z2), e.g. 1:8 16:4")
    a = ap.parse_args()
    cells = CELLS if a.cells is None else [(*map(int, c.split(":")), 0.01, False) for c in a.cells]
    cfg, policy, ckpt = load_policy_run(a)
    seeds = list(range(a.seed0, a.seed0 + a.maps))
    rows = []
    for k, w, margin, shared in cells:
        t0 = time.time()
        gen = torch.Generator().manual_seed(0)
        shared_z2 = (lambda b, envs, rows: torch.randn((len(envs), policy.z2_dim), generator=gen)) if shared else None
        eps = rollout_nav(policy, seeds, generator=gen, rerank=k if k > 1 else 0, execute_waypoints=None if w == 8 else w,
                          safety_margin=margin, z2_fn=shared_z2)
        decisions = sum(e["length"] for e in eps)
        fam = {}
        for e in eps:
            fam.setdefault(e["family"], []).append(bool(e["success"]))
        row = {"k": k, "execute_waypoints": w, "margin": margin, "shared_z2": shared, **summarize(eps),
               "by_family": {f: float(np.mean(v)) for f, v in sorted(fam.items())},
               "decisions_mean": decisions / len(eps), "seconds": time.time() - t0}
        if k > 1:
            row["no_safe_candidate"] = sum(e["unsafe"] for e in eps) / decisions
            row["passed_over_per_decision"] = sum(e["rejected"] for e in eps) / decisions
        rows.append(row)
        print(f"K={k:2d} W={w} margin {margin:.3f}{' shared z2' if shared else ''}: success {row['success_rate']:.0%} collision "
              f"{row['collision_rate']:.0%} time-out {row['timeout_rate']:.0%}, "
              f"{row['decisions_mean']:.1f} decisions, {row['seconds']:.0f} s", flush=True)
    save(a.name, {"command": command_line(), "checkpoint": str(ckpt), "prediction_type": cfg.policy.prediction_type,
                  "train_steps": checkpoint_step(ckpt),
                  "maps": a.maps, "rows": rows})


if __name__ == "__main__":
    main()
