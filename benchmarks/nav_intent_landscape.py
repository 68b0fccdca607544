"""Why gradient search over the 4-D intent z2 loses to random draws against the re-ranked nav deployment
(issue 5, ``nav_adversary.py``): the gradient is right, the objective has several local maxima on the prior's
shell, and what the closed loop rewards is every candidate colliding at once.

    python benchmarks/nav_intent_landscape.py --run-dir RUN [--maps 10] [--rerank 16] [--execute-waypoints 4]
        [--budget 300] [--lr 0.5] [--threads N] [--name nav_intent_landscape]

At the start states of the adversarial maps (env seeds 710,000 + i, z1 of the oracle's route), with K candidate
chains per map (their own initial noise), the collision objective of ``nav_adversary.py`` on the first W
waypoints:

- **gradient check**: the directional derivative along the autograd gradient by central differences at steps
  1e-3, 1e-2, 1e-1, 0.5, as a ratio to the gradient's norm (1 = exact);
- **landscape**: the objective along random great circles of the sqrt(d) shell (64 points each), and its number
  of local maxima per circle;
- **searches** (the same as ``nav_adversary.py``, per candidate, ``--budget`` NFE each): prior draws,
  best-of-N, gradient (Adam, ``--lr``), screen+gradient. Per search: the share of candidates whose executed
  prefix collides (map check) with the search's own noise and with fresh noise, the share of maps on which
  *every* candidate collides with fresh noise (what the re-ranker cannot avoid), and the spread of a map's K
  intents (mean pairwise distance; the prior row is the spread of independent draws).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from common import command_line, load_policy_run, parser, save, search_intent

from steerlab.nav.intent_opt import IntentChain, IntentObjective, hard_collision, make_problem, replicate
from steerlab.steer.noise_opt import measure_backward_cost


def local_maxima(v: np.ndarray) -> int:
    """Strict local maxima of a closed curve's values."""
    return int(((v > np.roll(v, 1)) & (v > np.roll(v, -1))).sum())


def main() -> None:
    ap = parser(__doc__, "run_dir", "threads")
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--seed0", type=int, default=710_000)
    ap.add_argument("--rerank", type=int, default=16)
    ap.add_argument("--execute-waypoints", type=int, default=4)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--name", default="nav_intent_landscape")
    a = ap.parse_args()
    cfg, policy, ckpt = load_policy_run(a)
    K, W, M = a.rerank, a.execute_waypoints, a.maps
    problem = make_problem(policy, list(range(a.seed0, a.seed0 + M)))
    rep = replicate(problem, K)
    g = torch.Generator().manual_seed(0)
    chain = IntentChain(policy, rep, torch.randn((M * K, *policy.chunk_shape), generator=g))
    fresh = IntentChain(policy, rep, torch.randn((M * K, *policy.chunk_shape), generator=g), seed=11)
    inner = IntentObjective("collision", rep)

    def objective(wp):
        return inner(wp[:, :W])

    def collides(ch, z) -> np.ndarray:  # the executed prefix hits an obstacle
        with torch.no_grad():
            return hard_collision(rep, ch.sample_fn(z)[:, :W])

    out: dict = {"command": command_line(),
                 "checkpoint": str(ckpt), "maps": M, "rerank": K, "execute_waypoints": W, "budget_nfe": a.budget,
                 "lr": a.lr}
    z = torch.randn((M * K, policy.z2_dim), generator=g)  # prior draws, the start of every search

    # ---- gradient check along the gradient direction
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(chain.sample_fn(zg)).sum(), zg)
    norm = grad.norm(dim=1)
    ok = norm > 1e-8
    d = torch.where(ok[:, None], grad / norm.clamp(min=1e-12)[:, None], 0.0)  # unit directions, 0 where flat
    rows = {}
    with torch.no_grad():
        for h in (1e-3, 1e-2, 1e-1, 0.5):
            fd = (objective(chain.sample_fn(z + h * d)) - objective(chain.sample_fn(z - h * d))) / (2 * h)
            ratio = (fd[ok] / norm[ok]).numpy()
            rows[f"{h:g}"] = {"median": float(np.median(ratio)), "p10": float(np.quantile(ratio, 0.1)),
                              "p90": float(np.quantile(ratio, 0.9))}
            print(f"gradient check, step {h:g}: central difference / |grad| median {np.median(ratio):.3f} "
                  f"[p10 {np.quantile(ratio, 0.1):.3f}, p90 {np.quantile(ratio, 0.9):.3f}]", flush=True)
    out["gradient_check"] = {"rows": int(ok.sum()), "by_step": rows}

    # ---- landscape along great circles of the shell (candidate 0's noise of each map)
    n_pts, circles = 64, 4
    counts, ranges = [], []
    theta = torch.linspace(0, 2 * np.pi, n_pts + 1)[:-1]
    with torch.no_grad():
        for i in range(M):
            sub = replicate(make_problem(policy, [problem.seeds[i]]), n_pts)
            c = IntentChain(policy, sub, chain.z0[i * K: i * K + 1].expand(n_pts, -1, -1).contiguous())
            obj_i = IntentObjective("collision", sub)
            for _ in range(circles):
                u, v = torch.randn(policy.z2_dim, generator=g), torch.randn(policy.z2_dim, generator=g)
                u = u / u.norm()
                v = v - (v @ u) * u
                v = v / v.norm()
                zz = policy.z2_dim ** 0.5 * (torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * v)
                vals = obj_i(c.sample_fn(zz)[:, :W]).numpy()
                counts.append(local_maxima(vals))
                ranges.append(float(vals.max() - vals.min()))
    out["landscape"] = {"circles": len(counts), "points_per_circle": n_pts,
                        "local_maxima_mean": float(np.mean(counts)), "local_maxima_max": int(np.max(counts)),
                        "share_with_several_maxima": float(np.mean(np.array(counts) >= 2)),
                        "objective_range_median": float(np.median(ranges))}
    print(f"landscape: {np.mean(counts):.2f} local maxima per great circle (max {np.max(counts)}), "
          f"{np.mean(np.array(counts) >= 2):.0%} of circles with two or more", flush=True)

    # ---- the searches
    bwd = measure_backward_cost(chain.sample_fn, objective, z, repeats=2)
    out["backward_cost"] = bwd
    out["searches"] = []
    for method, lr in (("prior z2", 0.0), ("best-of-N z2", 0.0), ("gradient z2", a.lr), ("screen+gradient z2", a.lr)):
        t0 = time.time()
        zs = z if method == "prior z2" else search_intent(method, chain.sample_fn, objective, z, a.budget, chain.nfe,
                                                          bwd, torch.Generator().manual_seed(3), lr=lr).z
        own, new = collides(chain, zs), collides(fresh, zs)
        per_map = zs.reshape(M, K, -1)
        spread = torch.cdist(per_map, per_map).sum((1, 2)) / (K * (K - 1))
        row = {"method": method, "candidate_collides_own_noise": float(own.mean()),
               "candidate_collides_fresh_noise": float(new.mean()),
               "maps_all_candidates_collide_fresh_noise": float(new.reshape(M, K).all(1).mean()),
               "spread_mean": float(spread.mean()), "seconds": time.time() - t0}
        out["searches"].append(row)
        print(f"{method:19s}: candidates colliding {own.mean():.0%} (own noise) / {new.mean():.0%} (fresh noise), "
              f"maps with every candidate colliding {row['maps_all_candidates_collide_fresh_noise']:.0%}, "
              f"spread of a map's intents {row['spread_mean']:.2f}", flush=True)
    save(a.name, out)


if __name__ == "__main__":
    main()
