"""Policy stress test, verified in closed loop: search for initial noises that make a trained diffusion/flow
particle policy fail, then roll the policy out in the real environment with each episode's found noise held
fixed (every chunk of the episode is sampled from it) and count real failures.

    python benchmarks/stress_test.py --run-dir RUN [--episodes 100] [--budgets 100 300 1000]

Methods at equal budget (denoiser evaluations per episode, a backward pass counted at its measured cost):
- ``random``: one random noise (the policy's own failure rate, the floor);
- ``best-of-N``: N = budget / chain-NFE random noises, the one with the highest failure objective;
- ``CEM``: population 8, budget / (8 * chain-NFE) iterations;
- ``gradient``: Adam on z0 (lr 0.1, per-restart gradient clip 1), z0 projected onto the sqrt(d) shell after
  each step (so every found noise has the norm of a typical draw), best iterate kept.

The failure objective on the first predicted chunk (from the episode's first observation) is the distance of
the chunk's last action from the first goal (maximized). Each closed-loop episode that does not succeed is a
failure; failures are also split by mode, because the objective aims at one of them:
- ``missed_first_goal``: the agent never came within the success tolerance (0.05) of the first goal, the
  failure the objective aims at (the policy itself almost never fails this way);
- ``missed_second_goal``: it reached the first goal but never the second;
- ``left_second_goal``: it reached both but did not end inside the second goal's tolerance.
The headline figure is the issue's: failures found per 1,000 denoiser evaluations (failing episodes over the
evaluations spent on them), for all failures and for the targeted mode. Plausibility of each failing noise: the chi_d CDF of
its norm (inside [0.005, 0.995] = inside the prior's central 99%) and its largest |coordinate|.
Writes benchmarks/results/stress_test.json and .png (``--name`` changes the stem).
"""

from __future__ import annotations


import numpy as np
import torch

from common import command_line, parser, results_path, save

from steerlab.eval.metrics import wilson_interval
from steerlab.eval.run import load_run
from steerlab.steer.stress import FAILURE_MODES as MODES
from steerlab.steer.stress import closed_loop, failure_mode, inside_central, run_searches
from steerlab.steer.noise_opt import chi_cdf, measure_backward_cost
from steerlab.steer.objectives import EndDistance
from steerlab.steer.policy_chain import initial_observations, policy_sampler


