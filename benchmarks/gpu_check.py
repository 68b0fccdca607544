"""IBC-Langevin (the repo config, preset ``ibc-particle-langevin``: batch 512, 8 counter-examples, K = 100 Langevin
steps) on one device at several particle dimensions N: a wall-clock training budget per N, then an evaluation on
fixed seeds. One row per N in benchmarks/results/gpu_check.json: the device's name, steps, steps/s, training
seconds, success with its 95% Wilson interval and the command.

    bash benchmarks/gpu_check.sh                      # one CUDA GPU: N in 2 8 16 32, 2 min each, 100 episodes
    python benchmarks/gpu_check.py --device cpu --max-minutes 0.05 --episodes 2 --dims 2 --demos 20 --out /tmp/g.json

The default output is the GPU figure, so only a CUDA run may write it; a run on another device needs --out.
The 2,000 demonstrations per N are collected by the trainer when missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import machine_brief, parser, results_path, write_json_atomic

OUT = results_path("gpu_check.json")
PRESET = "ibc-particle-langevin"


def run_cell(n_dim: int, a, runs_dir: Path) -> dict:
    name = f"gpu-check-{a.device}-{n_dim}d"
    cmd = [sys.executable, "-m", "steerlab.cli", "train", PRESET, "--n-dim", str(n_dim), "--device", a.device,
           "--max-minutes", str(a.max_minutes), "--episodes", str(a.demos), "--eval.episodes", str(a.episodes),
           "--out-dir", str(runs_dir), "--run-name", name, "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    run = runs_dir / name
    m = json.loads((run / "metrics.json").read_text())
    tr = m["train"]
    return {"n_dim": n_dim, "steps": tr["steps"], "train_seconds": tr["train_seconds"],
            "steps_per_s": tr["steps"] / max(tr["train_seconds"], 1e-9), "stopped_by_budget": tr["stopped_by_budget"],
            "success_rate": m["success_rate"], "success_ci95": m["success_ci95"], "episodes": m["episodes"],
            "eval_seconds": m["seconds"], "wall_seconds": time.time() - t0, "run_dir": str(run),
            "command": " ".join(["steerlab", *cmd[3:]])}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, "runs_dir")
    ap.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dims", nargs="+", type=int, default=[2, 8, 16, 32])
    ap.add_argument("--max-minutes", type=float, default=2.0, help="training budget per N")
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per N")
    ap.add_argument("--demos", type=int, default=2000, help="oracle demonstrations per N")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/gpu_check.json, for CUDA runs only)")
    a = ap.parse_args(argv)
    from steerlab.hw import device_name, resolve_device

    device = resolve_device(a.device)  # a missing GPU is an error here, before any training
    out = Path(a.out) if a.out else OUT
    if device.type != "cuda" and a.out is None:
        raise SystemExit(f"--device {a.device} runs on {device.type}: {OUT} holds the GPU figure, pass --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {"device": device.type, "device_name": device_name(device), "preset": PRESET, "max_minutes": a.max_minutes,
           "demos": a.demos, "command": " ".join(["python", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])]),
           "machine": machine_brief(), "rows": []}
    t0 = time.time()
    for n in a.dims:
        res["rows"].append({"device_name": res["device_name"], **run_cell(n, a, Path(a.runs_dir))})
        res["seconds"] = time.time() - t0
        write_json_atomic(out, res)  # after every N, so a cut-off run keeps its finished rows
        print(json.dumps(res["rows"][-1]), flush=True)
    print(f"wrote {out} ({res['seconds'] / 60:.1f} min)")
    return res


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
