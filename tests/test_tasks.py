"""The task registry and protocol: unknown names, a task added from outside the package training and evaluating
through the one loop, normalizers fitted on the training split only, and no task-name branch outside the task
modules."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import steerlab
from steerlab.baselines.mse import MSEConfig, MSEPolicy
from steerlab.baselines.nearest import NearestConfig, NearestPolicy
from steerlab.cli import main
from steerlab.data.zarr_io import load_episodes, write_episodes
from steerlab.eval.rollout import evaluate_policy
from steerlab.eval.run import evaluate_run, load_run
from steerlab.generative.policy import DiffusionConfig, GenerativePolicy
from steerlab.tasks import ParticleTask, Task, get_task, register_task, task_names, unregister_task
from steerlab.train.config import EvalConfig, TrainConfig
from steerlab.train.loop import train

SRC = Path(steerlab.__file__).resolve().parent


def test_builtin_tasks_and_unknown_task_error(capsys):
    assert {"particle", "nav2d", "particle-wm"} <= set(task_names())
    assert all(isinstance(get_task(n), Task) and get_task(n).name == n for n in task_names())
    with pytest.raises(ValueError, match=r"unknown task \(env\) 'nope'; known tasks: particle, nav2d, particle-wm"):
        get_task("nope")
    with pytest.raises(ValueError, match="known tasks"):
        TrainConfig(env="nope").run_dir()
    with pytest.raises(SystemExit) as e:  # `collect` offers the tasks that have a collector, and no other
        main(["collect", "particle-wm"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "particle-wm" in err and "particle" in err.replace("particle-wm", "") and "nav2d" in err


def test_register_task_refuses_a_taken_name_and_a_non_task():
    with pytest.raises(ValueError, match="already registered"):
        register_task("particle", ParticleTask("particle"))
    with pytest.raises(TypeError, match="needs a steerlab.tasks.base.Task"):
        register_task("x", object())
    with pytest.raises(ValueError, match="must agree"):
        register_task("x", ParticleTask("y"))


def test_task_dims_and_names():
    assert get_task("particle").dims(3)[:2] == (12, 3)
    cfg = TrainConfig(env="nav2d", episodes=5, preset="p")
    assert str(cfg.run_dir()) == "runs/p-s0" and str(TrainConfig(preset="p", n_dim=3).run_dir()) == "runs/p-3d-s0"
    assert str(TrainConfig(env="particle", n_dim=3, episodes=7, multimodal=True).dataset_path()) == \
        "data/particle-3d-7-mm.zarr"
    assert str(TrainConfig(env="particle-wm", n_dim=2, episodes=7).dataset_path()) == "data/particle-wm-2d-7.zarr"


@pytest.fixture
def short_particle():
    """A task defined outside the package: the particle env cut to 10 control steps."""
    task = register_task("particle-short", ParticleTask("particle-short", env_kwargs={"n_steps": 10}))
    yield task
    unregister_task("particle-short")


def test_a_registered_task_trains_and_evaluates_through_the_one_loop(tmp_path, short_particle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(env="particle-short", preset="toy", episodes=6, policy=MSEConfig(width=16, depth=2), steps=3,
                      batch_size=8, log_interval=1, ckpt_interval=3, out_dir=str(tmp_path / "runs"), progress=False,
                      eval=EvalConfig(episodes=3, batch=2))
    run_dir = train(cfg)  # collects its default dataset first (ensure_dataset)
    assert run_dir == tmp_path / "runs" / "toy-2d-s0" and (tmp_path / "data" / "particle-short-2d-6.zarr").exists()
    res = evaluate_run(run_dir, progress=False)
    assert res["episodes"] == 3 and "mean_return" in res
    assert (run_dir / "report.md").read_text().startswith("# toy on particle-short 2-D\n")
    assert (run_dir / "plots" / "rollouts.png").exists()
    cfg2, policy, _ = load_run(run_dir)
    _, eps = evaluate_policy(policy, cfg2, episodes=3, progress=False, return_episodes=True)
    assert [e["length"] for e in eps] == [10, 10, 10]  # the task's own env kwargs (the particle never terminates)


def _dataset(path, held_out_scale: float):
    """5 episodes of 4 steps; the last two are scaled by ``held_out_scale``."""
    rng = np.random.default_rng(0)
    eps = [{"obs": rng.random((4, 8)).astype(np.float32), "action": rng.random((4, 2)).astype(np.float32)}
           for _ in range(5)]
    for e in eps[3:]:
        e["obs"] *= held_out_scale
        e["action"] *= held_out_scale
    write_episodes(path, eps)
    return path


@pytest.mark.parametrize("make", [lambda: MSEPolicy(MSEConfig(width=8, depth=2, stats_samples=None), 8, 2),
                                  lambda: GenerativePolicy(DiffusionConfig(horizon=2, n_action_steps=1), 8, 2),
                                  lambda: NearestPolicy(NearestConfig(), 8, 2)])
def test_held_out_episodes_do_not_affect_the_normalizers(tmp_path, make):
    task = get_task("particle")
    cfg = TrainConfig(n_dim=2, val_episodes=2)
    fitted = []
    for scale in (1.0, 100.0):
        policy = make()
        train_ds, val_ds = task.training_windows(cfg, _dataset(tmp_path / f"d{scale}.zarr", scale), policy, 1)
        assert val_ds is not None and len(val_ds) > 0
        fitted.append({k: v.clone() for k, v in policy.named_buffers()})  # normalizers, bounds, tables
    assert fitted[0].keys() == fitted[1].keys()
    assert all(torch.equal(fitted[0][k], fitted[1][k]) for k in fitted[0])
    # and they are those of the three training episodes alone
    alone = make()
    rng = np.random.default_rng(0)
    eps = [(rng.random((4, 8)), rng.random((4, 2))) for _ in range(5)][:3]
    alone.fit_normalizers({"obs": np.concatenate([o for o, _ in eps]).astype(np.float32),
                           "action": np.concatenate([a for _, a in eps]).astype(np.float32)},
                          action_low=task.dims(2).action_low, action_high=task.dims(2).action_high,
                          episode_ends=np.array([4, 8, 12]), seed=0)
    assert all(torch.equal(fitted[0][k], v) for k, v in alone.named_buffers())


def test_particle_policies_need_the_action_bounds():
    with pytest.raises(ValueError, match="needs action_low and action_high"):
        MSEPolicy(MSEConfig(), 8, 2).fit_normalizers({"obs": np.zeros((3, 8)), "action": np.zeros((3, 2))})


# a comparison with a task's name, a membership test in a tuple of task names, or a branch on cfg.env
TASK_BRANCH = re.compile(r"""(==|!=)\s*["'](particle|nav2d|particle-wm)["']|["'](particle|nav2d|particle-wm)["']\s*(==|!=)"""
                         r"""|MODEL_TASKS|\.env\s*(==|!=|in\b|not in\b)|\btask\s*(==|!=)""")


def test_no_task_name_branch_outside_the_task_modules():
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "tasks":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if TASK_BRANCH.search(line):
                hits.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not hits, "task-name branches outside steerlab/tasks/ (add a Task method instead):\n" + "\n".join(hits)


def test_collect_particle_takes_its_own_options(tmp_path, capsys):
    main(["collect", "particle", "--episodes", "2", "--n-dim", "3", "--workers", "1", "--out", str(tmp_path / "p.zarr")])
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["path"] == str(tmp_path / "p.zarr")
    assert load_episodes(tmp_path / "p.zarr").data["action"].shape[1] == 3
    with pytest.raises(SystemExit):  # a nav2d option is not a particle option
        main(["collect", "particle", "--family", "rooms", "--out", str(tmp_path / "q.zarr")])

