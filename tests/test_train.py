"""The training loop: exact resume, NaN handling, bad input, torchrun data-parallel, evaluation."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from steerlab.baselines.mse import MSEConfig
from steerlab.data.zarr_io import DatasetError, load_episodes, write_episodes
from steerlab.ebm.policy import IBCConfig, LangevinConfig
from steerlab.eval.run import evaluate_run, load_run
from steerlab.train.checkpoint import CheckpointError, list_checkpoints, load_trainer_state, load_weights
from steerlab.train.config import EvalConfig, TrainConfig
from steerlab.train.loop import TrainingError, train

SMALL_IBC = IBCConfig(width=32, depth=2, num_counter_examples=4, langevin=LangevinConfig(num_steps=5),
                      inference_samples=16, stats_samples=None)


def _cfg(tmp_path, dataset, **kw):
    base = dict(preset="test", dataset=str(dataset), policy=SMALL_IBC, steps=12, batch_size=16, log_interval=1,
                ckpt_interval=6, out_dir=str(tmp_path), progress=False, monitor_batch=4,
                eval=EvalConfig(episodes=4, batch=4))
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.mark.parametrize("optimizer", ["adam", "adam_keras"])
def test_resume_continues_exactly(tmp_path, particle2d, optimizer):
    full = train(_cfg(tmp_path, particle2d, run_name="full", optimizer=optimizer))
    # "killed" after the checkpoint at step 6, then resumed to 12
    part = _cfg(tmp_path, particle2d, run_name="part", steps=6, optimizer=optimizer)
    train(part)
    resumed = train(dataclasses.replace(part, steps=12), resume=True)
    a, b = _losses(full), _losses(resumed)
    assert [s for s, _ in a] == list(range(1, 13)) and [s for s, _ in b] == list(range(1, 13))
    assert a == b
    wa = load_weights(list_checkpoints(full)[-1])
    wb = load_weights(list_checkpoints(resumed)[-1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    group = load_trainer_state(list_checkpoints(resumed)[-1])["optimizer"]["param_groups"][0]
    if optimizer == "adam_keras":  # KerasAdam's global step count, carried across the resume
        assert group["step"] == 12 and group["eps"] == 1e-7


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path, particle2d):
    a = _losses(train(_cfg(tmp_path, particle2d, run_name="a", steps=4)))
    b = _losses(train(_cfg(tmp_path, particle2d, run_name="b", steps=4)))
    c = _losses(train(_cfg(tmp_path, particle2d, run_name="c", steps=4, seed=1)))
    assert a == b and a != c


def test_resume_of_a_run_written_before_a_config_field_existed(tmp_path, particle2d, capsys):
    part = _cfg(tmp_path, particle2d, run_name="old", steps=2)
    run = train(part)
    stored = json.loads((run / "config.json").read_text())
    del stored["policy"]["obs_std_eps"]  # as an older steerlab wrote it
    (run / "config.json").write_text(json.dumps(stored))
    train(dataclasses.replace(part, steps=4), resume=True)
    assert "predates the field(s) policy.obs_std_eps" in capsys.readouterr().out
    assert [s for s, _ in _losses(run)] == [1, 2, 3, 4]
    stored["policy"]["width"] = 64  # a real change is still refused
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(TrainingError, match=r"policy.width: 64 -> 32"):
        train(dataclasses.replace(part, steps=6), resume=True)


def test_rerun_without_resume_refuses_to_overwrite(tmp_path, particle2d):
    cfg = _cfg(tmp_path, particle2d, run_name="x", steps=2)
    train(cfg)
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, particle2d, monkeypatch):
    from steerlab.ebm.policy import IBCPolicy

    orig = IBCPolicy.compute_loss
    calls = {"n": 0}

    def flaky(self, batch, generator=None, step=0):
        calls["n"] += 1
        loss, m = orig(self, batch, generator, step=step)
        return (loss * float("nan"), m) if calls["n"] == 5 else (loss, m)

    monkeypatch.setattr(IBCPolicy, "compute_loss", flaky)
    cfg = _cfg(tmp_path, particle2d, run_name="nan", ckpt_interval=100)
    with pytest.raises(TrainingError, match="at step 5") as e:
        train(cfg)
    assert "step_00000004" in str(e.value)
    ckpts = list_checkpoints(cfg.run_dir())
    assert [c.name for c in ckpts] == ["step_00000004"]
    w = load_weights(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in w.values())


def test_corrupt_and_missing_checkpoint_errors(tmp_path, particle2d):
    run = train(_cfg(tmp_path, particle2d, run_name="corrupt", steps=2))
    f = list_checkpoints(run)[-1] / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(run)
    with pytest.raises(CheckpointError, match="not a run directory"):
        load_run(tmp_path / "nowhere")
    # an interrupted write (temporary directory) is never taken for a checkpoint
    (run / "checkpoints" / ".tmp-step_00000009-1").mkdir()
    assert [c.name for c in list_checkpoints(run)] == ["step_00000002"]


def test_dataset_dimension_mismatch_and_nan_errors(tmp_path, particle2d):
    with pytest.raises(DatasetError, match="n_dim=4"):
        train(_cfg(tmp_path, particle2d, run_name="dims", n_dim=4))
    d = load_episodes(str(particle2d))
    obs = d.data["obs"].copy()
    obs[7, 1] = np.nan
    eps = [{"obs": obs[s], "action": d.data["action"][s]} for s in d.episode_slices()]
    bad = tmp_path / "bad.zarr"
    write_episodes(str(bad), eps)
    with pytest.raises(DatasetError, match="obs"):
        train(_cfg(tmp_path, bad, run_name="nan-data"))


def test_a_missing_dataset_is_an_error_that_suggests_the_near_name_and_collects_nothing(tmp_path, particle2d):
    typo = particle2d.with_name("particle-2d-4.zarr")  # beside the fixture's particle-2d-40.zarr
    with pytest.raises(DatasetError) as e:
        train(_cfg(tmp_path, typo, run_name="typo", n_dim=2, episodes=40))
    msg = str(e.value)
    assert f"--dataset {typo} does not exist" in msg and f"Did you mean {particle2d}?" in msg
    assert f"`steerlab collect particle --episodes 40 --n-dim 2 --out {typo}`" in msg
    assert "drop --dataset to train on the default data/particle-2d-40.zarr (collected if missing)" in msg
    assert not typo.exists() and not (tmp_path / "typo").exists()  # no dataset, no run directory

    from steerlab.cli import main

    missing = tmp_path / "nowhere" / "d.zarr"
    with pytest.raises(SystemExit, match=r"steerlab train: error: --dataset .*nowhere/d\.zarr does not exist"):
        main(["train", "mse-particle", "--dataset", str(missing), "--out-dir", str(tmp_path), "--run-name", "cli",
              "--steps", "1", "--no-progress"])
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "cli").exists()


@pytest.mark.parametrize("format", ["zarr", "lerobot"])
def test_meta_and_report_state_the_datasets_own_episode_count(tmp_path, particle2d, format):
    """A user's store of 7 episodes, trained with --episodes at its default (2000) and 2 held out: meta.json,
    metrics.json and report.md count the episodes training loaded."""
    from steerlab.data.formats import write_dataset

    d = load_episodes(str(particle2d))
    store = tmp_path / f"mine-{format}"
    write_dataset(store, [{"obs": d.data["obs"][s], "action": d.data["action"][s]} for s in d.episode_slices()[:7]],
                  format=format)
    cfg = _cfg(tmp_path, store, run_name="mine", policy=MSEConfig(width=16), steps=3, val_episodes=2)
    assert cfg.episodes == 2000
    run = train(cfg)
    meta = json.loads((run / "meta.json").read_text())
    assert (meta["n_episodes"], meta["n_train_episodes"], meta["n_held_out_episodes"]) == (7, 5, 2)
    res = evaluate_run(run, progress=False)
    assert res["dataset"] == {"path": str(store), "episodes": 7, "train_episodes": 5, "held_out_episodes": 2}
    assert json.loads((run / "metrics.json").read_text())["dataset"] == res["dataset"]
    report = (run / "report.md").read_text()
    assert f"dataset `{store}` (7 episodes: 5 for training, 2 held out)" in report and "2000" not in report


def test_mse_and_nearest_train_and_evaluate(tmp_path, particle2d):
    from steerlab.baselines.nearest import NearestConfig

    run = train(_cfg(tmp_path, particle2d, run_name="mse", policy=MSEConfig(width=32), steps=30, lr=3e-3))
    res = evaluate_run(run, progress=False)
    assert res["episodes"] == 4 and 0.0 <= res["success_ci95"][0] <= res["success_rate"] <= res["success_ci95"][1]
    assert (run / "plots" / "rollouts.png").stat().st_size > 1000 and (run / "report.md").exists()
    run = train(_cfg(tmp_path, particle2d, run_name="nn", policy=NearestConfig(), steps=0))
    _, pol, _ = load_run(run)
    assert pol.keys.shape[0] == 40 * 50  # the table comes back from the checkpoint
    res = evaluate_run(run, progress=False)
    assert json.loads((run / "metrics.json").read_text())["successes"] == res["successes"]


def test_ibc_eval_writes_energy_landscape(tmp_path, particle2d):
    run = train(_cfg(tmp_path, particle2d, run_name="ibc-eval", steps=3))
    evaluate_run(run, progress=False)
    assert (run / "plots" / "energy.png").stat().st_size > 1000
    assert (run / "plots" / "training.png").exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, particle2d):
    """Data-parallel under torchrun (gloo, CPU): same weights as one process with the same global batch."""
    args = ["train", "mse-particle", "--dataset", str(particle2d), "--steps", "8", "--batch-size", "32",
            "--policy.dropout", "0.0", "--policy.width", "32", "--out-dir", str(tmp_path), "--no-eval",
            "--log-interval", "4", "--ckpt-interval", "8", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "steerlab.cli", *args, "--run-name", "one"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "steerlab.cli", *args, "--run-name", "two"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    w1 = load_weights(list_checkpoints(tmp_path / "one")[-1])
    w2 = load_weights(list_checkpoints(tmp_path / "two")[-1])
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4), k


def test_time_budget_stops_checkpoints_and_counts_across_resume(tmp_path, particle2d):
    cfg = _cfg(tmp_path, particle2d, run_name="budget", steps=1000, max_minutes=1e-4, eval_interval=1,
               eval=EvalConfig(episodes=2, batch=2))
    run = train(cfg)
    s = json.loads((run / "train_summary.json").read_text())
    assert s["stopped_by_budget"] and s["steps"] < 1000
    assert list_checkpoints(run)[-1].name == f"step_{s['steps']:08d}"
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval_success")]
    assert rows and float(rows[0]["train_seconds"]) < 1.0  # evaluation time is not training time
    train(cfg, resume=True)  # the budget is spent: no further step
    assert json.loads((run / "train_summary.json").read_text())["steps"] == s["steps"]
