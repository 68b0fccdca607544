"""World-model stress test (the Cosmos case in miniature): find plausible predicted futures in which a policy's
plan fails, then check them against the simulator.

    python benchmarks/world_model_stress.py --policy-run RUN [--data-episodes 1000] [--noise 0.05]
        [--wm-steps 10000] [--states 100] [--budgets 100 300 1000] [--sim-draws 200]

1. Data: the policy of RUN (a particle diffusion/flow run) is rolled out under actuation noise
   (:class:`~steerlab.envs.wrappers.ActionNoise`, std ``--noise`` on every commanded set-point) and written as
   world-model pairs (:mod:`steerlab.data.collect_wm`): state + 16-step plan -> next 16 agent positions.
2. World model: ``steerlab train wm-particle --dataset ...`` (flow matching, the one training loop).
3. Test cases: from fresh env seeds, the initial state and the policy's first plan (its 16-step chunk with
   z = 0 noise-free), kept when the plan reaches the first goal (within the env's goal distance 0.05) in the
   noise-free simulator -- the plan works; can the world be made to break it?
4. Search over the world model's initial noise z (d = 16 x N) for futures that *miss* the first goal: maximize
   the soft minimum over the 16 predicted positions of the distance to the first goal. Methods at equal budget
   (denoiser evaluations per case, a backward pass counted at its measured cost): random z, best-of-N, CEM,
   gradient (Adam, z projected onto the sqrt(d) shell). A failure is *found* when the predicted future's
   minimum distance is >= 0.05 and z lies inside the prior's central 99% (chi_d CDF in [0.005, 0.995]).
5. Check against the simulator: the same plan from the same state under ``--sim-draws`` actuation-noise draws.
   A found failure is *confirmed* when the simulator can fail too (at least one draw misses the first goal);
   reported with the distance of the found future to the nearest simulated future (mean over the 16 steps)
   next to the same distance for plain world-model samples (random z).

Writes benchmarks/results/world_model_stress<tag>.json and .png (``--tag``, e.g. ``_x0`` for a second policy).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from common import command_line, inside_central, parser, results_path, run_searches, save

from steerlab import tasks
from steerlab.data.collect_wm import WM_HORIZON, collect_world_model
from steerlab.envs.particle import GOAL_DISTANCE, flatten_obs
from steerlab.envs.wrappers import ActionNoise
from steerlab.eval.metrics import wilson_interval
from steerlab.eval.run import load_run
from steerlab.sampling import no_noise
from steerlab.steer.noise_opt import chi_cdf, measure_backward_cost
from steerlab.steer.policy_chain import policy_sampler



class MissFirstGoal:
    """Soft minimum over the predicted positions ``[B, H, N]`` of the distance to the first goal (maximize it
    to make the future miss the goal); ``hard`` gives the exact minimum."""

    def __init__(self, goals: torch.Tensor, temperature: float = 0.01):
        self.goals, self.tau = goals, temperature

    def __call__(self, future: torch.Tensor) -> torch.Tensor:
        d = (future - self.goals[: len(future), None].to(future.dtype)).norm(dim=-1)
        return -self.tau * torch.logsumexp(-d / self.tau, dim=1)

    def hard(self, future: torch.Tensor) -> torch.Tensor:
        return (future - self.goals[: len(future), None].to(future.dtype)).norm(dim=-1).min(1).values


def simulate(n_dim: int, seed: int, plan: np.ndarray, std: float, draws: int) -> np.ndarray:
    """Positions ``[draws, H, N]`` after each step of ``plan`` from the state of ``reset(seed=seed)``, each draw
    with its own actuation-noise stream (``std = 0`` -> one noise-free draw)."""
    env = ActionNoise(tasks.make_env("particle", n_dim), std)
    out = np.zeros((draws, len(plan), n_dim))
    for m in range(draws):
        env.reset(seed=seed)
        env.reseed([seed, m, 11])
        for h, a in enumerate(plan):
            o, *_ = env.step(a.astype(np.float32))
            out[m, h] = o["pos_agent"]
    env.close()
    return out


def test_cases(policy, cfg, n_states: int, seed0: int):
    """(seeds, obs0 [B, Do], plans [B, H, N]) for initial states whose noise-free plan reaches the first goal."""
    env = tasks.make_env(cfg.env, cfg.n_dim)
    seeds, obs, plans, tried = [], [], [], 0
    while len(seeds) < n_states:
        batch = list(range(seed0 + tried, seed0 + tried + 64))
        tried += 64
        flat = np.stack([flatten_obs(env.reset(seed=s)[0]) for s in batch])
        hist = torch.as_tensor(flat)[:, None].repeat(1, policy.n_obs_steps, 1)
        with torch.no_grad():
            chunk = policy.predict_action_chunk(hist, z=torch.zeros(len(batch), *policy.chunk_shape),
                                                noise=no_noise()).numpy()
        for s, f, c in zip(batch, flat, chunk):
            fut = simulate(cfg.n_dim, s, c, 0.0, 1)[0]
            goal = f[2 * cfg.n_dim: 3 * cfg.n_dim]
            if np.linalg.norm(fut - goal, axis=1).min() < GOAL_DISTANCE and len(seeds) < n_states:
                seeds.append(s), obs.append(f), plans.append(c)
        if tried > 50 * n_states:
            raise RuntimeError(f"only {len(seeds)} of {tried} states have a plan that reaches the first goal")
    env.close()
    return seeds, np.stack(obs), np.stack(plans), tried


def main() -> None:
    ap = parser(__doc__, "runs_dir")
    ap.add_argument("--policy-run", required=True)
    ap.add_argument("--data-episodes", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--wm-steps", type=int, default=10_000)
    ap.add_argument("--states", type=int, default=100)
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--sim-draws", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed0", type=int, default=600_000)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--tag", default="", help="suffix of the result files (keeps another policy's results)")
    a = ap.parse_args()
    cfg, policy, ckpt = load_run(a.policy_run)
    if cfg.env != "particle" or getattr(policy.cfg, "horizon", None) != WM_HORIZON:
        raise SystemExit(f"--policy-run must be a particle diffusion/flow run with horizon {WM_HORIZON}")
    n = cfg.n_dim
    tag = f"{Path(a.policy_run).name}-noise{a.noise:g}-{a.data_episodes}"
    data = Path(a.data_dir) / f"wm-{tag}.zarr"
    if not data.exists():
        print(f"collecting {a.data_episodes} noisy rollouts of {a.policy_run} -> {data}", flush=True)
        print(collect_world_model(data, a.policy_run, a.data_episodes, seed=0, action_noise=a.noise), flush=True)
    run = Path(a.runs_dir) / f"wm-{tag}"
    cmd = ["steerlab", "train", "wm-particle", "--n-dim", str(n), "--dataset", str(data), "--steps", str(a.wm_steps),
           "--out-dir", a.runs_dir, "--run-name", run.name, "--no-progress", "--resume", "--no-eval"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wcfg, wm, wckpt = load_run(run)
    train_summary = json.loads((run / "train_summary.json").read_text())

    seeds, obs0, plans, tried = test_cases(policy, cfg, a.states, a.seed0)
    goals = torch.as_tensor(obs0[:, 2 * n: 3 * n], dtype=torch.float32)
    cond = torch.as_tensor(np.concatenate([obs0, plans.reshape(len(plans), -1)], 1), dtype=torch.float32)[:, None]
    chain = policy_sampler(wm, cond, noise_mode="none", grad="full")
    objective = MissFirstGoal(goals)
    t0 = time.time()
    sims = [simulate(n, s, p, a.noise, a.sim_draws) for s, p in zip(seeds, plans)]  # [B][M, H, N]
    sim_seconds = time.time() - t0
    sim_miss = np.array([(np.linalg.norm(f - goals[i].numpy(), axis=-1).min(1) >= GOAL_DISTANCE).mean()
                         for i, f in enumerate(sims)])
    g = torch.Generator().manual_seed(0)
    z_rand = torch.randn(chain.shape, generator=g)
    bwd = measure_backward_cost(chain.sample_fn, objective, z_rand, repeats=3)
    # calibration: the world model's own miss rate per case (64 plain samples) against the simulator's
    with torch.no_grad():
        wm_miss = np.mean([(objective.hard(chain.sample_fn(torch.randn(chain.shape, generator=g))) >= GOAL_DISTANCE)
                           .numpy() for _ in range(64)], axis=0)
    print(f"{wckpt}: chain NFE {chain.nfe}, backward = {bwd:.2f} forwards; {len(seeds)} cases (of {tried} tried); "
          f"P(miss) simulator {sim_miss.mean():.3f}, world model {wm_miss.mean():.3f}", flush=True)

    def nearest_sim(future: np.ndarray) -> np.ndarray:
        return np.array([np.linalg.norm(sims[i] - future[i], axis=-1).mean(1).min() for i in range(len(future))])

    rows = []

    def record(method, budget, z, nfe, seconds):
        with torch.no_grad():
            fut = chain.sample_fn(z)
        dmin = objective.hard(fut).numpy()
        cdf = chi_cdf(z).numpy()
        plausible = inside_central(cdf)
        found = (dmin >= GOAL_DISTANCE) & plausible
        confirmed = found & (sim_miss > 0)
        near = nearest_sim(fut.numpy())
        k, kc = int(found.sum()), int(confirmed.sum())
        lo, hi = wilson_interval(k, len(found))
        row = {"method": method, "budget_nfe": budget, "nfe_spent": float(nfe), "cases": len(found),
               "found": k, "found_rate": k / len(found), "found_ci95": [lo, hi],
               "confirmed": kc, "confirmed_of_found": kc / k if k else None,
               "plausible_fraction": float(plausible.mean()),
               "nearest_sim_distance_found": float(near[found].mean()) if k else None,
               "nearest_sim_distance_all": float(near.mean()),
               "objective_mean": float(objective(fut).mean()), "search_seconds": seconds}
        rows.append(row)
        print(f"{method:10s} budget {budget:5d}: found {k}/{len(found)} ({k / len(found):.0%}), confirmed by the "
              f"simulator {kc}, nearest-sim distance {row['nearest_sim_distance_all']:.3f}, {seconds:.1f} s", flush=True)

    record("random", chain.nfe, z_rand, chain.nfe, 0.0)
    run_searches(chain, objective, z_rand, a.budgets, bwd, a.lr, record)

    save(f"world_model_stress{a.tag}", {
        "command": command_line(),
        "policy_run": a.policy_run, "policy": dataclasses.asdict(policy.cfg), "policy_checkpoint": str(ckpt), "world_model_checkpoint": str(wckpt), "world_model_run": str(run),
        "world_model": dataclasses.asdict(wcfg.policy), "world_model_train": train_summary,
        "data": str(data), "data_episodes": a.data_episodes, "action_noise": a.noise, "n_dim": n,
        "cases": len(seeds), "states_tried": tried, "sim_draws": a.sim_draws, "sim_seconds": sim_seconds,
        "p_miss_simulator_mean": float(sim_miss.mean()), "p_miss_world_model_mean": float(wm_miss.mean()),
        "cases_simulator_can_miss": int((sim_miss > 0).sum()),
        "chain_nfe": chain.nfe, "backward_cost": bwd, "rows": rows})
    plot(rows, a.budgets, float(sim_miss.mean()), results_path(f"world_model_stress{a.tag}.png"))


def plot(rows, budgets, p_sim, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m, c in (("best-of-N", "tab:blue"), ("CEM", "tab:orange"), ("gradient", "tab:red")):
        rs = [r for r in rows if r["method"] == m]
        x = [r["budget_nfe"] for r in rs]
        axes[0].plot(x, [r["found_rate"] for r in rs], "o-", color=c, label=f"{m}: found")
        axes[0].plot(x, [r["confirmed"] / r["cases"] for r in rs], "s--", color=c, alpha=0.6, label=f"{m}: confirmed")
        axes[1].plot(x, [r["nearest_sim_distance_all"] for r in rs], "o-", color=c, label=m)
    base = [r for r in rows if r["method"] == "random"][0]
    axes[0].axhline(base["found_rate"], color="gray", ls="--", label="random z")
    axes[1].axhline(base["nearest_sim_distance_all"], color="gray", ls="--", label="random z")
    axes[0].set(xscale="log", xlabel="budget (denoiser evaluations per case)", ylabel="fraction of cases",
                title=f"plausible predicted misses (simulator P(miss) {p_sim:.2f})")
    axes[1].set(xscale="log", xlabel="budget (denoiser evaluations per case)",
                ylabel="distance to nearest simulated future", title="how real the found futures are")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
