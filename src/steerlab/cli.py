"""``steerlab`` command line: one tyro program whose sub-commands are built from the registries.

    steerlab demo                       collect 2-D particle demos, train a diffusion policy, evaluate, stress-test, report
    steerlab collect TASK [options]     demonstrations of a registered task (particle, nav2d, ...), each with its options
    steerlab train PRESET [options]     train a named preset; every TrainConfig field is an option, the preset's value its
                                        default; --config-file F.yaml applies a file of overrides first; --resume
    steerlab eval RUN_DIR [--episodes 100] [--correct steps=3,alpha=0.1] [--rerank 16] [--device auto|cpu|cuda]
    steerlab noise RUN_DIR --objective goal-distance --direction maximize [--steps 50 --lr 0.05]
    steerlab intent optimize RUN_DIR --objective collision|goal|route [--steps 100 --lr 1e-2]
    steerlab presets                    list the presets

Every sub-command takes ``--help``. ``train`` has one sub-command per preset and ``collect`` one per task with a
collector, so a preset added to ``steerlab.presets.PRESETS`` or a task registered in ``steerlab.tasks`` appears here
without an edit of this module.
"""

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Generic, Literal, TypeVar, Union

import tyro

from steerlab.commands.intent import IntentArgs, optimize_intent
from steerlab.commands.noise import NoiseArgs, run_noise
from steerlab.data.episodes import DatasetError
from steerlab.demo import DemoArgs, run_demo
from steerlab.eval.run import check_episodes, evaluate_run, evaluate_test_time
from steerlab.presets import PRESETS, get_preset
from steerlab.tasks import get_task, task_names
from steerlab.train.checkpoint import CheckpointError
from steerlab.train.config import TrainConfig, load_config_file, merge
from steerlab.train.loop import TrainingError, TrainingInterrupted, train
from steerlab.train.rundir import RunLockedError

P = TypeVar("P")
USAGE = __doc__.replace("``", "")


@dataclass(frozen=True)
class TrainArgs(Generic[P]):
    """The run configuration (every field an option, the preset's value its default) and how to start it."""

    config: Annotated[TrainConfig[P], tyro.conf.arg(name=""), tyro.conf.AvoidSubcommands]
    config_file: str | None = None
    """a JSON or YAML file of overrides applied to the preset before the options given on the command line"""
    resume: bool = False
    """continue the run from its latest checkpoint (exactly: weights, optimizer, RNG states, loss log)"""
    no_eval: bool = False
    """skip the closed-loop evaluation after training"""
    preset_name: tyro.conf.Suppress[str] = ""


def _train_member(name: str, cfg: TrainConfig):
    doc = PRESETS[name][0]
    return Annotated[TrainArgs[type(cfg.policy)],
                     tyro.conf.subcommand(name, default=TrainArgs(config=cfg, preset_name=name), description=doc)]


def _train_presets(configs: dict[str, TrainConfig]):
    return Union[tuple(_train_member(name, cfg) for name, cfg in configs.items())]  # noqa: UP007 (built at run time)


def _collect_tasks():
    names = [n for n in task_names() if get_task(n).collect_args is not None]
    return Union[tuple(Annotated[get_task(n).collect_args, tyro.conf.subcommand(n, default=get_task(n).collect_args())]
                       for n in names)]


@dataclass(frozen=True)
class PresetsCommand:
    """List the named run presets (`steerlab train PRESET --help` shows every option with the preset's value)."""


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a trained run: rollouts on fixed seeds, metrics.json, plots/ and report.md. The run's first evaluation
    writes them into the run directory; later ones into a new <run-dir>/evals/<NNN>-step<S>-<E>ep/ (nothing is
    replaced unless --overwrite)."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
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


@dataclass(frozen=True)
class IntentCommand:
    """Optimize the latent intent of a trained nav policy through its full sampling chain (steer or attack it)."""

    action: Annotated[Literal["optimize"], tyro.conf.Positional, tyro.conf.arg(metavar="optimize")]
    """what to do with the intent: `optimize` it (the one action)"""
    args: Annotated[IntentArgs, tyro.conf.arg(name="")]


def commands_type(train_configs: dict[str, TrainConfig] | None = None):
    """The union of sub-commands; ``train_configs`` replaces the presets' configurations (a ``--config-file``)."""
    configs = {name: get_preset(name) for name in PRESETS}
    configs.update(train_configs or {})

    @dataclass(frozen=True)
    class Train:
        """Train a named preset, then evaluate it (`steerlab presets` lists them)."""

        preset: Annotated[_train_presets(configs), tyro.conf.arg(name="")]

    @dataclass(frozen=True)
    class Collect:
        """Collect oracle demonstrations of a task into a zarr dataset (diffusion_policy layout) or a LeRobotDataset
        v3.0 directory."""

        task: Annotated[_collect_tasks(), tyro.conf.arg(name="")]

    return Union[
        Annotated[DemoArgs, tyro.conf.subcommand("demo")],
        Annotated[Collect, tyro.conf.subcommand("collect")],
        Annotated[Train, tyro.conf.subcommand("train")],
        Annotated[EvalArgs, tyro.conf.subcommand("eval")],
        Annotated[NoiseArgs, tyro.conf.subcommand("noise")],
        Annotated[IntentCommand, tyro.conf.subcommand("intent")],
        Annotated[PresetsCommand, tyro.conf.subcommand("presets")],
    ]


