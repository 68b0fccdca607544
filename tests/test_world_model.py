"""World-model plumbing: actuation-noise wrapper, world-model arrays, the particle-wm task."""

import numpy as np
import pytest

from steerlab import tasks
from steerlab.data.collect_wm import WM_HORIZON, world_model_arrays
from steerlab.envs.wrappers import ActionNoise
from steerlab.train.config import TrainConfig


def _run(env, seed, actions):
    env.reset(seed=seed)
    out = []
    for a in actions:
        o, _, _, _, info = env.step(np.asarray(a, np.float32))
        out.append((o["pos_agent"].copy(), info.get("applied_action")))
    return out


def test_action_noise_zero_std_matches_plain_env():
    acts = np.random.default_rng(0).random((10, 2))
    plain = _run(tasks.make_env("particle", 2), 3, acts)
    noisy = _run(ActionNoise(tasks.make_env("particle", 2), 0.0), 3, acts)
    for (p, _), (q, applied) in zip(plain, noisy):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_allclose(noisy[-1][1], acts[-1].astype(np.float32))


def test_action_noise_seeded_and_has_the_right_scale():
    import gymnasium as gym

    acts = np.full((400, 2), 0.5)
    env = ActionNoise(gym.make(tasks.get_task("particle").env_id, n_dim=2, n_steps=1000), 0.05)
    a = _run(env, 5, acts)
    b = _run(env, 5, acts)
    c = _run(env, 6, acts)
    applied = np.stack([x[1] for x in a])
    np.testing.assert_array_equal(applied, np.stack([x[1] for x in b]))  # same seed, same noise
    assert not np.allclose(applied, np.stack([x[1] for x in c]))
    dev = applied - 0.5
    assert abs(dev.std() - 0.05) < 0.005 and abs(dev.mean()) < 0.006
    env.reset(seed=5)
    env.reseed([5, 1])
    o, *_ = env.step(np.full(2, 0.5, np.float32))
    assert not np.allclose(o["pos_agent"], a[0][0])  # another noise stream from the same state


def test_action_noise_rejects_bad_std():
    with pytest.raises(ValueError, match="std"):
        ActionNoise(tasks.make_env("particle", 2), -1.0)


def test_world_model_arrays_layout_and_padding():
    obs = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    actions = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    positions = np.array([[0, 0], [1, 1], [2, 2]], np.float32)
    (ep,) = world_model_arrays([{"obs": obs, "actions": actions, "positions": positions}], horizon=3)
    assert ep["obs"].shape == (2, 8 + 6) and ep["action"].shape == (2, 2)
    np.testing.assert_array_equal(ep["obs"][0, :8], obs[0])
    np.testing.assert_allclose(ep["obs"][0, 8:], [0.1, 0.2, 0.3, 0.4, 0.3, 0.4])  # plan t..t+2, last repeated
    np.testing.assert_allclose(ep["obs"][1, 8:], [0.3, 0.4, 0.3, 0.4, 0.3, 0.4])
    np.testing.assert_array_equal(ep["action"], positions[1:])  # the position after each step
    with pytest.raises(ValueError, match="line up"):
        world_model_arrays([{"obs": obs[:2], "actions": actions, "positions": positions}])


def test_particle_wm_task(tmp_path):
    obs_dim, act_dim, lo, hi = tasks.dims("particle-wm", 2)
    assert (obs_dim, act_dim) == (8 + WM_HORIZON * 2, 2)
    assert lo.tolist() == [-0.5, -0.5] and hi.tolist() == [1.5, 1.5]
    with pytest.raises(ValueError, match="no environment"):
        tasks.make_env("particle-wm", 2)
    with pytest.raises(FileNotFoundError, match="collect_wm"):
        tasks.get_task("particle-wm").ensure_dataset(TrainConfig(env="particle-wm", episodes=10), tmp_path / "missing.zarr")


def test_rollout_records_observations_and_actions():
    import torch

    from steerlab.eval.rollout import rollout
    from steerlab.generative.policy import FlowConfig, GenerativePolicy

    policy = GenerativePolicy(FlowConfig(num_inference_steps=2), obs_dim=8, act_dim=2)
    rng = np.random.default_rng(0)
    policy.fit_normalizers({"obs": rng.random((50, 8)), "action": rng.random((50, 2))}, action_low=np.zeros(2),
                           action_high=np.ones(2))
    (ep,) = rollout(policy, "particle", 2, [11], generator=torch.Generator().manual_seed(0))
    assert ep["obs"].shape == (51, 8) and ep["actions"].shape == (50, 2)
    np.testing.assert_allclose(ep["obs"][:, :2], ep["positions"], atol=1e-6)
