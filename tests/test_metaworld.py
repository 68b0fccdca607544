"""MetaWorld: the env's spaces and seeding, the collector (zarr and LeRobot, DART labels, the via-point variant),
and evaluation of the scripted expert and of a small diffusion policy through the batched evaluator."""

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("metaworld", reason="MetaWorld is not installed: pip install -c constraints.txt -e '.[metaworld]'")

from steerlab.data import open_dataset  # noqa: E402
from steerlab.data.collect_metaworld import collect_metaworld  # noqa: E402
from steerlab.envs.metaworld import (  # noqa: E402
    ACT_DIM,
    EVAL_SEED0,
    OBS_DIM,
    make_metaworld_env,
    scripted_expert,
)
from steerlab.eval.metaworld import eval_seeds, evaluate_metaworld, expert_act_fn  # noqa: E402

TASK = "push-v3"


def test_env_spaces_and_bounds():
    env = make_metaworld_env(TASK, seed=0, max_episode_steps=5)
    obs, _ = env.reset()
    assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32
    assert env.observation_space.shape == (OBS_DIM,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (ACT_DIM,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    steps, done = 0, False
    while not done:
        obs, r, term, trunc, info = env.step(np.full(ACT_DIM, 5.0))  # out of range: clipped
        steps += 1
        done = term or trunc
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert steps == 5 and trunc and "first_success_step" in info


def test_seeds_fix_the_variation():
    a = make_metaworld_env(TASK, seed=3).reset()[0]
    b = make_metaworld_env(TASK, seed=3).reset()[0]
    c = make_metaworld_env(TASK, seed=4).reset()[0]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    env = make_metaworld_env(TASK, seed=3)
    with pytest.raises(ValueError, match="seed=5"):
        env.reset(seed=5)


def test_unknown_task_lists_the_names():
    with pytest.raises(ValueError, match="valid names:.*push-v3"):
        make_metaworld_env("psuh-v3", seed=0)


def test_missing_metaworld_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "metaworld", None)
    with pytest.raises(ImportError, match=r"\.\[metaworld\]"):
        make_metaworld_env(TASK, seed=0)


def test_collector_zarr_with_dart_records_clean_labels(tmp_path):
    res = collect_metaworld(tmp_path / "push.zarr", TASK, episodes=2, action_noise=0.3, noise_prob=0.5, workers=1,
                            progress=False)
    assert res["episodes_written"] == 2 and res["perturbed_steps"] > 0
    data = open_dataset(tmp_path / "push.zarr")
    obs, act = data.data["obs"], data.data["action"]
    assert obs.shape == (res["steps"], OBS_DIM) and obs.dtype == np.float32
    assert act.shape == (res["steps"], ACT_DIM) and act.dtype == np.float32
    assert len(data.episode_ends) == 2 and np.abs(act).max() <= 1
    expert = scripted_expert(TASK)
    np.testing.assert_array_equal(np.stack([expert(o) for o in obs]), act)


def test_collector_lerobot_via_points(tmp_path):
    res = collect_metaworld(tmp_path / "push-mm", TASK, episodes=2, multimodal=True, format="lerobot", workers=1,
                            progress=False)
    data = open_dataset(tmp_path / "push-mm")
    assert data.data["obs"].shape == (res["steps"], OBS_DIM) and data.data["obs"].dtype == np.float32
    assert data.data["action"].shape == (res["steps"], ACT_DIM) and data.data["action"].dtype == np.float32
    for i in range(data.n_episodes):
        ep = data.episode(i)
        assert len(set(ep["via_index"].tolist())) == 1
        dist = np.linalg.norm(ep["obs"][:, :3] - ep["via_point"][0], axis=1)
        assert dist.min() <= 0.02 + 1e-6, f"episode {i} never came within 2 cm of its via-point ({dist.min():.3f} m)"


def test_collector_rejects_evaluation_seeds(tmp_path):
    with pytest.raises(ValueError, match="evaluation seeds"):
        collect_metaworld(tmp_path / "x.zarr", TASK, episodes=2, seed=EVAL_SEED0 - 1, progress=False)


def test_expert_succeeds_through_the_evaluator():
    res = evaluate_metaworld(expert_act_fn(TASK), TASK, eval_seeds(2))
    assert res["successes"] == 2, res
    for e in res["episodes"]:
        assert e["first_success_step"] == e["length"]  # terminate_on_success ends the episode there
        assert e["hand"].shape == (e["length"] + 1, 3)


def test_policy_history_holds_past_observations():
    from steerlab.policy import Policy

    class Recorder(Policy):
        n_obs_steps = 2

        def __init__(self):
            super().__init__()
            self.seen = []

        def predict_action_chunk(self, obs, generator=None):
            self.seen.append(obs.clone())
            return torch.full((obs.shape[0], 1, ACT_DIM), 0.5)

    pol = Recorder()
    res = evaluate_metaworld(pol, TASK, eval_seeds(2), max_episode_steps=4, record_obs=True)
    for i, e in enumerate(res["episodes"]):
        for t in range(1, 4):  # at step t the history is (obs[t-1], obs[t])
            np.testing.assert_array_equal(pol.seen[t][i].numpy(), e["obs"][t - 1: t + 1])


def test_small_diffusion_policy_runs_an_episode(tmp_path):
    from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, GenerativePolicy

    collect_metaworld(tmp_path / "d.zarr", TASK, episodes=2, workers=1, progress=False)
    data = open_dataset(tmp_path / "d.zarr")
    cfg = DiffusionConfig(horizon=4, n_obs_steps=2, n_action_steps=2, num_train_timesteps=10, num_inference_steps=3,
                          denoiser=DenoiserConfig(width=32, depth=2, time_embed_dim=16))
    torch.manual_seed(0)
    pol = GenerativePolicy(cfg, OBS_DIM, ACT_DIM)
    pol.fit_normalizers(data.data, action_low=-np.ones(ACT_DIM), action_high=np.ones(ACT_DIM),
                        episode_ends=data.episode_ends)
    res = evaluate_metaworld(pol, TASK, eval_seeds(2), max_episode_steps=50,
                             generator=torch.Generator().manual_seed(0))
    for e in res["episodes"]:
        assert 1 <= e["length"] <= 50 and e["actions"].shape == (e["length"], ACT_DIM)
        assert np.abs(e["actions"]).max() <= 1


# ---------------------------------------------------------------------------------------------- MetaWorld as a task
from steerlab.cli import main  # noqa: E402
from steerlab.data.zarr_io import DatasetError  # noqa: E402
from steerlab.tasks import MetaWorldTask, get_task, register_task, unregister_task  # noqa: E402
from steerlab.train.config import TrainConfig  # noqa: E402


@pytest.fixture
def quick_reach():
    """reach-v3 with evaluation episodes cut to 20 steps (the task's own cap)."""
    task = register_task("mw-quick", MetaWorldTask("mw-quick", "reach-v3", max_episode_steps=20))
    yield task
    unregister_task("mw-quick")


def test_a_run_names_a_metaworld_task_as_family_slash_task():
    task = get_task("metaworld/push-v3")
    assert task.name == "metaworld/push-v3" and task.task == "push-v3" and task.dims(2)[:2] == (OBS_DIM, ACT_DIM)
    assert get_task("metaworld/push-v3") is task  # built once
    cfg = TrainConfig(env="metaworld/push-v3", episodes=50, multimodal=True, demo_noise=0.1, preset="p")
    assert str(cfg.dataset_path()) == "data/metaworld-push-v3-50-mm-dart0.1p0.5.zarr"
    assert str(cfg.run_dir()) == "runs/p-push-v3-mm-dart0.1-s0"  # its own directory, apart from the plain demos'
    assert str(TrainConfig(env="metaworld/push-v3", preset="p").run_dir()) == "runs/p-push-v3-s0"
    assert task.collect_command(cfg, "d.zarr") == ["steerlab", "collect", "metaworld", "--task", "push-v3", "--episodes",
                                                    "50", "--multimodal", "--action-noise", "0.1", "--out", "d.zarr"]
    with pytest.raises(ValueError, match="valid names:.*push-v3"):
        get_task("metaworld/psuh-v3")
    with pytest.raises(ValueError, match="name one task, e.g. --env metaworld/push-v3"):
        TrainConfig(env="metaworld").dataset_path()
    with pytest.raises(ValueError, match="has no variants"):
        get_task("particle/x")


def test_collect_train_and_evaluate_through_the_cli(tmp_path, quick_reach, capsys):
    data = tmp_path / "reach.zarr"
    main(["collect", "metaworld", "--task", "reach-v3", "--episodes", "2", "--workers", "1", "--out", str(data)])
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["episodes_written"] == 2
    main(["train", "diffusion-metaworld", "--env", "mw-quick", "--dataset", str(data), "--steps", "3",
          "--batch-size", "8", "--log-interval", "1", "--ckpt-interval", "3", "--out-dir", str(tmp_path / "runs"),
          "--eval.episodes", "1", "--no-progress"])
    run = tmp_path / "runs" / "diffusion-metaworld-reach-v3-s0"
    m = json.loads((run / "metrics.json").read_text())
    assert m["episodes"] == 1 and m["seeds"] == [EVAL_SEED0] and m["train"]["steps"] == 3
    assert m["metaworld_task"] == "reach-v3" and m["max_episode_steps"] == 20 and 1 <= m["mean_length"] <= 20
    assert 0.0 <= m["success_rate"] <= 1.0 and len(m["success_ci95"]) == 2 and "mean_first_success_step" in m
    report = (run / "report.md").read_text()
    assert report.startswith("# diffusion-metaworld on mw-quick\n") and "(limit 20)" in report
    assert (run / "plots" / "rollouts.png").stat().st_size > 0


def test_train_from_a_lerobot_dataset(tmp_path, capsys):
    data = tmp_path / "reach-lerobot"
    main(["collect", "metaworld", "--task", "reach-v3", "--episodes", "2", "--workers", "1", "--format", "lerobot",
          "--out", str(data)])
    main(["train", "mse-metaworld", "--env", "metaworld/reach-v3", "--dataset", str(data), "--steps", "2",
          "--batch-size", "8", "--out-dir", str(tmp_path / "runs"), "--run-name", "r", "--no-progress", "--no-eval"])
    meta = json.loads((tmp_path / "runs" / "r" / "meta.json").read_text())
    assert meta["dataset"] == str(data) and meta["obs_dim"] == OBS_DIM and meta["n_windows"] > 0
    assert (tmp_path / "runs" / "r" / "train_summary.json").exists()
    from steerlab.baselines.mse import MSEConfig, MSEPolicy

    with pytest.raises(DatasetError, match="holds reach-v3 demonstrations.*--env metaworld/reach-v3"):
        get_task("metaworld/push-v3").training_windows(TrainConfig(), data, MSEPolicy(MSEConfig(), OBS_DIM, ACT_DIM), 1)
