"""Load a trained run and evaluate it: ``metrics.json``, plots and ``report.md``.

Results are never replaced silently. The run's own results (the evaluation at the end of training, or the
first evaluation of a run trained with ``--no-eval``) live at the top of the run directory; every later
evaluation writes a new ``evals/<NNN>-step<S>-<E>ep/`` directory. When training resumes and evaluates again,
the previous top-level results are moved into such a directory first.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from steerlab.eval.plots import plot_energy_landscape, plot_training_curves
from steerlab.eval.rollout import evaluate_policy, write_metrics
from steerlab.hw import module_device
from steerlab.policy_io import load_run_policy
from steerlab.tasks import get_task
from steerlab.train.checkpoint import checkpoint_step, load_meta
from steerlab.train.config import TrainConfig
from steerlab.train.rundir import RunLock, atomic_write_text, new_eval_dir

RESULT_FILES = ("metrics.json", "report.md", "plots")


def load_run(run_dir: str | Path, ema: bool | None = None, device: str | torch.device | None = "cpu"):
    """``(cfg, policy, checkpoint_path)`` of a run directory; see :func:`steerlab.policy_io.load_run_policy` (the
    loading :func:`steerlab.load_policy` does)."""
    return load_run_policy(run_dir, ema=ema, device=device)


def check_episodes(episodes) -> None:
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise ValueError(f"--episodes must be a positive integer, got {episodes!r}")


def results_dir(run_dir: Path, marker: str, label: str, out: str | Path | None = None, overwrite: bool = False,
                archive: bool = False) -> Path:
    """Where an evaluation writes: ``out`` if given (refused if it already holds ``marker`` unless ``overwrite``);
    else the run directory itself while it has no ``marker`` yet (or with ``overwrite``; or with ``archive``,
    after moving its earlier results into ``evals/``); else a new ``evals/<NNN>-<label>/``."""
    if out is not None:
        out = Path(out)
        if (out / marker).exists() and not overwrite:
            raise FileExistsError(f"{out} already holds {marker}; pass --overwrite to replace it, or another --out")
        out.mkdir(parents=True, exist_ok=True)
        return out
    if not (run_dir / marker).exists() or overwrite:
        return run_dir
    if archive:
        old = json.loads((run_dir / marker).read_text()).get("checkpoint", "")
        dest = new_eval_dir(run_dir, f"step{checkpoint_step(old)}" if old else "earlier")
        for name in RESULT_FILES:
            if (run_dir / name).exists():
                os.replace(run_dir / name, dest / name)
        print(f"[steerlab] earlier results of {run_dir} moved to {dest}")
        return run_dir
    return new_eval_dir(run_dir, label)


def evaluate_run(run_dir: str | Path, episodes: int | None = None, progress: bool | None = None,
                 overrides: dict | None = None, out: str | Path | None = None, overwrite: bool = False,
                 archive: bool = False, device: str | None = None) -> dict:
    """Evaluate the latest checkpoint of a run on ``device`` (None: the run's own); ``progress=None`` follows the
    run's ``progress`` setting.
    Writes ``metrics.json``, ``plots/`` and ``report.md`` into :func:`results_dir`; the directory is in
    ``res["out_dir"]``. The run directory is locked while this runs."""
    check_episodes(episodes)
    run_dir = Path(run_dir)
    cfg, policy, ckpt = load_run(run_dir, device=device)
    with RunLock(run_dir, f"steerlab eval {run_dir}"):
        return _evaluate_run(run_dir, cfg, policy, ckpt, episodes, progress, overrides, out, overwrite, archive)


def _evaluate_run(run_dir, cfg, policy, ckpt, episodes, progress, overrides, out, overwrite, archive) -> dict:
    progress = cfg.progress if progress is None else progress
    if overrides:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **overrides))
    res, eps = evaluate_policy(policy, cfg, episodes=episodes, progress=progress, return_episodes=True)
    res["checkpoint"] = str(ckpt)
    res["preset"] = cfg.preset
    res["n_dim"] = cfg.n_dim
    res["dataset"] = trained_dataset(ckpt, cfg)
    summary = run_dir / "train_summary.json"
    if summary.exists():
        res["train"] = json.loads(summary.read_text())
    dest = results_dir(run_dir, "metrics.json", f"step{checkpoint_step(ckpt)}-{res['episodes']}ep", out, overwrite, archive)
    res["out_dir"] = str(dest)
    write_metrics(dest / "metrics.json", res)
    plots = dest / "plots"
    plots.mkdir(exist_ok=True)
    task = get_task(cfg.env)
    made = [task.plot_rollouts(eps, plots / "rollouts.png",
                               title=f"{cfg.preset}{task.dims_label(cfg)}: success {res['success_rate']:.0%}")]
    curves = plot_training_curves(run_dir / "metrics.csv", plots / "training.png") \
        if (run_dir / "metrics.csv").exists() else None
    if curves is None:
        res["no_training_curves"] = (f"no training curves: the run logs every {cfg.log_interval} steps and stopped "
                                     f"after {res.get('train', {}).get('steps', '?')}")
    made.append(curves)
    if getattr(policy, "act_dim", 0) in (1, 2) and hasattr(policy, "energy"):
        obs0 = torch.as_tensor(eps[0]["obs0"], dtype=torch.float32, device=module_device(policy))
        hist = obs0[None].repeat(policy.n_obs_steps, 1)
        made.append(plot_energy_landscape(policy, hist, plots / "energy.png",
                                          generator=torch.Generator(device=obs0.device).manual_seed(0),
                                          title=f"E(o, a) at the first step of seed {eps[0]['seed']}"))
    write_report(dest, cfg, res, [p for p in made if p])
    return res


def trained_dataset(ckpt: Path, cfg: TrainConfig) -> dict:
    """The dataset a checkpoint was trained on, as training loaded it (the checkpoint's ``meta.json``): ``path``,
    and ``episodes``, ``train_episodes`` and ``held_out_episodes`` counted from its episode ends (a checkpoint
    written before the counts were recorded has the path only)."""
    meta = load_meta(ckpt)
    out = {"path": meta.get("dataset", str(cfg.dataset_path()))}
    for key, name in (("n_episodes", "episodes"), ("n_train_episodes", "train_episodes"),
                      ("n_held_out_episodes", "held_out_episodes")):
        if key in meta:
            out[name] = meta[key]
    return out


def _dataset_line(ds: dict) -> str:
    """``dataset `path` (E episodes: T for training, H held out)`` from :func:`trained_dataset`."""
    line = f"dataset `{ds['path']}`"
    if "episodes" not in ds:
        return line
    split = f": {ds['train_episodes']} for training, {ds['held_out_episodes']} held out" \
        if ds.get("held_out_episodes") else ""
    return f"{line} ({ds['episodes']} episodes{split})"


def write_report(run_dir: Path, cfg: TrainConfig, res: dict, plots: list[Path]) -> None:
    lo, hi = res["success_ci95"]
    tr = res.get("train", {})
    task = get_task(cfg.env)
    ds = res.get("dataset") or {"path": str(cfg.dataset_path())}
    lines = [
        f"# {cfg.preset} on {cfg.env}{task.dims_label(cfg)}",
        "",
        f"- policy: `{cfg.policy.kind}`; {_dataset_line(ds)}",
        f"- trained {tr.get('steps', '?')} steps in {tr.get('train_seconds', float('nan')):.0f} s"
        + (" (stopped by the time budget)" if tr.get("stopped_by_budget") else ""),
        f"- **success {res['success_rate']:.1%}** (95% Wilson [{lo:.1%}, {hi:.1%}]) over {res['episodes']} episodes, "
        f"env seeds {res['seeds'][0]}…{res['seeds'][-1]}",
        f"- {task.summary_line(res)}; {res['episodes_per_s']:.2f} episodes/s",
        f"- checkpoint `{res['checkpoint']}`",
        "",
    ]
    if res.get("no_training_curves"):
        lines += [f"- {res['no_training_curves']}", ""]
    lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    atomic_write_text(Path(run_dir) / "report.md", "\n".join(lines) + "\n")


def evaluate_test_time(run_dir: str | Path, correct: str | None = None, rerank: int | None = None,
                       guidance: float | None = None, episodes: int | None = None, progress: bool | None = None,
                       overrides: dict | None = None, execute_waypoints: int | None = None,
                       out: str | Path | None = None, overwrite: bool = False, device: str | None = None) -> dict:
    """Success of an energy-critic run with and without its test-time uses, side by side on the same seeds
    (and the same inference generator seed): base, re-rank, correct, re-rank + correct, guidance — those asked
    for. Writes ``metrics_test_time.json`` and a table in ``report_test_time.md``.

    A task may define its own test-time evaluation instead (:meth:`steerlab.tasks.base.Task.test_time`): a nav run
    has one test-time use, ``rerank`` chunks per decision scored by the clearance they keep in the robot's
    egocentric image (:mod:`steerlab.nav.safety`), optionally executing only the first ``execute_waypoints``
    waypoints; rows: the single draw, and the re-ranked deployment.

    The files go where :func:`results_dir` says (``metrics_test_time.json`` as the marker); the directory is in
    the result's ``out_dir``."""
    check_episodes(episodes)
    run_dir = Path(run_dir)
    cfg, policy, ckpt = load_run(run_dir, device=device)
    with RunLock(run_dir, f"steerlab eval {run_dir}"):
        return _evaluate_test_time(run_dir, cfg, policy, ckpt, correct, rerank, guidance, episodes, progress,
                                   overrides, execute_waypoints, (out, overwrite))


def _evaluate_test_time(run_dir, cfg, policy, ckpt, correct, rerank, guidance, episodes, progress, overrides,
                        execute_waypoints, dest) -> dict:
    progress = cfg.progress if progress is None else progress
    if overrides:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **overrides))
    task = get_task(cfg.env)
    own = task.test_time(policy, cfg, correct=correct, rerank=rerank, guidance=guidance,
                         execute_waypoints=execute_waypoints, episodes=episodes, progress=progress)
    if own is not None:
        rows, title, rates = own
        return _write_test_time(run_dir, ckpt, rows, title, rates=rates, dest=dest)
    if execute_waypoints is not None:
        raise ValueError("--execute-waypoints applies to nav runs only")
    from steerlab.commands.eval_args import parse_test_time
    from steerlab.steer.critic_policy import TestTime, set_test_time
    full = parse_test_time(correct, rerank, None)
    variants = [TestTime()]
    if rerank:
        variants.append(parse_test_time(None, rerank, None))
    if correct:
        variants.append(parse_test_time(correct, None, None))
    if rerank and correct:
        variants.append(full)
    if guidance:
        variants.append(parse_test_time(None, None, guidance))
    rows = {}
    for tt in variants:
        set_test_time(policy, tt)
        res = evaluate_policy(policy, cfg, episodes=episodes, progress=progress)
        rows[tt.label()] = {**res, "test_time": dataclasses.asdict(tt)}
        lo, hi = res["success_ci95"]
        print(f"[steerlab] {tt.label():28s} success {res['success_rate']:.1%} [{lo:.1%}, {hi:.1%}] "
              f"({res['episodes_per_s']:.2f} episodes/s)")
    return _write_test_time(run_dir, ckpt, rows, f"test-time use of the energy critic — {cfg.preset}{task.dims_label(cfg)}",
                            dest=dest)


