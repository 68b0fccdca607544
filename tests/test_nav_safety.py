import math

import numpy as np
import pytest
import torch

from steerlab.envs.nav2d import Nav2DEnv, clearance, collides, to_world_frame, waypoints_to_world
from steerlab.nav.safety import (
    choose_safe, chunk_clearance, chunk_sweep, egocentric_clearance, pixel_centres, rerank, safe_threshold,
)


def test_pixel_centres_match_the_env_image_layout():
    env = Nav2DEnv()
    fwd, left = pixel_centres(env.occ_size, env.occ_window)
    np.testing.assert_allclose(fwd.numpy(), env._occ_fwd, atol=1e-7)
    np.testing.assert_allclose(left.numpy(), env._occ_left, atol=1e-7)


def test_egocentric_clearance_golden_single_pixel():
    # 4 x 4 image over a 0.4 window: pixel (0, 0) is the square fwd, left in [0.1, 0.2] x [0.1, 0.2]
    occ = torch.zeros(1, 4, 4)
    occ[0, 0, 0] = 1
    pts = torch.tensor([[[0.0, 0.0], [0.15, 0.0], [0.15, 0.15], [0.25, 0.3], [-0.2, 0.15]]])
    got = egocentric_clearance(occ, pts, window=0.4, reach=1.0)[0]
    want = [math.hypot(0.1, 0.1), 0.1, 0.0, math.hypot(0.05, 0.1), 0.3]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # nothing occupied: capped at reach
    assert egocentric_clearance(torch.zeros(1, 4, 4), pts, window=0.4, reach=0.07).eq(0.07).all()


def test_egocentric_clearance_agrees_with_the_map_within_the_pixel_error():
    env = Nav2DEnv()
    errs = []
    for seed in range(12):
        o, _ = env.reset(seed=seed)
        pts = np.random.default_rng(seed).uniform(-0.12, 0.12, (1, 300, 2))  # obstacles within 0.1 are in view
        ego = egocentric_clearance(o["occupancy"][None], pts, reach=0.1).numpy()[0]
        true = clearance(env.map.grid, to_world_frame(o["state"].astype(np.float64), pts[0]), reach=0.1)
        errs.append(ego - true)
    err = np.concatenate(errs)
    px = env.occ_window / env.occ_size
    assert np.abs(err).max() <= px / math.sqrt(2) + 1e-3  # the image point-samples the map's cells
    assert abs(err.mean()) < 0.003


def test_chunk_sweep_traces_the_waypoints_from_the_robot():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 16, generator=g) * 2 - 1
    pts = chunk_sweep(a, spacing=0.005)
    state = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]]).expand(3, 6)
    wp = waypoints_to_world(state, a)  # heading 0 at the origin: world = robot frame
    assert torch.equal(pts[:, 0], torch.zeros(3, 2))
    torch.testing.assert_close(pts[:, -1], wp[:, -1])
    step = (pts[:, 1:] - pts[:, :-1]).norm(dim=-1)
    assert step.max() <= 0.005 + 1e-6
    # every waypoint is on the swept path: one every ceil(max_step sqrt(2) / spacing) = 12 points
    assert pts.shape[1] == 8 * 12 + 1
    torch.testing.assert_close(pts[:, 12::12], wp)
    # out-of-range components are clipped as the env executes them
    torch.testing.assert_close(chunk_sweep(a * 3)[:, -1], chunk_sweep(a.mul(3).clamp(-1, 1))[:, -1])


def test_chunk_clearance_flags_the_chunks_the_env_would_stop():
    env = Nav2DEnv()
    hits = agree = 0
    for seed in range(20):
        o, _ = env.reset(seed=seed)
        # chunks that stay in view (reach <= 8 * 0.45 * 0.04 * sqrt(2) = 0.20 of the image's 0.25 half-width)
        a = torch.as_tensor(np.random.default_rng(seed).uniform(-0.45, 0.45, (8, 16)), dtype=torch.float32)
        c = chunk_clearance(torch.as_tensor(o["occupancy"][None]).repeat(8, 1, 1), a).numpy()
        st = np.repeat(o["state"][None].astype(np.float64), 8, 0)
        path = to_world_frame(st, chunk_sweep(a).numpy().astype(np.float64))
        truth = np.array([collides(env.map.grid, p).any() for p in path])
        flagged = c < env.robot_radius
        hits += truth.sum()
        agree += (flagged == truth).sum()
        # with the margin, every true collision is flagged unsafe
        assert (c[truth] < safe_threshold(env.robot_radius, 0.012)).all()
    assert hits > 5 and agree / 160 > 0.9


def test_choose_safe_takes_the_first_safe_draw_else_the_clearest():
    clear = torch.tensor([[0.01, 0.04, 0.05], [0.031, 0.01, 0.05], [0.01, 0.02, 0.015]])
    assert choose_safe(clear, 0.03).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="margin"):
        safe_threshold(0.02, -0.01)


def test_rerank_picks_rows_and_names_bad_shapes():
    occ = torch.zeros(2, 32, 32)
    occ[:, :, :12] = 1  # a wall on the robot's left, 0.0625 from it
    left, right = torch.zeros(16), torch.zeros(16)
    left[1::2], right[1::2] = 0.5, -0.5  # drift left / right, 0.16 in all
    cand = torch.stack([left, right, left, left])  # row 0: left then right; row 1: left twice
    chosen, pick, clear = rerank(occ, cand, 2, safe_threshold(0.02, 0.01))
    assert pick.tolist() == [1, 0] and clear.shape == (2, 2)  # row 1 has no safe draw: its clearest (equal) first
    torch.testing.assert_close(chosen, torch.stack([right, left]))
    with pytest.raises(ValueError, match="B \\* k"):
        rerank(occ, cand[:3], 2, 0.03)
    with pytest.raises(ValueError, match="occ must be"):
        egocentric_clearance(torch.zeros(2, 32), torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="points must be"):
        egocentric_clearance(occ, torch.zeros(3, 3, 2))
