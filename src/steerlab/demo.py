"""``steerlab demo``: the product in a few minutes on a laptop-class CPU.

1. collect 2,000 oracle demonstrations of the 2-D particle task (IBC's);
2. train the ``demo`` preset, a diffusion policy whose network predicts the clean chunk (BENCHMARKS.md section 1);
3. evaluate it in closed loop on fixed seeds;
4. stress-test it: search the initial noise of each episode for a chunk that misses the first goal (gradient
   ascent through the sampler against best-of-N at the same number of denoiser evaluations), then roll the policy
   out with the found noise held fixed and count the real failures, and the share of those noises inside the
   prior's central 99%;
5. write ``<run>/demo.md``: what was expected, what was measured, what to run next.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerlab.eval.run import evaluate_run, load_run
from steerlab.presets import get_preset
from steerlab.steer.noise_opt import measure_backward_cost
from steerlab.steer.objectives import EndDistance
from steerlab.steer.policy_chain import initial_observations, policy_sampler
from steerlab.steer.stress import StressRow, evaluate_noises, search_noises
from steerlab.train.loop import train
from steerlab.train.rundir import atomic_write_text


@dataclass(frozen=True)
class DemoArgs:
    """The embedded default job: collect 2-D particle demos, train a diffusion policy (clean-chunk prediction) for
    up to a few minutes, evaluate it on fixed seeds, stress-test it by optimizing its noise toward failure (verified
    in closed loop), and write <run>/demo.md."""

    n_dim: int = 2
    """particle dimension"""
    demos: int = 2000
    """oracle demonstrations to collect (into data/particle-<N>d-<demos>.zarr, reused when it exists)"""
    steps: int = 10_000
    """training steps (the learning-rate schedule spans them)"""
    max_minutes: float = 3.0
    """wall-clock cap on training; the run stops early and says so if the machine is slower than expected"""
    episodes: int = 50
    """evaluation episodes"""
    stress_episodes: int = 50
    """episodes of the stress test (seeds disjoint from the evaluation's)"""
    budget_nfe: int = 300
    """denoiser evaluations per episode for each search of the stress test"""
    out_dir: str = "runs"
    run_name: str = "demo"
    """run directory name (an existing demo run is resumed)"""


STRESS_SEED0 = 300_000


def stress_test(run_dir: Path, episodes: int, budget: int, progress: bool = True) -> dict:
    """The demo's stress test of the run's policy (see the module docstring); returns a JSON-able dict."""
    cfg, policy, ckpt = load_run(run_dir)
    seeds = [STRESS_SEED0 + i for i in range(episodes)]
    obs, obs_dicts = initial_observations(cfg, policy, seeds)
    chain = policy_sampler(policy, obs, noise_mode="none", grad="full")
    goals = torch.as_tensor(np.stack([o["pos_first_goal"] for o in obs_dicts]), dtype=torch.float32)
    objective = EndDistance(goals)  # distance of the first chunk's last action from the first goal: maximized
    z_rand = torch.randn(chain.shape, generator=torch.Generator().manual_seed(0))
    bwd = measure_backward_cost(chain.sample_fn, objective, z_rand, repeats=3)
    rows: list[StressRow] = [evaluate_noises(policy, cfg.env, cfg.n_dim, seeds, z_rand, "own noise", chain.nfe,
                                             chain.nfe, 0.0)]
    for method in ("best-of-N", "gradient"):
        t0 = time.time()
        r = search_noises(method, chain, objective, z_rand, budget, bwd)
        rows.append(evaluate_noises(policy, cfg.env, cfg.n_dim, seeds, r.z, method, budget, r.nfe, time.time() - t0))
        if progress:
            print(f"[steerlab] stress test {method}: {rows[-1].failures}/{episodes} closed-loop failures", flush=True)
    return {"checkpoint": str(ckpt), "seeds": [seeds[0], seeds[-1]], "chain_nfe": chain.nfe, "backward_cost": bwd,
            "budget_nfe": budget, "rows": [dataclasses.asdict(r) for r in rows]}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def write_report(run_dir: Path, a: DemoArgs, ev: dict, stress: dict, seconds: float) -> Path:
    tr = ev.get("train", {})
    lo, hi = ev["success_ci95"]
    rows = stress["rows"]
    own, best, grad = rows[0], rows[1], rows[2]
    ratio = grad["failures_per_1000_nfe"] / best["failures_per_1000_nfe"] if best["failures"] else None
    stopped = "the time budget" if tr.get("stopped_by_budget") else "all steps done"
    lines = [
        f"# steerlab demo ({a.n_dim}-D particle)", "",
        f"Finished in {seconds:.0f} s. Training: {tr.get('steps', '?')} of {a.steps} steps in "
        f"{tr.get('train_seconds', 0):.0f} s (stopped by: {stopped}). Evaluation report: `{Path(ev['out_dir']) / 'report.md'}`.",
        "",
        "## Expected",
        "- The policy (diffusion, the network predicting the clean chunk, DDIM-10) succeeds on at least 90% of",
        "  episodes once its 10,000 steps have run (BENCHMARKS.md section 1 measures the same preset).",
        "- Its own noise rarely makes it fail; a search over the initial noise, at the same budget of denoiser",
        "  evaluations, finds noises that do, and gradient ascent through the sampler finds more of them per",
        "  evaluation than best-of-N, with the noises still inside the prior's central 99%.",
        "",
        "## Measured",
        f"- Closed-loop success: **{_pct(ev['success_rate'])}** [{_pct(lo)}, {_pct(hi)}] over {ev['episodes']} episodes.",
        f"- Stress test over {own['episodes']} episodes (seeds {stress['seeds'][0]}..{stress['seeds'][1]}), "
        f"{stress['budget_nfe']} denoiser evaluations per episode and search, a backward pass costing "
        f"{stress['backward_cost']:.1f} forwards; every noise held fixed in a real rollout:",
        "",
        "| noise | closed-loop failures | 95% CI | failures per 1,000 evaluations | failing noises inside the prior's 99% |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        inside = "–" if r["failing_inside_99"] is None else _pct(r["failing_inside_99"])
        lines.append(f"| {r['method']} | {r['failures']}/{r['episodes']} | [{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] "
                     f"| {r['failures_per_1000_nfe']:.2f} | {inside} |")
    verdict = (f"gradient/best-of-N failures per evaluation: {ratio:.1f}x" if ratio is not None
               else "best-of-N found no failure")
    lines += ["", f"- {verdict}.", ""]
    if ev["success_rate"] < 0.9:
        lines += [f"Success is below the expected 90%: training stopped after {tr.get('steps', '?')} steps "
                  f"({stopped}). Run it to the end with `steerlab demo --max-minutes 10` (it resumes), or see "
                  "BENCHMARKS.md section 1 for the full-budget figure.", ""]
    lines += [
        "## Next",
        f"- `steerlab noise {run_dir} --objective goal-distance --direction maximize`: the same search from the CLI,",
        "  with its options (`--noise-mode explicit` also optimizes the per-step noise).",
        f"- `steerlab eval {run_dir} --episodes 200`: a tighter success interval.",
        "- `steerlab train diffusion-particle --n-dim 8`: the full preset at 8-D; `steerlab presets` lists them all.",
        f"- `python benchmarks/stress_test.py --run-dir {run_dir}`: CEM too, at several budgets, with a plot.",
    ]
    out = run_dir / "demo.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def run_demo(a: DemoArgs) -> Path:
    for name in ("n_dim", "demos", "steps", "episodes", "stress_episodes", "budget_nfe"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(a, name)}")
    if a.max_minutes <= 0:
        raise ValueError(f"--max-minutes must be positive, got {a.max_minutes}")
    t0 = time.time()
    cfg = get_preset("demo")
    cfg = dataclasses.replace(cfg, n_dim=a.n_dim, episodes=a.demos, steps=a.steps, max_minutes=a.max_minutes, out_dir=a.out_dir,
                              run_name=a.run_name, eval=dataclasses.replace(cfg.eval, episodes=a.episodes))
    run_dir = train(cfg, resume=True)
    ev = evaluate_run(run_dir, a.episodes, archive=True)
    lo, hi = ev["success_ci95"]
    print(f"[steerlab] {run_dir}: success {ev['success_rate']:.1%} (95% CI [{lo:.1%}, {hi:.1%}]) over "
          f"{ev['episodes']} episodes", flush=True)
    print(f"[steerlab] stress test: searching the noise of {a.stress_episodes} episodes for failures "
          f"({a.budget_nfe} denoiser evaluations each, best-of-N and gradient)", flush=True)
    stress = stress_test(run_dir, a.stress_episodes, a.budget_nfe)
    atomic_write_text(run_dir / "stress.json", json.dumps(stress, indent=2))
    report = write_report(run_dir, a, ev, stress, time.time() - t0)
    print(f"[steerlab] demo finished in {time.time() - t0:.0f} s: see {report}")
    return report