def _write_test_time(run_dir: Path, ckpt, rows: dict, title: str, rates=(), dest=(None, False)) -> dict:
    """``metrics_test_time.json`` and the ``report_test_time.md`` table (success, the extra ``rates``, speed)."""
    n = next(iter(rows.values()))["episodes"]
    d = results_dir(run_dir, "metrics_test_time.json", f"step{checkpoint_step(ckpt)}-{n}ep-test-time", *dest)
    out = {"checkpoint": str(ckpt), "out_dir": str(d), "variants": rows}
    write_metrics(d / "metrics_test_time.json", out)
    extra = "".join(f" {k.replace('_', ' ')} |" for k in rates)
    lines = [f"# {title}", "", f"| variant | success | 95% CI |{extra} episodes/s |", "|---|---|---|" + "---|" * (len(rates) + 1)]
    for k, r in rows.items():
        cells = "".join(f" {r[f'{c}_rate']:.1%} |" for c in rates)
        lines.append(f"| {k} | {r['success_rate']:.1%} | [{r['success_ci95'][0]:.1%}, {r['success_ci95'][1]:.1%}] |{cells} "
                     f"{r['episodes_per_s']:.2f} |")
    atomic_write_text(d / "report_test_time.md", "\n".join(lines) + "\n")
    print(f"[steerlab] wrote {d / 'metrics_test_time.json'} and {d / 'report_test_time.md'}")
    return out
