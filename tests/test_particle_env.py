import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import steerlab.envs  # noqa: F401  (registers steerlab/Particle-v0)
from steerlab.envs.particle import OBS_KEYS, ParticleEnv, ParticleOracle, flatten_obs


def _run_oracle(env, oracle, seed):
    obs, _ = env.reset(seed=seed)
    oracle.reset()
    done, ret = False, 0.0
    while not done:
        obs, r, term, trunc, info = env.step(oracle(obs))
        ret += r
        done = term or trunc
    return info, ret


# ----------------------------------------------------------------------------- golden dynamics
# Literal values from a separate scalar script applying, per control step, 10 sub-steps of
#   u = 10 (a - x) - 5 v ;  x <- x + 0.005 v (old v) ;  v <- v + 0.005 u
# (the N dimensions are independent, so each dimension is a scalar recurrence).

def test_golden_one_substep_pair_by_hand():
    env = ParticleEnv(n_dim=1, repeat_actions=2)
    env.reset(seed=0)
    env.set_state(pos_agent=[0.2], vel_agent=[0.0], pos_first_goal=[0.5], pos_second_goal=[0.5])
    env.step(np.array([0.7]))  # float64 action: exact arithmetic check
    # sub-step 1: u = 5       -> x = 0.2,                      v = 0.025
    # sub-step 2: u = 4.875   -> x = 0.2 + 0.025*0.005 = 0.200125, v = 0.025 + 0.024375 = 0.049375
    np.testing.assert_allclose(env.pos_agent, [0.200125], rtol=0, atol=1e-12)
    np.testing.assert_allclose(env.vel_agent, [0.049375], rtol=0, atol=1e-12)


def test_golden_dynamics_1d():
    env = ParticleEnv(n_dim=1)
    env.reset(seed=0)
    env.set_state(pos_agent=[0.2], vel_agent=[0.0], pos_first_goal=[0.5], pos_second_goal=[0.5])
    expected = [
        (0.2052597449197795, 0.22298350138905582),
        (0.21620069244883774, 0.21316721442064102),
        (0.23290046668749287, 0.4683439599118898),
    ]
    for a, (x, v) in zip([0.7, 0.3, 0.9], expected):
        obs, *_ = env.step(np.array([a], np.float32))
        np.testing.assert_allclose(env.pos_agent, [x], rtol=0, atol=1e-7)
        np.testing.assert_allclose(env.vel_agent, [v], rtol=0, atol=1e-7)
        assert obs["pos_agent"].dtype == np.float32
        np.testing.assert_allclose(obs["pos_agent"], [x], rtol=1e-6)


def test_golden_dynamics_2d_with_clipping():
    env = ParticleEnv(n_dim=2)
    env.reset(seed=0)
    env.set_state(pos_agent=[0.1, 0.8], vel_agent=[0.0, 0.5])
    # dim 1 actions 1.3 and -0.2 are clipped to the box: 1.0 and 0.0
    actions = [[0.9, 0.4], [0.9, 1.3], [0.2, -0.2]]
    expected_x = [
        (0.1084155918716472, 0.8180905542030821),
        (0.13265358141545808, 0.8291403047491951),
        (0.16130125869868714, 0.8310389424958986),
    ]
    expected_v = [
        (0.3567736022224894, 0.2048617032744479),
        (0.6264864248510171, 0.2381514930907542),
        (0.5102342511281722, -0.18722680950302634),
    ]
    for a, x, v in zip(actions, expected_x, expected_v):
        env.step(np.array(a, np.float32))
        np.testing.assert_allclose(env.pos_agent, x, rtol=0, atol=1e-7)
        np.testing.assert_allclose(env.vel_agent, v, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- success rule
def _scripted(actions_per_phase):
    """Agent at (0.5, 0.5), first goal (0.3, 0.3), second goal (0.7, 0.7); run the phases."""
    env = ParticleEnv(n_dim=2)
    env.reset(seed=0)
    g = {"first": np.array([0.3, 0.3]), "second": np.array([0.7, 0.7])}
    env.set_state(pos_agent=[0.5, 0.5], vel_agent=[0, 0], pos_first_goal=g["first"], pos_second_goal=g["second"])
    rewards, infos = [], []
    for target, n in actions_per_phase:
        for _ in range(n):
            _, r, term, trunc, info = env.step(g[target].astype(np.float32))
            rewards.append(r)
            infos.append(info)
            assert term is False
    assert trunc is True and len(rewards) == 50
    return rewards, infos


def test_success_when_both_goals_visited_and_ending_at_second():
    rewards, infos = _scripted([("first", 25), ("second", 25)])
    assert infos[-1]["success"] is True
    assert rewards[-1] == 1.0 and sum(rewards[:-1]) == 0.0
    assert not any(i["success"] for i in infos[:-1])  # only set at the end


def test_only_first_goal_fails():
    rewards, infos = _scripted([("first", 50)])
    assert infos[-1]["success"] is False
    assert sum(rewards) == 0.0


def test_final_not_at_second_goal_fails_but_ibc_reward_is_one():
    rewards, infos = _scripted([("first", 20), ("second", 22), ("first", 8)])
    info = infos[-1]
    assert info["min_dist_first_goal"] < 0.05 and info["min_dist_second_goal"] < 0.05
    assert info["dist_second_goal"] > 0.05
    assert info["success"] is False
    assert rewards[-1] == 1.0  # IBC's reward does not check the final position


def test_step_after_truncation_requires_reset():
    env = ParticleEnv(n_dim=1, n_steps=2)
    env.reset(seed=1)
    env.step(np.array([0.5], np.float32))
    *_, trunc, _ = env.step(np.array([0.5], np.float32))
    assert trunc
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0.5], np.float32))