def parse(argv: list[str]):
    """Parse ``argv`` into a command; a ``train`` command's ``--config-file`` is applied to its preset and the
    command line parsed again over it, so options given on the command line win over the file."""
    cmd = tyro.cli(commands_type(), args=argv, prog="steerlab", description=USAGE)
    train = getattr(cmd, "preset", None)
    if isinstance(train, TrainArgs) and train.config_file:
        base = get_preset(train.preset_name)
        merged = merge(base, load_config_file(train.config_file), where=str(train.config_file))
        cmd = tyro.cli(commands_type({train.preset_name: merged}), args=argv, prog="steerlab", description=USAGE)
    return cmd


def resolve_train_config(preset: str, args: list[str]) -> TrainConfig:
    """The configuration ``steerlab train <preset> <args>`` would run: preset, then ``--config-file``, then options."""
    get_preset(preset)  # an unknown name is a KeyError that lists the presets
    return parse(["train", preset, *args]).preset.config


def run_train(a: TrainArgs) -> None:
    cfg = a.config
    run_dir = train(cfg, resume=a.resume)
    if not get_task(cfg.env).has_env:
        print(f"[steerlab] {run_dir}: {cfg.env} is a model task with no environment; rollout evaluation skipped")
    elif not a.no_eval:
        import torch.distributed as dist

        if not (dist.is_initialized() and dist.get_rank() != 0):
            _eval(run_dir, None, archive=True)


def _eval(run_dir: Path, episodes: int | None, out: str | None = None, overwrite: bool = False,
          archive: bool = False, device: str | None = None, **overrides) -> dict:
    """Evaluate and print the result; ``archive``: the run's own (end-of-training) evaluation, which moves earlier
    top-level results into evals/ before writing its own."""
    res = evaluate_run(run_dir, episodes=episodes, overrides=overrides or None, out=out, overwrite=overwrite,
                       archive=archive, device=device)
    lo, hi = res["success_ci95"]
    print(f"[steerlab] {run_dir}: success {res['success_rate']:.1%} (95% CI [{lo:.1%}, {hi:.1%}]) "
          f"over {res['episodes']} episodes; report {Path(res['out_dir']) / 'report.md'}")
    return res


def run_eval(a: EvalArgs) -> None:
    check_episodes(a.episodes)
    for name in ("batch", "rerank", "execute_waypoints"):
        v = getattr(a, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    over = {k: v for k, v in (("seed0", a.seed0), ("batch", a.batch)) if v is not None}
    if a.correct or a.rerank or a.guide:
        evaluate_test_time(Path(a.run_dir), a.correct, a.rerank, a.guide, a.episodes, overrides=over or None,
                           execute_waypoints=a.execute_waypoints, out=a.out, overwrite=a.overwrite,
                           device=a.device)
        return
    if a.execute_waypoints is not None:
        raise ValueError("--execute-waypoints needs --rerank K (nav runs)")
    _eval(Path(a.run_dir), a.episodes, out=a.out, overwrite=a.overwrite, device=a.device, **over)


def run_collect(args) -> None:
    task = next(get_task(n) for n in task_names() if get_task(n).collect_args is type(args))
    print(json.dumps(task.collect(args), indent=2, default=str))


def run_presets() -> None:
    for name, (doc, _) in PRESETS.items():
        print(f"{name:32s} {doc}")


def dispatch(cmd) -> tuple[str, Callable[[], None]]:
    """The name of a parsed command and the call that carries it out."""
    train = getattr(cmd, "preset", None)
    if isinstance(train, TrainArgs):
        return "train", lambda: run_train(train)
    table = {DemoArgs: ("demo", lambda: run_demo(cmd)), EvalArgs: ("eval", lambda: run_eval(cmd)),
             NoiseArgs: ("noise", lambda: run_noise(cmd)), IntentCommand: ("intent", lambda: optimize_intent(cmd.args)),
             PresetsCommand: ("presets", lambda: run_presets())}
    return table.get(type(cmd)) or ("collect", lambda: run_collect(cmd.task))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    user_errors = (DatasetError, CheckpointError, TrainingError, RunLockedError, KeyError, ValueError,
                   FileNotFoundError, FileExistsError)
    name = "steerlab"
    try:
        cmd = parse(argv)
        command, run = dispatch(cmd)
        name = f"steerlab {command}"
        run()
    except TrainingInterrupted as e:
        print(f"{name}: {e}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except user_errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"{name}: error: {msg}") from None


if __name__ == "__main__":
    main()
