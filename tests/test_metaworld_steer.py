"""MetaWorld steering: the predicted end-effector path against the simulator, golden values of the path
objectives, energy guidance, a policy whose chunks are chosen by a search, and rollout videos by replay."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from steerlab.steer.metaworld import (
    ACTION_SCALE,
    BallPenetration,
    BoxPenetration,
    ChunkChoicePolicy,
    PointDistance,
    mocap_path,
)
from steerlab.steer.guidance import guided_denoiser


def test_mocap_path_golden():
    hand = torch.tensor([[0.0, 0.6, 0.2]])
    chunk = torch.tensor([[[1.0, 0.0, 0.0, -1.0], [1.0, 0.5, 0.0, -1.0], [0.0, 0.0, -1.0, 1.0]]])
    p = mocap_path(hand, chunk)
    expected = torch.tensor([[[0.01, 0.6, 0.2], [0.02, 0.605, 0.2], [0.02, 0.605, 0.19]]])
    assert torch.allclose(p, expected, atol=1e-7)
    assert mocap_path(hand, chunk, steps=2).shape == (1, 2, 3)


def test_box_and_ball_penetration_golden():
    hand = torch.tensor([[0.0, 0.0, 0.0]])
    chunk = torch.zeros(1, 2, 4)
    chunk[0, :, 0] = 1.0  # path points (0.01, 0, 0), (0.02, 0, 0)
    box = BoxPenetration(torch.tensor([[0.02, 0.0, 0.0]]), [0.005, 0.03, 0.03], hand, sharpness=1000.0)
    # depths: min(0.005 - 0.01, 0.03, 0.03) = -0.005 and min(0.005, 0.03, 0.03) = 0.005
    d = torch.tensor([-0.005, 0.005], dtype=torch.float64)
    want = (torch.nn.functional.softplus(1000 * d) / 1000).sum()
    assert torch.allclose(box(chunk).double(), want[None], rtol=1e-5)
    ball = BallPenetration(torch.tensor([[0.02, 0.0, 0.0]]), 0.015, hand, sharpness=1000.0)
    d = torch.tensor([0.015 - 0.01, 0.015 - 0.0], dtype=torch.float64)
    assert torch.allclose(ball(chunk).double(), (torch.nn.functional.softplus(1000 * d) / 1000).sum()[None], rtol=1e-5)
    far = torch.zeros(1, 2, 4)
    far[0, :, 1] = -1.0  # moves away along -y: stays out of both
    assert box(far).item() < 1e-6 and ball(far).item() < 1e-6
    with pytest.raises(ValueError, match=r"hand must be \[B, 3\]"):
        mocap_path(torch.zeros(3), chunk)
    with pytest.raises(ValueError, match=r"center must be \[B, 3\]"):
        BallPenetration(torch.zeros(3), 0.1, hand)


def test_point_distance_is_the_closest_approach():
    hand = torch.tensor([[0.0, 0.0, 0.0]])
    chunk = torch.zeros(1, 3, 4)
    chunk[0, :, 0] = 1.0  # x = 0.01, 0.02, 0.03
    obj = PointDistance(torch.tensor([[0.02, 0.01, 0.0]]), hand)
    assert obj(chunk).item() == pytest.approx(0.01, abs=1e-7)


def test_ball_gradient_pushes_the_path_sideways():
    # a path passing just off-centre gets a gradient away from the centre, not only back along the way
    hand = torch.tensor([[0.0, 0.005, 0.0]])
    chunk = torch.zeros(1, 4, 4)
    chunk[0, :, 0] = 1.0
    chunk.requires_grad_()
    BallPenetration(torch.tensor([[0.02, 0.0, 0.0]]), 0.01, hand)(chunk).sum().backward()
    assert (chunk.grad[0, :, 1] < 0).any()  # descending the cost raises y: away from the centre (y = 0)


def _tiny_policy(prediction_type="sample"):
    from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, GenerativePolicy

    cfg = DiffusionConfig(horizon=4, n_obs_steps=1, n_action_steps=2, num_train_timesteps=10, num_inference_steps=3,
                          prediction_type=prediction_type, sampler="ddim",
                          denoiser=DenoiserConfig(width=32, depth=2, time_embed_dim=16))
    torch.manual_seed(0)
    pol = GenerativePolicy(cfg, 5, 4)
    pol.set_action_bounds(-np.ones(4), np.ones(4))
    return pol


def test_guidance_lowers_the_cost_and_needs_a_clean_chunk_policy():
    from steerlab.sampling import no_noise

    pol = _tiny_policy()
    obs = torch.randn(3, 1, 5)
    cond = pol.condition(obs)
    z = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0.5, -0.5, 0.5, 0.0])
    cost = lambda c: ((c - target) ** 2).sum((1, 2))  # noqa: E731
    with torch.no_grad():
        plain = pol.unnormalize_actions(pol.sample(cond, z, noise=no_noise()))
        guided = pol.unnormalize_actions(pol.sample(cond, z, noise=no_noise(),
                                                    denoiser=guided_denoiser(pol, cond, cost, 0.1)))
    assert (cost(guided) < cost(plain)).all()
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        guided_denoiser(_tiny_policy("epsilon"), cond, cost, 0.1)


def test_chunk_choice_policy_executes_the_chosen_chunks_and_allows_gradients():
    pol = _tiny_policy()
    calls = []

    def choose(hist):
        assert torch.is_grad_enabled()  # a search may optimize inside select_action's no_grad
        calls.append(hist.shape)
        return torch.full((hist.shape[0], 4, 4), 0.25)

    seen = []
    p = ChunkChoicePolicy(pol, choose, observe=lambda o: seen.append(o.clone()))
    p.reset()
    acts = [p.select_action(torch.full((2, 5), float(t))) for t in range(3)]
    assert calls == [(2, 1, 5), (2, 1, 5)]  # a chunk per n_action_steps = 2 actions
    assert [float(o[0, 0]) for o in seen] == [0.0, 1.0, 2.0]  # every step's observation, decision or not
    assert all(torch.allclose(a, torch.full((2, 4), 0.25)) for a in acts)


mw = pytest.importorskip("metaworld", reason="MetaWorld is not installed: pip install -c constraints.txt -e '.[metaworld]'")


def test_mocap_path_predicts_the_simulated_hand():
    from steerlab.envs.metaworld import HAND, make_metaworld_env

    env = make_metaworld_env("reach-v3", 100_000)
    obs, _ = env.reset()
    for _ in range(20):  # the hand settles under a zero action
        obs, *_ = env.step(np.zeros(4, np.float32))
    a = np.tile(np.array([0.5, 0.3, -0.2, 0.0], np.float32), (40, 1))
    hands = [obs[HAND]]
    for x in a:
        obs, *_ = env.step(x)
        hands.append(obs[HAND])
    pred = mocap_path(torch.tensor(hands[0])[None], torch.tensor(a)[None])[0].numpy()
    # the hand lags the mocap target by a few steps: 3 cm behind after 0.23 m of travel, in the same direction
    moved, predicted = hands[-1] - hands[0], pred[-1] - hands[0]
    assert np.linalg.norm(pred[-1] - hands[-1]) < 0.035
    assert moved @ predicted / (np.linalg.norm(moved) * np.linalg.norm(predicted)) > 0.99
    assert np.linalg.norm(predicted) == pytest.approx(40 * ACTION_SCALE * np.linalg.norm(a[0, :3]), rel=1e-5)


RENDER = """
import numpy as np, sys
from steerlab.eval.metaworld import evaluate_metaworld, expert_act_fn
from steerlab.eval.video import render_metaworld_episode
e = evaluate_metaworld(expert_act_fn("reach-v3"), "reach-v3", [100000], max_episode_steps=12)["episodes"][0]
r = render_metaworld_episode("reach-v3", 100000, e["actions"], sys.argv[1], hand=e["hand"], every=4, size=(64, 48),
                             boxes=[(e["hand"][6], np.full(3, 0.02), (1, 0, 0, 0.3))])
assert r["replay_max_hand_error"] == 0.0 and r["frames"] == 4, r
try:
    render_metaworld_episode("reach-v3", 100000, e["actions"], sys.argv[1] + ".bad.gif", hand=e["hand"] + 0.01)
except RuntimeError as err:
    assert "replay" in str(err)
else:
    raise AssertionError("a replay that leaves the recorded hand path must not pass")
"""


def test_video_replays_the_episode(tmp_path):
    out = tmp_path / "ep.gif"
    env = {**os.environ, "MUJOCO_GL": "egl"}
    r = subprocess.run([sys.executable, "-c", RENDER, str(out)], capture_output=True, text=True, env=env)
    if r.returncode != 0 and ("OpenGL" in r.stderr or "EGL" in r.stderr or "gladLoadGL" in r.stderr):
        pytest.skip(f"no offscreen OpenGL here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    im = Image.open(out)
    assert im.size == (64, 48) and im.n_frames == 4
