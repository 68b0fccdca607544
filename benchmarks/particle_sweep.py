"""Particle N-D sweep (IBC paper Fig. 6): success against dimension for each method, 2,000 oracle demos per
N, a wall-clock training budget per (method, N), evaluation on 100 episodes with fixed seeds.

    python benchmarks/particle_sweep.py --methods ibc-langevin --dims 2 8 --budget-min 20
    python benchmarks/particle_sweep.py --plot-only

Each finished (method, N) cell is written at once to benchmarks/results/particle_sweep.json (the sweep can
be run in parts; cells already present are skipped unless --force, which keeps the earlier cell under
``superseded``), and the plot
benchmarks/results/particle_sweep.png is redrawn from all cells present.

Methods map to presets (``steerlab presets``) and overrides:
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine_brief, parser, results_path, write_json_atomic

OUT = results_path("particle_sweep.json")

METHODS: dict[str, list[str]] = {
    # IBC-Langevin sized for the budget: the repo config with batch 128 and bf16 chains where the CPU has native bf16
    "ibc-langevin": ["ibc-particle-langevin-budget"],
    # the repo's config as written (100-step training chains), bf16 chains where the CPU has native bf16
    "ibc-langevin-repo": ["ibc-particle-langevin", "--policy.chain-dtype", "auto"],
    # the budget preset with persistent training chains (10-step continuations of each row's stored chains, or of the
    # nearest stored row's in the episode for a row not stored yet)
    "ibc-langevin-persistent": ["ibc-particle-langevin-persistent"],
    # the same, rows not stored yet starting uniform with the full chain
    "ibc-langevin-persistent-uniform": ["ibc-particle-langevin-persistent", "--policy.persistent-init", "uniform"],
    "ibc-dfo": ["ibc-particle-dfo"],
    "ibc-ardfo": ["ibc-particle-ardfo"],
    "ibc-ardfo-made": ["ibc-particle-ardfo-made"],
    "diffusion": ["diffusion-particle"],
    "flow": ["flow-particle"],
    # each network parameterization named explicitly, whatever the preset's default
    "diffusion-eps": ["diffusion-particle", "--policy.prediction-type", "epsilon"],
    "diffusion-x0": ["diffusion-particle", "--policy.prediction-type", "sample"],
    "flow-velocity": ["flow-particle", "--policy.prediction-type", "velocity"],
    "flow-x0": ["flow-particle", "--policy.prediction-type", "sample"],
    "mse": ["mse-particle"],
    "nearest": ["nearest-particle"],
}
__doc__ += "\n".join(f"    {k:14s} steerlab train {' '.join(v)}" for k, v in METHODS.items())


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"cells": {}}


def _finished(run: Path) -> bool:
    """A run whose metrics.json evaluates its latest checkpoint (e.g. a cell interrupted after training)."""
    from steerlab.train.checkpoint import list_checkpoints

    m, ck = run / "metrics.json", list_checkpoints(run)
    return m.exists() and bool(ck) and json.loads(m.read_text()).get("checkpoint", "").endswith(ck[-1].name)


def run_cell(method: str, n_dim: int, budget_min: float, episodes: int, seed: int, runs_dir: Path,
             threads: int | None = None, device: str = "cpu") -> dict:
    name = f"sweep-{method}-{n_dim}d-s{seed}"
    cmd = ["steerlab", "train", *METHODS[method], "--n-dim", str(n_dim), "--max-minutes", str(budget_min),
           "--run-name", name, "--out-dir", str(runs_dir), "--seed", str(seed), "--eval.episodes", str(episodes),
           "--no-progress", "--resume", "--device", device] + (["--threads", str(threads)] if threads else [])
    run = runs_dir / name
    t0 = time.time()
    ran_here = not _finished(run)
    if not ran_here:
        print(f"{run}: already trained and evaluated on its latest checkpoint; reading its metrics.json")
    else:
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    here = machine_brief()
    m = json.loads((run / "metrics.json").read_text())
    return {
        "method": method, "n_dim": n_dim, "seed": seed, "budget_min": budget_min, "command": " ".join(cmd),
        "success_rate": m["success_rate"], "success_ci95": m["success_ci95"], "episodes": m["episodes"],
        "train_steps": m.get("train", {}).get("steps"), "train_seconds": m.get("train", {}).get("train_seconds"),
        "eval_seconds": m["seconds"], "wall_seconds": time.time() - t0, "run_dir": str(run),
        # the machine and threads of a run trained by an earlier invocation are not known here
        "threads": (threads or here["threads"]) if ran_here else None, "machine": here if ran_here else None,
        "device": device,
    }


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(data["cells"].values())
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for method in METHODS:
        pts = sorted((c["n_dim"], c["success_rate"], *c["success_ci95"]) for c in cells if c["method"] == method)
        if not pts:
            continue
        x, y, lo, hi = map(list, zip(*pts))
        mc = [c for c in cells if c["method"] == method]
        budget = "/".join(f"{b:g}" for b in sorted({c["budget_min"] for c in mc}))
        threads = "/".join(sorted({str(c.get("threads") or "default") for c in mc}))
        ax.errorbar(x, y, yerr=[[max(0.0, a - b) for a, b in zip(y, lo)], [max(0.0, b - a) for a, b in zip(y, hi)]], marker="o",
                    capsize=3, label=f"{method} ({budget} min, {threads} thr)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("particle dimension N")
    ax.set_ylabel("success rate (100 episodes, 95% Wilson)")
    ax.set_title("N-D particle, 2,000 demos, wall-clock training budget per cell (2-core CPU)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(results_path("particle_sweep.png"), dpi=90)
    print(f"wrote {results_path('particle_sweep.png')}")


def main():
    ap = parser(__doc__, "runs_dir")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--dims", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per training run (e.g. 1 to run two sweep parts side by side on 2 cores)")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="steerlab train --device")
    ap.add_argument("--force", action="store_true", help="re-run cells already in the results file")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    data = load()
    if not args.plot_only:
        for n in args.dims:
            for method in args.methods:
                key = f"{method}/{n}/{args.seed}/{args.budget_min}"
                if key in data["cells"] and not args.force:
                    print(f"skip {key}: already measured")
                    continue
                cell = run_cell(method, n, args.budget_min, args.episodes, args.seed, Path(args.runs_dir),
                                args.threads, args.device)
                data = load()
                if key in data["cells"]:  # a re-measured cell: the earlier one is kept, listed as superseded
                    data.setdefault("superseded", []).append(data["cells"][key])
                data["cells"][key] = cell
                write_json_atomic(OUT, data)  # two sweep parts may run side by side
                print(json.dumps(data["cells"][key]), flush=True)
                plot(data)
    plot(data)


if __name__ == "__main__":
    sys.exit(main())