# ----------------------------------------------------------------------------- API
def test_reset_reproducible_with_seed():
    env = ParticleEnv(n_dim=3)
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    for k in OBS_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["pos_agent"], c["pos_agent"])
    np.testing.assert_array_equal(a["vel_agent"], np.zeros(3, np.float32))
    for k in ("pos_agent", "pos_first_goal", "pos_second_goal"):
        assert a[k].dtype == np.float32 and ((0 <= a[k]) & (a[k] < 1)).all()


def test_gym_make_with_n_dim_and_check_env():
    env = gym.make("steerlab/Particle-v0", n_dim=8)
    assert env.action_space.shape == (8,)
    assert set(env.observation_space.spaces) == set(OBS_KEYS)
    obs, info = env.reset(seed=0)
    assert info["success"] is False
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert "success" in info
    env.close()
    check_env(gym.make("steerlab/Particle-v0", n_dim=8).unwrapped)
    check_env(gym.make("steerlab/Particle-v0", n_dim=1).unwrapped)


def test_reimport_registration_is_idempotent():
    import importlib

    importlib.reload(steerlab.envs)
    assert "steerlab/Particle-v0" in gym.registry


def test_wrong_action_shape_raises():
    env = ParticleEnv(n_dim=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        env.step(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0.5]))


def test_flatten_obs_order_and_batches():
    obs = {k: np.full(2, i, np.float32) for i, k in enumerate(["vel_agent", "pos_second_goal", "pos_agent", "pos_first_goal"])}
    np.testing.assert_array_equal(flatten_obs(obs), [2, 2, 3, 3, 1, 1, 0, 0])
    batch = {k: np.stack([v, v + 10]) for k, v in obs.items()}
    flat = flatten_obs(batch)
    assert flat.shape == (2, 8) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat[1], [12, 12, 13, 13, 11, 11, 10, 10])
    with pytest.raises(KeyError, match="vel_agent"):
        flatten_obs({k: v for k, v in obs.items() if k != "vel_agent"})


# ----------------------------------------------------------------------------- oracle
@pytest.mark.parametrize("n_dim", [1, 2, 8, 32])
def test_oracle_succeeds(n_dim):
    env = ParticleEnv(n_dim=n_dim)
    oracle = ParticleOracle()
    successes, switch_steps = [], []
    for seed in range(20):
        info, ret = _run_oracle(env, oracle, seed)
        successes.append(info["success"])
        switch_steps.append(oracle.switch_step)
        assert ret == float(info["success"])
    assert np.mean(successes) >= 0.95
    assert all(s is not None and s <= 35 for s in switch_steps)
    assert 15 <= np.median(switch_steps) <= 35


def test_oracle_switches_and_latches():
    oracle = ParticleOracle(switch_distance=0.01)
    g0, g1 = np.array([0.2, 0.3], np.float32), np.array([0.9, 0.1], np.float32)

    def obs(x):
        return {"pos_agent": np.array(x, np.float32), "vel_agent": np.zeros(2, np.float32),
                "pos_first_goal": g0, "pos_second_goal": g1}

    np.testing.assert_array_equal(oracle(obs([0.5, 0.5])), g0)
    np.testing.assert_array_equal(oracle(obs([0.205, 0.3])), g1)  # switch on the same step
    assert oracle.switch_step == 1
    np.testing.assert_array_equal(oracle(obs([0.5, 0.5])), g1)  # latched
    oracle.reset()
    np.testing.assert_array_equal(oracle(obs([0.5, 0.5])), g0)


def test_multimodal_oracle_shuffles_goal_order():
    oracle = ParticleOracle(multimodal=True, rng=0)
    orders = []
    for _ in range(200):
        oracle.reset()
        orders.append(oracle.goal_order[0] == "pos_second_goal")
    assert 0.35 < np.mean(orders) < 0.65
    assert ParticleOracle(multimodal=False, rng=0).goal_order[0] == "pos_first_goal"
    # reversed order: visits the second goal first and ends at the first goal -> env success is False
    env = ParticleEnv(n_dim=2)
    oracle = ParticleOracle(multimodal=True, rng=0)
    seen = set()
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        oracle.reset()
        done = False
        while not done:
            obs, r, term, trunc, info = env.step(oracle(obs))
            done = term or trunc
        reversed_ = oracle.goal_order[0] == "pos_second_goal"
        seen.add(reversed_)
        assert info["success"] is (not reversed_)
    assert seen == {True, False}


def test_import_steerlab_registers_the_envs_and_stays_light():
    """In a fresh interpreter: ``import steerlab`` alone makes both ids available to ``gym.make`` without
    loading matplotlib, torch or the environment modules until an environment is made."""
    import subprocess
    import sys

    code = (
        "import sys, steerlab, gymnasium as gym\n"
        "heavy = [m for m in ('matplotlib', 'torch', 'steerlab.envs.particle') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "env = gym.make('steerlab/Particle-v0', n_dim=2)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs['pos_agent'].shape == (2,)\n"
        "assert 'steerlab/Nav2D-v0' in gym.registry\n"
        "steerlab.register_envs()  # idempotent\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