def main() -> None:
    ap = parser(__doc__, "run_dir")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seed0", type=int, default=300_000)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--name", default="stress_test", help="results name: benchmarks/results/<name>.json and .png")
    a = ap.parse_args()
    cfg, policy, ckpt = load_run(a.run_dir)
    if policy.default_noise(None).mode != "none":
        print("note: the policy's sampler is stochastic; the stress test samples its chain without per-step noise "
              "(noise held fixed means z0 decides the chunk)")
    seeds = [a.seed0 + i for i in range(a.episodes)]
    obs, obs_dicts = initial_observations(cfg, policy, seeds)
    chain = policy_sampler(policy, obs, noise_mode="none", grad="full")
    objective = EndDistance(torch.as_tensor(np.stack([o["pos_first_goal"] for o in obs_dicts]), dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    z_rand = torch.randn(chain.shape, generator=g)
    bwd = measure_backward_cost(chain.sample_fn, objective, z_rand, repeats=3)
    print(f"{ckpt}: chain NFE {chain.nfe}, backward = {bwd:.2f} forwards")
    import dataclasses

    rows = []

    def record(method, budget, z, nfe, seconds):
        eps = closed_loop(policy, cfg.env, cfg.n_dim, seeds, z)
        fail = np.array([not e["success"] for e in eps])
        modes = [failure_mode(e) for e in eps]
        targeted = np.array([m == MODES[0] for m in modes])
        cdf = chi_cdf(z).numpy()
        plausible = inside_central(cdf)
        maxabs = z.flatten(1).abs().max(1).values.numpy()
        k, kt = int(fail.sum()), int(targeted.sum())
        lo, hi = wilson_interval(k, len(fail))
        row = {"method": method, "budget_nfe": budget, "nfe_spent": float(nfe), "failures": k, "episodes": len(fail),
               "failure_rate": k / len(fail), "ci95": [lo, hi], "search_seconds": seconds,
               "failures_per_1000_nfe": 1000.0 * k / (len(fail) * float(nfe)),
               "modes": {m: sum(x == m for x in modes) for m in MODES},
               "targeted_failures": kt,
               "targeted_ci95": list(wilson_interval(kt, len(fail))),
               "targeted_per_1000_nfe": 1000.0 * kt / (len(fail) * float(nfe)),
               "targeted_inside_99": float(np.mean(plausible[targeted])) if kt else None,
               "objective_mean": float(objective(chain.sample_fn(z).detach()).mean()),
               "failing_chi_cdf": cdf[fail].tolist(),
               "failing_inside_99": float(np.mean(plausible[fail])) if k else None,
               "failing_max_abs_z": maxabs[fail].tolist()}
        rows.append(row)
        print(f"{method:10s} budget {budget:5d}: {k}/{len(fail)} failures ({k / len(fail):.0%}, CI [{lo:.0%}, {hi:.0%}]), "
              f"{row['failures_per_1000_nfe']:.2f} per 1k NFE; missed first goal {row['targeted_failures']}; "
              f"objective {row['objective_mean']:.3f}, {seconds:.0f} s search")

    record("random", chain.nfe, z_rand, chain.nfe, 0.0)
    run_searches(chain, objective, z_rand, a.budgets, bwd, a.lr, record)
    res = {"command": command_line(), "checkpoint": str(ckpt),
           "policy": dataclasses.asdict(cfg.policy), "n_dim": cfg.n_dim, "chain_nfe": chain.nfe,
           "backward_cost": bwd, "rows": rows}
    for b in a.budgets:
        per = {r["method"]: r for r in rows if r["budget_nfe"] == b}
        g, n = per["gradient"], per["best-of-N"]
        res[f"gradient_over_best_of_n_at_{b}"] = g["failures_per_1000_nfe"] / max(n["failures_per_1000_nfe"], 1e-9)
        res[f"targeted_gradient_over_best_of_n_at_{b}"] = (
            g["targeted_per_1000_nfe"] / n["targeted_per_1000_nfe"] if n["targeted_failures"] else None)
        res[f"targeted_counts_at_{b}"] = {"gradient": g["targeted_failures"], "best-of-N": n["targeted_failures"],
                                          "CEM": per["CEM"]["targeted_failures"]}
    save(a.name, res)
    plot(rows, a.name)


def plot(rows, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    base = [r for r in rows if r["method"] == "random"][0]
    panels = (("failures", "ci95", "every closed-loop failure"),
              ("targeted_failures", "targeted_ci95", "targeted mode: never reached the first goal"))
    for ax, (key, ci, title) in zip(axes, panels):
        ax.axhline(base[key] / base["episodes"], color="gray", ls="--", label="random noise (the policy's own)")
        for m, c in (("best-of-N", "tab:blue"), ("CEM", "tab:orange"), ("gradient", "tab:red")):
            rs = [r for r in rows if r["method"] == m]
            y = np.array([r[key] / r["episodes"] for r in rs])
            lo = y - np.array([r[ci][0] for r in rs])
            hi = np.array([r[ci][1] for r in rs]) - y
            ax.errorbar([r["budget_nfe"] for r in rs], y, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o-",
                        color=c, capsize=3, label=m)
        ax.set_xscale("log")
        ax.set(xlabel="search budget (denoiser evaluations per episode)", ylabel="closed-loop failure rate",
               title=title, ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.suptitle("noises found to make the policy fail, held fixed in rollouts", fontsize=10)
    fig.tight_layout()
    out = results_path(f"{name}.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
