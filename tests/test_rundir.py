"""Run directories: the lock, config validation and resume checks, interrupts, checksums, and results that are
never replaced silently."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerlab.baselines.mse import MSEConfig
from steerlab.cli import main, resolve_train_config
from steerlab.eval.run import evaluate_run, load_run
from steerlab.train.checkpoint import CheckpointError, list_checkpoints, load_weights
from steerlab.train.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    config_to_dict,
    load_config_file,
    merge,
    validate_config,
)
from steerlab.train.loop import TrainingError, train
from steerlab.train.rundir import RunLock, RunLockedError, new_eval_dir, staged_output

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cfg(tmp_path, dataset, **kw):
    base = dict(preset="test", dataset=str(dataset), policy=MSEConfig(width=32, dropout=0.0), steps=6, batch_size=16,
                log_interval=1, ckpt_interval=3, out_dir=str(tmp_path), progress=False, monitor_batch=0,
                eval=EvalConfig(episodes=2, batch=2), threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _cli_train(tmp_path, dataset, name, *extra, steps=6, log_interval=1):
    return [sys.executable, "-m", "steerlab.cli", "train", "mse-particle", "--dataset", str(dataset), "--out-dir",
            str(tmp_path), "--run-name", name, "--steps", str(steps), "--batch-size", "16", "--policy.width", "32",
            "--policy.dropout", "0.0", "--no-progress", "--threads", "1", "--log-interval", str(log_interval), "--no-eval",
            *extra]


# ---------------------------------------------------------------------------------------------- the lock

def test_lock_names_the_holder_and_is_released_when_it_dies(tmp_path, particle2d):
    run = tmp_path / "held"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from steerlab.train.rundir import RunLock; "
         f"l = RunLock(sys.argv[1], 'holder-job').acquire(); pathlib.Path(sys.argv[2]).touch(); time.sleep(60)",
         str(run), str(ready)], env=ENV)
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=f"holder-job.*pid {holder.pid}"):
            train(_cfg(tmp_path, particle2d, run_name="held"))
        assert not (run / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.kill()  # kill -9: the kernel drops the flock
        holder.wait()
    lock = RunLock(run, "next").acquire()
    assert lock.stale is not None and lock.stale["pid"] == holder.pid  # the dead holder's record is reported
    lock.release()
    train(_cfg(tmp_path, particle2d, run_name="held"))
    assert list_checkpoints(run)


@pytest.mark.slow
def test_two_trainings_with_one_run_name_one_wins(tmp_path, particle2d):
    procs = [subprocess.Popen(_cli_train(tmp_path, particle2d, "same", "--seed", str(s), steps=400), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outs
    loser_err = outs[codes.index(1)][1]
    assert ("is in use by" in loser_err or "already holds checkpoints" in loser_err) and "Traceback" not in loser_err
    winner_seed = codes.index(0)
    cfg = json.loads((tmp_path / "same" / "config.json").read_text())
    assert cfg["seed"] == winner_seed and list_checkpoints(tmp_path / "same")[-1].name == "step_00000400"


# ---------------------------------------------------------------------------------------------- config

def test_yaml_scientific_notation_is_a_float_and_wrong_types_name_the_key(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("lr: 1e-3\nsteps: 1e4\n")  # YAML 1.1 reads both as strings
    cfg = resolve_train_config("mse-particle", ["--config-file", str(f)])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float) and cfg.steps == 10_000 and isinstance(cfg.steps, int)
    f.write_text('batch_size: "abc"\n')
    with pytest.raises(SystemExit, match=r"batch_size: expected int, got 'abc'"):
        main(["train", "mse-particle", "--config-file", str(f), "--out-dir", str(tmp_path), "--run-name", "r"])
    f.write_text("steps: -5\n")
    with pytest.raises(SystemExit, match=r"steps: expected a value >= 0, got -5"):
        main(["train", "mse-particle", "--config-file", str(f), "--out-dir", str(tmp_path), "--run-name", "r"])
    f.write_text("optimizer: sgd\n")
    with pytest.raises(SystemExit, match=r"optimizer: expected one of 'adam', 'adam_keras', 'adamw'"):
        main(["train", "mse-particle", "--config-file", str(f), "--out-dir", str(tmp_path), "--run-name", "r"])
    f.write_text("lr: [1, 2\n")
    with pytest.raises(SystemExit, match="not valid YAML"):
        main(["train", "mse-particle", "--config-file", str(f)])
    assert not (tmp_path / "r").exists()  # nothing was written for a bad config


def test_python_config_with_a_string_number_is_refused():
    cfg = dataclasses.replace(TrainConfig(), lr="1e-3")
    with pytest.raises(ConfigError, match="config.lr: expected float"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="eval.episodes"):
        validate_config(dataclasses.replace(TrainConfig(), eval=EvalConfig(episodes=0)))


_FIELDS = sorted(config_to_dict(TrainConfig()))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["1e-3", "adam", "cosine", "true", "12", "-1", "nan"]))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(["kind", "width", "depth", "episodes", "x"]),
                                                                       inner, max_size=3)), max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.sampled_from(_FIELDS + ["nope"]), _value, max_size=5))
def test_random_config_files_load_or_fail_clearly(tmp_path, data):
    """Any mapping in a config file either gives a valid config or a ConfigError naming a key; never a deep
    traceback of another type."""
    try:
        cfg = validate_config(merge(TrainConfig(), data, where="f.yaml"))
    except ConfigError as e:
        assert "f.yaml" in str(e) or "config." in str(e)
        return
    assert isinstance(cfg, TrainConfig)
    json.dumps(config_to_dict(cfg))  # a loaded config can be written as config.json


def test_config_file_with_non_string_keys_or_not_a_mapping(tmp_path):
    f = tmp_path / "o.yaml"
    f.write_text("1: 2\n")
    with pytest.raises(ConfigError, match="must be a string"):
        load_config_file(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config_file(f)


# ---------------------------------------------------------------------------------------------- resume

def test_failed_resume_keeps_config_and_names_the_fields(tmp_path, particle2d):
    cfg = _cfg(tmp_path, particle2d, run_name="r", steps=3)
    run = train(cfg)
    before = (run / "config.json").read_bytes()
    wider = dataclasses.replace(cfg, steps=6, policy=MSEConfig(width=64, dropout=0.0), lr=5e-4)
    with pytest.raises(TrainingError, match=r"policy\.width: 32 -> 64.*lr|lr.*policy\.width: 32 -> 64"):
        train(wider, resume=True)
    assert (run / "config.json").read_bytes() == before
    # a corrupt latest checkpoint: the resume fails and config.json is left as it was
    ckpt = list_checkpoints(run)[-1]
    (ckpt / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(dataclasses.replace(cfg, steps=6), resume=True)
    assert (run / "config.json").read_bytes() == before


def test_resume_records_allowed_changes(tmp_path, particle2d):
    cfg = _cfg(tmp_path, particle2d, run_name="r", steps=3)
    run = train(cfg)
    train(dataclasses.replace(cfg, steps=6, eval=EvalConfig(episodes=3, batch=3)), resume=True)
    hist = [json.loads(line) for line in (run / "resume_history.jsonl").read_text().splitlines()]
    assert hist[0]["step"] == 3 and hist[0]["changes"]["steps"] == [3, 6]
    assert hist[0]["changes"]["eval.episodes"] == [2, 3]
    assert json.loads((run / "config.json").read_text())["steps"] == 6


def test_demo_with_another_dimension_refuses_to_resume(tmp_path, particle2d):
    cfg = _cfg(tmp_path, particle2d, run_name="d", steps=2)
    train(cfg)
    with pytest.raises(TrainingError, match=r"n_dim: 2 -> 4.*--run-name"):
        train(dataclasses.replace(cfg, n_dim=4), resume=True)


# ---------------------------------------------------------------------------------------------- interrupts

def _final_weights(run):
    return load_weights(list_checkpoints(run)[-1])


SIGNAL_STEPS = 2000


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, particle2d):
    """The run that the interrupted-and-resumed runs must reproduce exactly."""
    root = tmp_path_factory.mktemp("ref")
    ref = subprocess.run(_cli_train(root, particle2d, "ref", "--ckpt-interval", "100000", steps=SIGNAL_STEPS,
                                    log_interval=7), env=ENV, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    return root / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_is_exact(tmp_path, particle2d, uninterrupted, sig):
    steps = SIGNAL_STEPS
    cmd = _cli_train(tmp_path, particle2d, "cut", "--ckpt-interval", "100000", steps=steps, log_interval=7)
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv = tmp_path / "cut" / "metrics.csv"
    for _ in range(600):
        if csv.exists() and len(csv.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    stopped = int(list_checkpoints(tmp_path / "cut")[-1].name.split("_")[1])
    assert 0 < stopped < steps  # checkpointed where it stopped, not at an interval
    assert json.loads((tmp_path / "cut" / "train_summary.json").read_text())["interrupted"]
    res = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = _final_weights(uninterrupted), _final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = (uninterrupted / "metrics.csv").read_text().splitlines()
    rb = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    col = ra[0].split(",").index("loss")
    assert [r.split(",")[col] for r in ra] == [r.split(",")[col] for r in rb]


# ---------------------------------------------------------------------------------------------- checksums

def test_flipped_byte_in_weights_is_named_as_corruption(tmp_path, particle2d):
    run = train(_cfg(tmp_path, particle2d, run_name="c", steps=3))
    f = list_checkpoints(run)[-1] / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x40  # inside the tensor data: the header still parses
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt: its SHA-256"):
        load_run(run)
    with pytest.raises(SystemExit, match="corrupt"):
        main(["eval", str(run)])


def test_partly_deleted_checkpoints_are_never_listed(tmp_path, particle2d):
    run = train(_cfg(tmp_path, particle2d, run_name="k", steps=9, keep_checkpoints=1))
    root = run / "checkpoints"
    assert [p.name for p in list_checkpoints(run)] == ["step_00000009"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary or trash directory left


# ---------------------------------------------------------------------------------------------- eval

def test_eval_never_replaces_results(tmp_path, particle2d):
    run = train(_cfg(tmp_path, particle2d, run_name="e", steps=3))
    first = evaluate_run(run, episodes=2, progress=False)
    assert Path(first["out_dir"]) == run
    top = (run / "metrics.json").read_bytes()
    second = evaluate_run(run, episodes=3, progress=False)
    dest = Path(second["out_dir"])
    assert dest.parent == run / "evals" and dest.name == "001-step3-3ep"
    assert (dest / "metrics.json").exists() and (dest / "report.md").exists() and (dest / "plots" / "rollouts.png").exists()
    assert (run / "metrics.json").read_bytes() == top  # the run's own results are kept
    third = evaluate_run(run, episodes=3, progress=False)
    assert Path(third["out_dir"]).name == "002-step3-3ep"
    evaluate_run(run, episodes=3, progress=False, overwrite=True)
    assert json.loads((run / "metrics.json").read_text())["episodes"] == 3
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluate_run(run, episodes=2, progress=False, out=dest)


def test_retraining_archives_the_previous_results(tmp_path, particle2d):
    args = ["train", "mse-particle", "--dataset", str(particle2d), "--out-dir", str(tmp_path), "--run-name", "a",
            "--batch-size", "16", "--policy.width", "32", "--no-progress", "--eval.episodes", "2", "--eval.batch", "2"]
    main([*args, "--steps", "3"])
    main([*args, "--steps", "6", "--resume"])
    run = tmp_path / "a"
    assert json.loads((run / "metrics.json").read_text())["checkpoint"].endswith("step_00000006")
    (old,) = (run / "evals").iterdir()
    assert old.name == "001-step3" and json.loads((old / "metrics.json").read_text())["checkpoint"].endswith("step_00000003")


@pytest.mark.parametrize("n", ["0", "-3"])
def test_eval_episode_counts_are_validated(tmp_path, particle2d, n):
    run = train(_cfg(tmp_path, particle2d, run_name="v", steps=2))
    with pytest.raises(SystemExit, match=f"--episodes must be a positive integer, got {n}"):
        main(["eval", str(run), "--episodes", n])
    assert not (run / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------- noise

def test_noise_checks_arguments_before_optimizing_and_leaves_no_empty_dir(tmp_path, particle2d):
    main(["train", "flow-particle", "--steps", "3", "--dataset", str(particle2d), "--out-dir", str(tmp_path),
          "--run-name", "flow", "--no-progress", "--no-eval", "--policy.denoiser.width", "16",
          "--policy.denoiser.depth", "2", "--batch-size", "16"])
    run = tmp_path / "flow"
    with pytest.raises(SystemExit, match=r"--target 0.1 has 1 numbers; the policy's actions have 2 dimensions"):
        main(["noise", str(run), "--objective", "end-distance", "--target", "0.1", "--no-progress"])
    with pytest.raises(SystemExit, match="--sampler ddim does not apply to a flow policy"):
        main(["noise", str(run), "--sampler", "ddim", "--no-progress"])
    assert not (run / "noise").exists()
    out = tmp_path / "nz"
    main(["noise", str(run), "--steps", "2", "--episodes", "2", "--no-progress", "--out", str(out)])
    assert (out / "result.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nz")]


def test_staged_output_keeps_the_earlier_result_on_failure(tmp_path):
    out = tmp_path / "res"
    with staged_output(out) as d:
        (d / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_output(out) as d:
            (d / "a.txt").write_text("second")
            raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_new_eval_dirs_are_numbered_and_unique(tmp_path):
    names = [new_eval_dir(tmp_path, "x").name for _ in range(3)]
    assert names == ["001-x", "002-x", "003-x"]


def test_collecting_inside_train_prints_no_traceback(tmp_path):
    """The collector's forked pool workers inherit the training's signal handler; when the pool terminates them
    they must die quietly, as by default. (Training collects its default dataset, under the working directory.)"""
    args = [sys.executable, "-m", "steerlab.cli", "train", "mse-particle", "--episodes", "30", "--out-dir",
            str(tmp_path), "--run-name", "c", "--steps", "2", "--no-eval", "--no-progress", "--policy.width", "16"]
    p = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert (tmp_path / "data" / "particle-2d-30.zarr").exists()


def test_record_checksums_accepts_an_intentional_edit(tmp_path, particle2d):
    from safetensors.torch import save_file

    from steerlab.train.checkpoint import record_checksums

    run = train(_cfg(tmp_path, particle2d, run_name="edit", steps=3))
    ck = list_checkpoints(run)[-1]
    w = load_weights(ck)
    w = {k: v * 1.0 for k, v in w.items()}
    first = next(iter(w))
    w[first] = torch.zeros_like(w[first])
    save_file(w, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(ck)
    record_checksums(ck)
    assert torch.equal(load_weights(ck)[first], w[first])


def test_second_signal_aborts_at_once_and_the_cli_prints_no_traceback(capsys):
    from steerlab.train.loop import _StopRequest

    stop = _StopRequest()
    with pytest.raises(KeyboardInterrupt):  # before the step loop: abort, nothing to checkpoint yet
        stop(signal.SIGINT, None)
    stop.armed = True
    stop(signal.SIGINT, None)
    assert stop.signum == signal.SIGINT  # the first asks the loop to checkpoint and stop
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)

    import steerlab.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    cli.run_presets, old = interrupted, cli.run_presets
    try:
        with pytest.raises(SystemExit) as e:
            main(["presets"])
    finally:
        cli.run_presets = old
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("bad, match", [({"maps": 0}, "--maps"), ({"steps": 0}, "--steps"), ({"lr": -1.0}, "--lr"),
                                        ({"route": "left"}, "--route"), ({"candidates": 0}, "--candidates")])
def test_intent_arguments_are_checked_before_any_map_is_built(tmp_path, bad, match):
    from steerlab.commands.intent import IntentArgs, optimize_intent

    with pytest.raises(ValueError, match=match):
        optimize_intent(dataclasses.replace(IntentArgs(run_dir=str(tmp_path / "nope")), **bad))
