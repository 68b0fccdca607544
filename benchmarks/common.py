"""Helpers shared by the benchmark scripts: their argument parser, results paths, timing side by side, JSON results,
environment facts.

The scripts run as ``python benchmarks/<script>.py``, so this directory is first on ``sys.path`` and they import
this module as ``common``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from steerlab.steer.stress import inside_central, run_searches  # noqa: F401  (shared by the scripts)

RESULTS = Path(__file__).parent / "results"

# flags that several scripts define identically: name -> (flag, add_argument keywords)
SHARED_FLAGS = {
    "run_dir": ("--run-dir", {"required": True}),
    "runs_dir": ("--runs-dir", {"default": "runs"}),
    "threads": ("--threads", {"type": int, "default": None}),
}


def parser(description: str | None, *shared: str) -> argparse.ArgumentParser:
    """A benchmark script's argument parser: ``description`` (the script's docstring) shown as written, and the
    ``shared`` flags of :data:`SHARED_FLAGS` (e.g. ``"run_dir"``, ``"threads"``) added first."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in shared:
        flag, kw = SHARED_FLAGS[name]
        ap.add_argument(flag, **kw)
    return ap


def command_line() -> str:
    """The invocation recorded in a results file: ``python benchmarks/<script>.py <its arguments>``."""
    return f"python benchmarks/{Path(sys.argv[0]).name} " + shlex.join(sys.argv[1:])


def results_path(name: str) -> Path:
    """``benchmarks/results/<name>`` (the directory created if missing)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / name


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == "model name":
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    from steerlab.hw import native_bf16

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "native_bf16": native_bf16(),
        "git": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def machine_brief() -> dict:
    """The machine facts a result cell records: CPU, native bf16, torch threads, commit, date."""
    return {k: v for k, v in machine().items() if k in ("cpu", "native_bf16", "threads", "git", "date")}


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON through a temporary file and a rename (several benchmark processes may write the
    same results file side by side)."""
    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def interleaved(fns: dict, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, the variants run in turn (A B C A B C …) so that
    machine noise hits them alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    print(f"wrote {path}")
    return path


def rate(flags) -> dict:
    """A count of True among ``flags`` as ``{count, n, rate, ci95}`` (95% Wilson interval)."""
    from steerlab.eval.metrics import wilson_interval

    k, n = int(sum(bool(f) for f in flags)), len(flags)
    return {"count": k, "n": n, "rate": k / max(n, 1), "ci95": list(wilson_interval(k, n))}


def load_policy_run(a):
    """The parsed args' ``--threads`` (if set) applied, then ``(cfg, policy, checkpoint)`` of ``--run-dir``."""
    from steerlab.eval.run import load_run

    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    return load_run(a.run_dir)


def switched_route(episodes, seeds, route_id) -> np.ndarray:
    """Per nav episode on a two-route map: whether its closed-loop path overlaps the other route (``1 - route_id``)
    more than the original one (:func:`~steerlab.envs.nav2d.planner.route_overlap`)."""
    from steerlab.envs.nav2d import Nav2DEnv, route_overlap

    flags = []
    for e, s, orig in zip(episodes, seeds, route_id):
        env = Nav2DEnv()
        env.reset(seed=int(s))
        p = e["path"]
        flags.append(route_overlap(p, np.asarray(env.routes[1 - orig])) > route_overlap(p, np.asarray(env.routes[orig])))
        env.close()
    return np.array(flags)


def search_intent(method: str, sample_fn, objective, z_first: torch.Tensor, budget: int, nfe: int,
                  backward_cost: float, generator: torch.Generator, lr: float = 0.1, screen: float = 0.5):
    """One maximizing search of the nav benchmarks over ``z_first``'s space at ``budget`` denoiser evaluations
    (``nfe`` per sample): ``"best-of-N z2"`` (``budget // nfe`` draws, ``z_first`` the first), ``"gradient z2"``
    / ``"gradient z2+z0"`` (Adam from ``z_first``, sqrt(d)-shell projection, the backward pass counted at
    ``backward_cost`` forwards), or ``"screen+gradient z2"``: the best of ``screen * budget // nfe`` draws, then
    Adam from it (projected onto the shell) with the rest of the budget (``screened_optimize``). Returns
    the search result (``.z``, ``.nfe``, the evaluations spent)."""
    from steerlab.steer.noise_opt import NoiseOptConfig, optimize_noise, screened_optimize
    from steerlab.steer.search import best_of_n

    ocfg = NoiseOptConfig(direction="maximize", lr=lr, steps=10_000, project_shell=True, budget_nfe=budget)
    if method == "best-of-N z2":
        return best_of_n(sample_fn, objective, tuple(z_first.shape), max(1, budget // nfe), direction="maximize",
                         nfe_per_sample=nfe, generator=generator, z_first=z_first)
    if method == "screen+gradient z2":
        if not 0.0 < screen < 1.0:
            raise ValueError(f"screen is the share of the budget spent on draws, in (0, 1); got {screen!r}")
        return screened_optimize(sample_fn, objective, z_first, ocfg, screen_draws=max(1, int(screen * budget) // nfe),
                                 nfe_per_sample=nfe, backward_cost=backward_cost, generator=generator)
    if not method.startswith("gradient"):
        raise ValueError(f"unknown search {method!r}")
    return optimize_noise(sample_fn, objective, z_first, ocfg, nfe_per_sample=nfe, backward_cost=backward_cost,
                          progress=False, log=None)
