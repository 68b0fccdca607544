"""``steerlab`` command line.

    steerlab demo                       collect 2-D particle demos, train a diffusion policy, evaluate, stress-test, report
    steerlab collect particle --n-dim N --episodes 2000 [--format zarr|lerobot]   (each task its own options)
    steerlab collect nav2d --episodes 500 [--family mixed]
    steerlab train <preset> [--n-dim N] [--device auto|cpu|cuda] [--config-file F.yaml] [--resume] [any --field overrides]
    steerlab eval <run-dir> [--episodes 100] [--device auto|cpu|cuda] [--correct steps=3,alpha=0.1] [--rerank 16]
    steerlab noise <run-dir> --objective goal-distance --direction maximize [--noise-mode from_seed --steps 50 --lr 0.05]
    steerlab intent optimize <run-dir> --objective collision|goal|route [--steps 100 --lr 1e-2 --joint-noise]
    steerlab presets                    list the presets

Every sub-command takes ``--help``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

USAGE = __doc__


def _split_flag(args: list[str], flag: str, takes_value: bool):
    """Remove ``flag`` (and its value) from ``args``; return (value or bool, rest)."""
    rest, value = [], None if takes_value else False
    i = 0
    while i < len(args):
        a = args[i]
        if a == flag:
            if takes_value:
                if i + 1 >= len(args):
                    raise SystemExit(f"{flag} needs a value")
                value = args[i + 1]
                i += 2
                continue
            value = True
        elif takes_value and a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return value, rest


def resolve_train_config(preset: str, args: list[str]):
    """Preset -> file overrides (``--config-file``) -> command-line overrides (tyro)."""
    from steerlab.presets import get_preset
    from steerlab.train.config import TrainConfig, load_config_file, merge

    cfg = get_preset(preset)
    cfg_file, args = _split_flag(args, "--config-file", True)
    if cfg_file:
        cfg = merge(cfg, load_config_file(cfg_file), where=str(cfg_file))
    return tyro.cli(
        TrainConfig[type(cfg.policy)], default=cfg, args=args, prog=f"steerlab train {preset}",
        description=f"Train preset '{preset}'. Options override the preset; --config-file F.json|yaml "
                    f"applies a file of overrides first; --resume continues the run from its latest checkpoint.",
        config=(tyro.conf.AvoidSubcommands,),
    )


def cmd_presets(_args: list[str]) -> None:
    from steerlab.presets import PRESETS

    for name, (doc, _) in PRESETS.items():
        print(f"{name:32s} {doc}")


def cmd_train(args: list[str]) -> None:
    from steerlab.presets import PRESETS

    if not args or args[0] in ("-h", "--help"):
        print("usage: steerlab train <preset> [--resume] [--config-file F] [overrides]\n\npresets:")
        cmd_presets([])
        print("\n`steerlab train <preset> --help` lists every option with the preset's value.")
        return
    preset, rest = args[0], args[1:]
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    resume, rest = _split_flag(rest, "--resume", False)
    no_eval, rest = _split_flag(rest, "--no-eval", False)
    cfg = resolve_train_config(preset, rest)
    from steerlab.train.loop import train

    run_dir = train(cfg, resume=resume)
    from steerlab.tasks import get_task

    if not get_task(cfg.env).has_env:
        print(f"[steerlab] {run_dir}: {cfg.env} is a model task with no environment; rollout evaluation skipped")
    elif not no_eval:
        import torch.distributed as dist

        if not (dist.is_initialized() and dist.get_rank() != 0):
            _eval(run_dir, None, archive=True)


def _eval(run_dir: Path, episodes: int | None, out: str | None = None, overwrite: bool = False,
          archive: bool = False, device: str | None = None, **overrides) -> dict:
    """Evaluate and print the result; ``archive``: the run's own (end-of-training) evaluation, which moves earlier
    top-level results into evals/ before writing its own."""
    from steerlab.eval.run import evaluate_run

    res = evaluate_run(run_dir, episodes=episodes, overrides=overrides or None, out=out, overwrite=overwrite,
                       archive=archive, device=device)
    lo, hi = res["success_ci95"]
    print(f"[steerlab] {run_dir}: success {res['success_rate']:.1%} (95% CI [{lo:.1%}, {hi:.1%}]) "
          f"over {res['episodes']} episodes; report {Path(res['out_dir']) / 'report.md'}")
    return res


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a trained run: rollouts on fixed seeds, metrics.json, plots/ and report.md. The run's first evaluation
    writes them into the run directory; later ones into a new <run-dir>/evals/<NNN>-step<S>-<E>ep/ (nothing is
    replaced unless --overwrite)."""

    run_dir: tyro.conf.Positional[str]
    """run directory written by `steerlab train`"""
    episodes: int | None = None
    """episodes, a positive integer (default: the run's eval.episodes)"""
    seed0: int | None = None
    """first env seed (default: the run's eval.seed0)"""
    batch: int | None = None
    """environments stepped together"""
    correct: str | None = None
    """energy-critic runs: also evaluate gradient correction, e.g. steps=3,alpha=0.1[,clip=0.05]"""
    rerank: int | None = None
    """energy-critic runs: also evaluate re-ranking of this many sampled chunks (and, with --correct, both); nav runs:
    re-rank this many chunks per decision by their clearance in the robot's egocentric image"""
    execute_waypoints: int | None = None
    """nav runs with --rerank: execute only the first W of the 8 waypoints per decision"""
    guide: float | None = None
    """energy-critic runs: also evaluate energy guidance during sampling with this weight"""
    out: str | None = None
    """write the results into this directory instead (refused if it already holds results, unless --overwrite)"""
    overwrite: bool = False
    """replace the run's top-level results (or those in --out) instead of writing a new evals/ directory"""
    device: Literal["auto", "cpu", "cuda"] | None = None
    """device of the policy during evaluation: auto (CUDA when a GPU is visible), cpu or cuda (default: the run's
    --device)"""


