"""MetaWorld: the env's spaces and seeding, the collector (zarr and LeRobot, DART labels, the via-point variant),
and evaluation of the scripted expert and of a small diffusion policy through the batched evaluator."""

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
