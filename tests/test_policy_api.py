"""The public policy interface: observations exactly as the env returns them, keyword-only steering inputs."""

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch

import steerlab  # noqa: F401  (registers the environments)
from steerlab.baselines.mse import MSEConfig, MSEPolicy
from steerlab.ebm.policy import IBCConfig, IBCPolicy
from steerlab.envs.particle import flatten_obs
from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig, GenerativePolicy
from steerlab.nav.policy import NavPolicy
from steerlab.policy import Policy, flat_observation
from steerlab.steer.critic_policy import EnergyPolicy


def _policies(obs_dim, act_dim):
    net = DenoiserConfig(width=32, depth=2, time_embed_dim=8)
    return {
        "diffusion": GenerativePolicy(DiffusionConfig(horizon=4, n_action_steps=2, denoiser=net, num_inference_steps=3,
                                                      sampler="ddim"), obs_dim, act_dim),
        "flow": GenerativePolicy(FlowConfig(horizon=4, n_action_steps=2, denoiser=net, num_inference_steps=3),
                                 obs_dim, act_dim),
        "ibc": IBCPolicy(IBCConfig(width=16, inference_samples=16, inference="dfo"), obs_dim, act_dim),
        "mse": MSEPolicy(MSEConfig(width=16), obs_dim, act_dim),
    }


@pytest.mark.parametrize("name", ["diffusion", "flow", "ibc", "mse"])
def test_select_action_takes_the_env_observation_as_it_comes(name):
    env = gym.make("steerlab/Particle-v0", n_dim=2)
    obs, _ = env.reset(seed=3)
    assert isinstance(obs, dict)
    torch.manual_seed(0)
    pol = _policies(8, 2)[name].eval()
    acts = {}
    for kind, o in (("dict", obs), ("array", flatten_obs(obs))):
        pol.reset()
        seq = []
        for _ in range(3):
            seq.append(pol.select_action(o, generator=torch.Generator().manual_seed(1)))
            o2, *_ = env.step(seq[-1].numpy())
        acts[kind] = torch.stack(seq)
    assert acts["dict"].shape == (3, 2) and torch.equal(acts["dict"], acts["array"])
    env.close()


def test_flat_observation_follows_gymnasiums_dict_order():
    env = gym.make("steerlab/Particle-v0", n_dim=3)
    obs, _ = env.reset(seed=0)
    want = gym.spaces.flatten(env.observation_space, obs)
    assert np.allclose(flat_observation(obs).numpy(), want)
    batch = {k: np.stack([v, v + 1]) for k, v in obs.items()}
    assert flat_observation(batch).shape == (2, 12)
    with pytest.raises(ValueError, match="leading shape"):
        flat_observation({"a": np.zeros((2, 3)), "b": np.zeros(3)})


@pytest.mark.parametrize("cls", [GenerativePolicy, NavPolicy, EnergyPolicy])
def test_steering_inputs_are_keyword_only(cls):
    base = list(inspect.signature(Policy.predict_action_chunk).parameters)
    params = inspect.signature(cls.predict_action_chunk).parameters
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == base  # (self, obs, generator): no subclass widens the positional signature
    assert all(p.kind == p.KEYWORD_ONLY for n, p in params.items() if n not in base)