def cmd_eval(args: list[str]) -> None:
    from steerlab.eval.run import check_episodes

    a = tyro.cli(EvalArgs, args=args, prog="steerlab eval")
    check_episodes(a.episodes)
    for name in ("batch", "rerank", "execute_waypoints"):
        v = getattr(a, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    over = {k: v for k, v in (("seed0", a.seed0), ("batch", a.batch)) if v is not None}
    if a.correct or a.rerank or a.guide:
        from steerlab.eval.run import evaluate_test_time

        evaluate_test_time(Path(a.run_dir), a.correct, a.rerank, a.guide, a.episodes, overrides=over or None,
                           execute_waypoints=a.execute_waypoints, out=a.out, overwrite=a.overwrite,
                           device=a.device)
        return
    if a.execute_waypoints is not None:
        raise ValueError("--execute-waypoints needs --rerank K (nav runs)")
    _eval(Path(a.run_dir), a.episodes, out=a.out, overwrite=a.overwrite, device=a.device, **over)


def cmd_collect(args: list[str]) -> None:
    """``steerlab collect [<task>] [options]``: the task's own options (default task: particle)."""
    from steerlab.tasks import get_task, task_names

    collectors = [n for n in task_names() if get_task(n).collect_args is not None]
    name, rest = (args[0], args[1:]) if args and not args[0].startswith("-") else ("particle", args)
    if name not in collectors:
        raise SystemExit(f"steerlab collect: no collector for task {name!r}; tasks with one: {', '.join(collectors)}")
    task = get_task(name)
    a = tyro.cli(task.collect_args, args=rest, prog=f"steerlab collect {name}",
                 description=" ".join((task.collect_args.__doc__ or "").split()) + f" Tasks: {', '.join(collectors)}.")
    print(json.dumps(task.collect(a), indent=2, default=str))


def cmd_demo(args: list[str]) -> None:
    from steerlab.demo import DemoArgs, run_demo

    run_demo(tyro.cli(DemoArgs, args=args, prog="steerlab demo"))


def cmd_noise(args: list[str]) -> None:
    from steerlab.commands.noise import NoiseArgs, run_noise

    a = tyro.cli(NoiseArgs, args=args, prog="steerlab noise")
    run_noise(a)


def cmd_intent(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help"):
        print("usage: steerlab intent optimize <run-dir> [--objective collision|goal|route] [--steps 100] [--lr 1e-2] ...\n"
              "       steerlab intent optimize --help   lists every option")
        return
    if args[0] != "optimize":
        raise SystemExit(f"unknown intent command {args[0]!r}; use: steerlab intent optimize <run-dir> ...")
    from steerlab.commands.intent import IntentArgs, optimize_intent

    optimize_intent(tyro.cli(IntentArgs, args=args[1:], prog="steerlab intent optimize"))


COMMANDS = {"demo": cmd_demo, "collect": cmd_collect, "train": cmd_train, "eval": cmd_eval, "noise": cmd_noise,
            "intent": cmd_intent, "presets": cmd_presets}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        raise SystemExit(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    from steerlab.data.zarr_io import DatasetError
    from steerlab.train.checkpoint import CheckpointError
    from steerlab.train.loop import TrainingError, TrainingInterrupted
    from steerlab.train.rundir import RunLockedError

    user_errors = (DatasetError, CheckpointError, TrainingError, RunLockedError, KeyError, ValueError,
                   FileNotFoundError, FileExistsError)
    try:
        COMMANDS[cmd](rest)
    except TrainingInterrupted as e:
        print(f"steerlab {cmd}: {e}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    except KeyboardInterrupt:
        print(f"steerlab {cmd}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except user_errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"steerlab {cmd}: error: {msg}") from None


if __name__ == "__main__":
    main()
