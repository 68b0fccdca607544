"""Multimodality and noise leverage of each network parameterization, on the particle task's multimodal oracle
(IBC's: each demo visits the two goals in a random order).

    python benchmarks/multimodality.py [--methods diffusion-eps diffusion-x0 flow-velocity flow-x0] [--steps 10000]

For each method it trains ``steerlab train <preset> --multimodal`` (2,000 demos, ``--steps`` steps, one thread;
an existing run is resumed) and measures:
- **closed-loop modes**: over 100 episodes (env seeds 100000...), the share that reached the *second* goal first,
  among episodes that reached either goal, against the same share in the demonstrations;
- **noise leverage** at fixed observations: at the first observation of 50 episodes, 16 chunks sampled from 16
  initial noises; a chunk's mode is the goal its last action is closer to. Reported: the mean share of the
  second-goal mode, the share of observations at which both modes appear among the 16 samples (the noise decides
  the mode there), and the spread (mean per-coordinate std of the 16 chunks' last actions).
Writes benchmarks/results/multimodality.json and .png.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from common import command_line, machine_brief, parser, results_path, save

from steerlab.data.zarr_io import load_episodes
from steerlab.envs.particle import GOAL_DISTANCE
from steerlab.eval.metrics import wilson_interval
from steerlab.eval.rollout import rollout
from steerlab.eval.run import load_run
from steerlab.steer.policy_chain import initial_observations

METHODS = {
    "diffusion-eps": ["diffusion-particle", "--policy.prediction-type", "epsilon"],
    "diffusion-x0": ["diffusion-particle", "--policy.prediction-type", "sample"],
    "flow-velocity": ["flow-particle", "--policy.prediction-type", "velocity"],
    "flow-x0": ["flow-particle", "--policy.prediction-type", "sample"],
}
EVAL_SEED0 = 100_000


def first_goal_order(positions: np.ndarray, goals: np.ndarray) -> int | None:
    """1 if the path came within the success tolerance of the second goal before the first, 0 if the first goal
    came first, None if it reached neither. ``positions [T, N]``, ``goals [2, N]``."""
    hit = np.linalg.norm(positions[:, None, :] - goals[None], axis=-1) < GOAL_DISTANCE  # [T, 2]
    t = [int(np.argmax(hit[:, j])) if hit[:, j].any() else None for j in range(2)]
    if t[0] is None and t[1] is None:
        return None
    if t[0] is None or (t[1] is not None and t[1] < t[0]):
        return 1
    return 0


def demo_share(path: Path, n_dim: int) -> dict:
    """The share of demonstrations that visit the second goal first."""
    data = load_episodes(str(path), keys=["obs"])
    obs = data.data["obs"]
    orders = []
    for sl in data.episode_slices():
        o = obs[sl]
        pos, goals = o[:, :n_dim], np.stack([o[0, n_dim:2 * n_dim], o[0, 2 * n_dim:3 * n_dim]])
        orders.append(first_goal_order(pos, goals))
    known = [x for x in orders if x is not None]
    return {"episodes": len(orders), "reached_a_goal": len(known), "second_first": float(np.mean(known))}


def train(method: str, n_dim: int, steps: int, runs: Path) -> Path:
    name = f"mm-{method}-{n_dim}d-{steps // 1000}k"
    cmd = ["steerlab", "train", *METHODS[method], "--multimodal", "--n-dim", str(n_dim), "--steps", str(steps),
           "--threads", "1", "--run-name", name, "--out-dir", str(runs), "--eval.episodes", "100", "--no-progress",
           "--resume"]
    if not (runs / name / "metrics.json").exists():
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return runs / name


@torch.no_grad()
def measure(run: Path, episodes: int, n_obs: int, samples: int) -> dict:
    cfg, policy, ckpt = load_run(run)
    seeds = [EVAL_SEED0 + i for i in range(episodes)]
    eps = rollout(policy, cfg.env, cfg.n_dim, seeds, generator=torch.Generator().manual_seed(0))
    orders = [first_goal_order(e["positions"], e["goals"]) for e in eps]
    known = [x for x in orders if x is not None]
    k = int(sum(known))
    obs, dicts = initial_observations(cfg, policy, seeds[:n_obs])
    rep = obs.repeat_interleave(samples, 0)
    chunks = policy.predict_action_chunk(rep, torch.Generator().manual_seed(1)).view(n_obs, samples, *policy.chunk_shape)
    last = chunks[:, :, -1].numpy()  # [n_obs, samples, N]
    g1 = np.stack([d["pos_first_goal"] for d in dicts])[:, None]
    g2 = np.stack([d["pos_second_goal"] for d in dicts])[:, None]
    mode = (np.linalg.norm(last - g2, axis=-1) < np.linalg.norm(last - g1, axis=-1)).astype(float)  # [n_obs, samples]
    share = mode.mean(1)
    return {
        "run_dir": str(run), "checkpoint": str(ckpt), "policy": cfg.policy.kind,
        "prediction_type": cfg.policy.prediction_type, "success_rate": float(np.mean([e["success"] for e in eps])),
        "closed_loop": {"episodes": len(eps), "reached_a_goal": len(known), "second_first": k / max(len(known), 1),
                        "ci95": list(wilson_interval(k, max(len(known), 1)))},
        "fixed_obs": {"observations": n_obs, "samples": samples, "second_mode_share": float(share.mean()),
                      "both_modes_share": float(np.mean((share > 0) & (share < 1))),
                      "spread": float(last.std(1).mean())},
    }


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    names = [r["method"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    cl = [r["closed_loop"]["second_first"] for r in rows]
    lo = [r["closed_loop"]["second_first"] - r["closed_loop"]["ci95"][0] for r in rows]
    hi = [r["closed_loop"]["ci95"][1] - r["closed_loop"]["second_first"] for r in rows]
    axes[0].bar(x, cl, yerr=[lo, hi], capsize=3, color="tab:blue", label="policy, closed loop (95% CI)")
    axes[0].axhline(res["demos"]["second_first"], color="k", ls="--", label="demonstrations")
    axes[0].set(xticks=x, ylabel="share visiting the second goal first", ylim=(0, 1),
                title=f"modes in {rows[0]['closed_loop']['episodes']} episodes")
    axes[0].set_xticklabels(names, fontsize=8)
    axes[0].legend(fontsize=8)
    both = [r["fixed_obs"]["both_modes_share"] for r in rows]
    axes[1].bar(x, both, color="tab:orange")
    axes[1].set(xticks=x, ylim=(0, 1), ylabel="observations with both modes",
                title=f"{rows[0]['fixed_obs']['samples']} noises at each of {rows[0]['fixed_obs']['observations']} "
                      "observations")
    axes[1].set_xticklabels(names, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


def main() -> None:
    ap = parser(__doc__, "runs_dir")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--n-dim", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--observations", type=int, default=50)
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    rows = []
    for m in a.methods:
        run = train(m, a.n_dim, a.steps, Path(a.runs_dir))
        rows.append({"method": m, **measure(run, a.episodes, a.observations, a.samples)})
        r = rows[-1]
        print(f"{m}: success {r['success_rate']:.0%}, second goal first {r['closed_loop']['second_first']:.0%} of "
              f"{r['closed_loop']['reached_a_goal']}; both modes at {r['fixed_obs']['both_modes_share']:.0%} of the "
              f"observations, spread {r['fixed_obs']['spread']:.3f}", flush=True)
    cfg, _, _ = load_run(rows[0]["run_dir"])
    res = {"command": command_line(), "n_dim": a.n_dim,
           "steps": a.steps, "demos": demo_share(cfg.dataset_path(), a.n_dim), "rows": rows,
           "machine": machine_brief(), "seconds": time.time() - t0}
    save("multimodality", res)
    plot(res, results_path("multimodality.png"))


if __name__ == "__main__":
    main()
