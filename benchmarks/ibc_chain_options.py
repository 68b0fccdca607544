"""IBC's training chains on the CPU: the budget preset's full chains against persistent chains, at equal wall time.

    python benchmarks/ibc_chain_options.py --minutes 20 --dims 2 8 --threads 1

For each dimension the methods (default: ``ibc-langevin``, the budget preset, every counter-example a 100-step
chain from uniform; ``ibc-langevin-persistent``, the same preset whose rows continue their stored chains for 10
steps, a row not visited yet those of the nearest visited row of its episode) are trained side by side -- at the same time, one process each, so that whatever else loads the machine
loads them alike -- for the same wall-clock budget, 2,000 oracle demos, and evaluated on ``--episodes``
fixed-seed episodes by their own end-of-training evaluation (``particle_sweep.run_cell``: ``steerlab train ...
--max-minutes``), each on ``--threads`` torch threads: give them a core each (two methods on a 2-core machine).
``--one-at-a-time`` trains them in turn instead (a one-core machine). ``--methods ibc-langevin-repo`` adds the
repo config as written (batch 512), ``ibc-langevin-persistent-uniform`` the persistent preset whose rows not visited
yet start uniform with the full chain (``persistent_init='uniform'``).

Per cell: training steps and steps/s; mean Langevin steps per counter-example chain (the persistent run's
``chain_steps`` metric averaged over all its steps; K for full chains); chain steps/s, the counter-example chains'
Langevin steps per training second (batch x Langevin counter-examples x mean chain steps x steps / seconds); success
with its 95% Wilson interval. Runs go to ``<runs-dir>/<minutes>min/``: a run already there is resumed (``--resume``)
or, if trained and evaluated, read back; delete it to measure again. Cells accumulate in
benchmarks/results/ibc_chain_options.json, keyed method/N/seed/minutes.
"""

from __future__ import annotations

import csv
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import RESULTS, command_line, parser, save
from particle_sweep import METHODS, run_cell

NAME = "ibc_chain_options"


def chain_cost(run: Path) -> dict:
    """Training steps, seconds and counter-example chain steps of a finished run, from its config, summary,
    metrics.csv and last checkpoint."""
    from steerlab.ebm.policy import counter_example_split
    from steerlab.train.checkpoint import latest_checkpoint, load_trainer_state
    from steerlab.train.config import TrainConfig, from_dict

    cfg = from_dict(TrainConfig, json.loads((run / "config.json").read_text()))
    summary = json.loads((run / "train_summary.json").read_text())
    pc, steps, seconds = cfg.policy, summary["steps"], summary["train_seconds"]
    chains = cfg.batch_size * counter_example_split(pc.num_counter_examples, pc.fraction_langevin_samples)[1]
    if pc.persistent_chains:
        # metrics.csv rows average chain_steps over their log interval; the steps after the last row are summed in
        # the last checkpoint's log accumulator
        with open(run / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("chain_steps")]
        spans = [int(r["step"]) - int(p["step"]) for p, r in zip([{"step": 0}] + rows, rows)]
        total = sum(w * float(r["chain_steps"]) for w, r in zip(spans, rows))
        total += load_trainer_state(latest_checkpoint(run)).get("log_acc", {}).get("chain_steps", 0.0)
    else:
        total = pc.langevin.num_steps * max(steps - pc.uniform_warmup_steps, 0)
    mean = total / max(steps, 1)
    return {"train_steps": steps, "train_seconds": seconds, "steps_per_s": steps / seconds,
            "chains_per_step": chains, "mean_chain_steps": mean, "chain_steps_per_s": chains * total / seconds,
            "persistent_steps": pc.persistent_steps if pc.persistent_chains else None,
            "full_chain_steps": pc.langevin.num_steps}


def ensure_datasets(dims: list[int], methods: list[str]) -> None:
    """Collect the demos of each dimension first, so that runs started together do not both collect them."""
    from steerlab.cli import resolve_train_config
    from steerlab.tasks import get_task

    for n in dims:
        for m in methods:
            preset, *overrides = METHODS[m]
            cfg = resolve_train_config(preset, [*overrides, "--n-dim", str(n)])
            get_task(cfg.env).ensure_dataset(cfg, cfg.dataset_path(), progress=False)


def main():
    ap = parser(__doc__, "threads")
    ap.set_defaults(threads=1)
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget per run")
    ap.add_argument("--dims", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--methods", nargs="+", default=["ibc-langevin", "ibc-langevin-persistent"], choices=[m for m in METHODS if m.startswith("ibc-langevin")])
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs-dir", default="runs/ibc-chain-options")
    ap.add_argument("--one-at-a-time", action="store_true", help="train the methods in turn, not side by side")
    args = ap.parse_args()
    out = RESULTS / f"{NAME}.json"
    cells = json.loads(out.read_text())["cells"] if out.exists() else {}
    runs_dir = Path(args.runs_dir) / f"{args.minutes:g}min"
    ensure_datasets(args.dims, args.methods)
    side_by_side = not args.one_at_a_time and len(args.methods) > 1

    for n in args.dims:
        def cell(method: str) -> dict:
            c = run_cell(method, n, args.minutes, args.episodes, args.seed, runs_dir, args.threads)
            return {**c, **chain_cost(Path(c["run_dir"])), "side_by_side": side_by_side, "bench_command": command_line()}

        with ThreadPoolExecutor(len(args.methods) if side_by_side else 1) as pool:
            for m, c in zip(args.methods, pool.map(cell, args.methods)):
                cells[f"{m}/{n}/{args.seed}/{args.minutes:g}"] = c
                print(json.dumps(c), flush=True)
        save(NAME, {"command": command_line(), "cells": cells})


if __name__ == "__main__":
    sys.exit(main())
