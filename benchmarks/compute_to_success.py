"""Compute to success: training wall time (evaluation excluded) until a policy first reaches 90% success.

    python benchmarks/compute_to_success.py --presets flow-particle ibc-particle-langevin-budget --dims 2 8 \\
        --budget-min 20 --eval-every 2000 --episodes 50

Trains each preset at each dimension with an evaluation every ``--eval-every`` steps on ``--episodes``
fixed-seed episodes (evaluation time does not count as training time: the run logs ``train_seconds`` with
each evaluation), and reads the first evaluation at or above ``--target`` from the run's metrics.csv.
Writes benchmarks/results/compute_to_success.json (cells of earlier invocations are kept, keyed by
preset and dimension).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from common import machine_brief, parser, results_path, write_json_atomic

OUT = results_path("compute_to_success.json")


def save_cell(key: str, cell: dict) -> None:
    """Merge one cell into the results file (re-read just before writing, written atomically: two invocations
    may run side by side, one per core)."""
    old = json.loads(OUT.read_text()).get("cells") if OUT.exists() else None
    cells = old if isinstance(old, dict) else {}  # cells of earlier invocations, keyed preset/N
    cells[key] = cell
    write_json_atomic(OUT, {"cells": cells})


def main():
    ap = parser(__doc__, "runs_dir", "threads")
    ap.add_argument("--presets", nargs="+", default=["flow-particle", "ibc-particle-langevin-budget"])
    ap.add_argument("--dims", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--steps", type=int, default=None,
                    help="train this many steps instead of the preset's (the learning-rate schedule follows); the "
                         "run name gets -<steps>")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="steerlab train --device")
    args = ap.parse_args()
    for preset in args.presets:
        for n in args.dims:
            name = f"c2s-{preset}-{n}d" + (f"-{args.steps}" if args.steps else "")
            cmd = ["steerlab", "train", preset, "--n-dim", str(n), "--max-minutes", str(args.budget_min),
                   *(["--steps", str(args.steps)] if args.steps else []),
                   "--eval-interval", str(args.eval_every), "--eval.episodes", str(args.episodes), "--run-name", name,
                   "--out-dir", args.runs_dir, "--no-progress", "--resume"]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--device", args.device]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            run = Path(args.runs_dir) / name
            with open(run / "metrics.csv") as f:
                evals = [r for r in csv.DictReader(f) if r.get("eval_success")]
            curve = [(int(r["step"]), round(float(r["train_seconds"])), float(r["eval_success"])) for r in evals]
            final = json.loads((run / "metrics.json").read_text())  # the end-of-training evaluation
            summary = json.loads((run / "train_summary.json").read_text())
            curve.append((summary["steps"], round(summary["train_seconds"]), final["success_rate"]))
            hit = next((c for c in curve if c[2] >= args.target), None)
            here = machine_brief()
            cell = {
                "preset": preset, "n_dim": n, "steps": args.steps, "command": " ".join(cmd), "budget_min": args.budget_min, "target": args.target,
                "episodes": args.episodes, "curve": curve, "seconds_to_target": hit[1] if hit else None,
                "steps_to_target": hit[0] if hit else None, "threads": args.threads or here["threads"],
                "machine": here,
            }
            save_cell(f"{preset}/{n}" + (f"/{args.steps}" if args.steps else ""), cell)
            print(json.dumps(cell), flush=True)


if __name__ == "__main__":
    main()
