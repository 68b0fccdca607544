"""Compute to success: training wall time (evaluation excluded) until the policy first reaches 90% success.

    python benchmarks/compute_to_success.py --dims 2 8 --budget-min 30 --eval-every 250 --episodes 50

Trains the IBC-Langevin preset (bfloat16 chains where the CPU has native bf16) with an evaluation every ``--eval-every`` steps on
``--episodes`` fixed-seed episodes, and reads the first evaluation at or above ``--target`` from the run's
metrics.csv. Writes benchmarks/results/compute_to_success.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ibc-particle-langevin")
    ap.add_argument("--extra", nargs="*", default=["--policy.chain-dtype", "auto"])
    ap.add_argument("--dims", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--budget-min", type=float, default=30.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args()
    out = {"command": "python benchmarks/compute_to_success.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if k != "extra"), "target": args.target, "cells": []}
    for n in args.dims:
        name = f"c2s-{args.preset}-{n}d"
        cmd = ["steerlab", "train", args.preset, *args.extra, "--n-dim", str(n), "--max-minutes", str(args.budget_min),
               "--eval-interval", str(args.eval_every), "--eval.episodes", str(args.episodes), "--run-name", name,
               "--out-dir", args.runs_dir, "--no-progress", "--resume", "--no-eval"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        with open(Path(args.runs_dir) / name / "metrics.csv") as f:
            evals = [r for r in csv.DictReader(f) if r.get("eval_success")]
        curve = [(int(r["step"]), float(r["eval_success"])) for r in evals]
        hit = next((r for r in evals if float(r["eval_success"]) >= args.target), None)
        out["cells"].append({
            "n_dim": n, "command": " ".join(cmd), "curve": curve,
            "seconds_to_target": round(float(hit["train_seconds"])) if hit else None,
            "steps_to_target": int(hit["step"]) if hit else None,
        })
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "compute_to_success.json").write_text(json.dumps(out, indent=2))
        print(json.dumps(out["cells"][-1]), flush=True)


if __name__ == "__main__":
    main()
