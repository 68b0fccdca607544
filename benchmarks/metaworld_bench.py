"""MetaWorld from state: success per (task, method, demonstrations), each trained method under a wall-clock budget,
evaluated on 50 episodes of fixed held-out env seeds (100000...; the demonstrations use 0..demos-1).

    python benchmarks/metaworld_bench.py --methods expert                       # the scripted experts alone
    python benchmarks/metaworld_bench.py --tasks push-v3 --methods diffusion mse --demos 10 50 --budget-min 12
    python benchmarks/metaworld_bench.py --plot-only

Each finished cell is written at once to benchmarks/results/metaworld.json under ``<task>/<method>/<demos>``
(the benchmark can be run in parts; cells already present are skipped unless --force), and the figure
benchmarks/results/metaworld.png (one panel per task) is redrawn from all cells present. Demonstrations are collected
once per (task, demos) with ``steerlab collect metaworld`` into the path a run reads by default
(data/metaworld-<task>-<demos>.zarr); the collector's summary is kept beside it (``.collect.json``).

Each cell records its throughput: env steps/s (the expert's: its evaluation; a trained method's: its evaluation,
policy included, and the collection of its demonstrations), training steps/s and evaluation episodes/s.

Methods map to presets (``steerlab presets``); ``expert`` is MetaWorld's scripted expert (no training, demos 0):
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_brief, write_json_atomic  # noqa: E402

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "metaworld.json"
TASKS = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "button-press-topdown-v3"]
EVAL_SEED0 = 100_000  # steerlab.envs.metaworld.EVAL_SEED0, the presets' eval.seed0

METHODS: dict[str, list[str]] = {
    "expert": [],
    "mse": ["mse-metaworld"],
    "diffusion": ["diffusion-metaworld"],
    "flow": ["flow-metaworld"],
    "ibc-dfo": ["ibc-metaworld-dfo"],
    "ibc-langevin": ["ibc-metaworld-langevin"],
}
__doc__ += "\n".join(f"    {k:14s} steerlab train {' '.join(v)} --env metaworld/<task>" for k, v in METHODS.items() if v)


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"cells": {}}


def ensure_demos(task: str, demos: int) -> dict:
    """Collect ``demos`` expert episodes of ``task`` into the default dataset path unless present; the collector's
    summary (steps, seconds, success rate) saved beside it at collection."""
    path = Path(f"data/metaworld-{task}-{demos}.zarr")
    info = path.with_suffix(".collect.json")
    if not path.exists():
        cmd = ["steerlab", "collect", "metaworld", "--task", task, "--episodes", str(demos), "--out", str(path)]
        print("$", " ".join(cmd), flush=True)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        info.write_text(out[out.index("{"):])
    return json.loads(info.read_text()) if info.exists() else {}


def expert_cell(task: str, episodes: int) -> dict:
    from steerlab.eval.metaworld import eval_seeds, evaluate_metaworld, expert_act_fn

    t0 = time.time()
    res = evaluate_metaworld(expert_act_fn(task), task, eval_seeds(episodes, EVAL_SEED0))
    steps = sum(e["length"] for e in res["episodes"])
    return {
        "success_rate": res["success_rate"], "success_ci95": res["success_ci95"], "episodes": res["n_episodes"],
        "mean_first_success_step": res["mean_first_success_step"], "mean_length": res["mean_length"],
        "env_steps_per_s": steps / res["seconds"], "train_steps_per_s": None,
        "eval_episodes_per_s": res["episodes_per_s"], "eval_seconds": res["seconds"], "train_steps": 0,
        "train_seconds": 0.0, "wall_seconds": time.time() - t0,
    }


def trained_cell(task: str, method: str, demos: int, budget_min: float, episodes: int, seed: int,
                 runs_dir: Path, threads: int | None = None) -> dict:
    collected = ensure_demos(task, demos)
    name = f"mw-{method}-{task}-{demos}-s{seed}"
    cmd = ["steerlab", "train", *METHODS[method], "--env", f"metaworld/{task}", "--episodes", str(demos),
           "--max-minutes", str(budget_min), "--run-name", name, "--out-dir", str(runs_dir), "--seed", str(seed),
           "--eval.episodes", str(episodes), "--eval.seed0", str(EVAL_SEED0), "--no-progress", "--resume",
           *(["--threads", str(threads)] if threads else [])]
    t0 = time.time()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    m = json.loads((runs_dir / name / "metrics.json").read_text())
    tr = m.get("train", {})
    return {
        "success_rate": m["success_rate"], "success_ci95": m["success_ci95"], "episodes": m["episodes"],
        "mean_first_success_step": m["mean_first_success_step"], "mean_length": m["mean_length"],
        "env_steps_per_s": m["mean_length"] * m["episodes"] / m["seconds"],
        "collect_env_steps_per_s": (collected["steps"] / collected["seconds"]) if collected else None,
        "demos_written": collected.get("episodes_written"),
        "train_steps": tr.get("steps"), "train_seconds": tr.get("train_seconds"),
        "train_steps_per_s": tr["steps"] / tr["train_seconds"] if tr.get("train_seconds") else None,
        "eval_episodes_per_s": m["episodes_per_s"], "eval_seconds": m["seconds"], "wall_seconds": time.time() - t0,
        "run_dir": str(runs_dir / name), "command": " ".join(cmd),
    }


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(data["cells"].values())
    tasks = [t for t in TASKS if any(c["task"] == t for c in cells)]
    tasks += sorted({c["task"] for c in cells} - set(tasks))
    if not tasks:
        return
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks):
        tc = [c for c in cells if c["task"] == task]
        for i, method in enumerate(METHODS):
            mc = sorted((c for c in tc if c["method"] == method), key=lambda c: c["demos"])
            if not mc:
                continue
            y = [c["success_rate"] for c in mc]
            lo = [max(0.0, c["success_rate"] - c["success_ci95"][0]) for c in mc]
            hi = [max(0.0, c["success_ci95"][1] - c["success_rate"]) for c in mc]
            if method == "expert":  # no demonstrations: a level across the panel, its CI shaded
                c = mc[-1]
                ax.axhline(c["success_rate"], color="k", ls="--", lw=1,
                           label=f"scripted expert {c['success_rate']:.0%}")
                ax.axhspan(*c["success_ci95"], color="k", alpha=0.08)
                continue
            ax.errorbar([c["demos"] for c in mc], y, yerr=[lo, hi], marker="o", capsize=3, color=f"C{i}",
                        label=f"{method} ({'/'.join(f'{b:g}' for b in sorted({c['budget_min'] for c in mc}))} min)")
        ax.set_title(task, fontsize=10)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("demonstrations")
        ax.set_ylabel(f"success ({tc[0]['episodes']} episodes, 95% Wilson)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("MetaWorld from state: held-out env seeds 100000..., one panel per task", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "metaworld.png", dpi=90)
    plt.close(fig)
    print(f"wrote {RESULTS / 'metaworld.png'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--demos", nargs="+", type=int, default=[10, 50])
    ap.add_argument("--budget-min", type=float, default=12.0, help="training budget of each trained cell (minutes)")
    ap.add_argument("--episodes", type=int, default=50, help="evaluation episodes (env seeds 100000...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of each training run (default: torch's)")
    ap.add_argument("--force", action="store_true", help="re-run cells already in the results file")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    from steerlab.envs.metaworld import check_task

    for t in args.tasks:
        check_task(t)
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = load()
    if not args.plot_only:
        for task in args.tasks:
            for method in args.methods:
                for demos in ([0] if method == "expert" else args.demos):
                    key = f"{task}/{method}/{demos}"
                    if key in data["cells"] and not args.force:
                        print(f"skip {key}: already measured")
                        continue
                    if method == "expert":
                        cell = expert_cell(task, args.episodes)
                    else:
                        cell = trained_cell(task, method, demos, args.budget_min, args.episodes, args.seed,
                                            Path(args.runs_dir), args.threads)
                    bench = " ".join(["python", "benchmarks/metaworld_bench.py", *sys.argv[1:]])
                    cell = {"task": task, "method": method, "demos": demos, "command": bench, "bench_command": bench,
                            "budget_min": None if method == "expert" else args.budget_min, "seed": args.seed,
                            **cell, "machine": machine_brief()}
                    data = {**load(), "cells": {**load()["cells"], key: cell}}  # parts may run side by side
                    write_json_atomic(OUT, data)
                    print(json.dumps({k: v for k, v in cell.items() if k != "machine"}), flush=True)
                    plot(data)
    plot(data)


if __name__ == "__main__":
    sys.exit(main())
