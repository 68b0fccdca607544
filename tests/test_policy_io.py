"""The policy registry, ``policy.save`` and ``steerlab.load_policy``: round trips that give the same tensors and
the same actions, loading a trained run, clear errors, and a policy registered from outside steerlab."""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from torch import nn

import steerlab
from steerlab import registry
from steerlab.baselines.mse import MSEConfig
from steerlab.baselines.nearest import NearestConfig
from steerlab.data.normalize import MinMax, ZScore
from steerlab.ebm.policy import IBCConfig
from steerlab.eval.run import load_run
from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig
from steerlab.nav.intent import IntentConfig
from steerlab.nav.model import NavModelConfig
from steerlab.nav.policy import NavPolicy, NavPolicyConfig
from steerlab.policy import Policy
from steerlab.registry import build_policy, policy_entry, register_policy, registered_kinds
from steerlab.steer.critic_policy import EnergyPolicyConfig
from steerlab.train.checkpoint import CheckpointError
from steerlab.train.config import ConfigError, EvalConfig, TrainConfig, config_to_dict, from_dict
from steerlab.train.loop import train

NET = DenoiserConfig(width=32, depth=2, time_embed_dim=8)
FLOW = FlowConfig(horizon=4, n_action_steps=2, denoiser=NET, num_inference_steps=3)
NAV = NavModelConfig(n_obs_steps=2, cnn_channels=(4, 8), embed_dim=16, n_layers=1, n_heads=2, down_dims=(8, 16),
                     time_embed_dim=8, n_groups=4, dist_hidden=(8,), intent=IntentConfig(z1_dim=4, z2_dim=3, hidden=16))
PARTICLE = {
    "ibc": IBCConfig(width=16, inference_samples=16, inference="dfo"),
    "diffusion": DiffusionConfig(horizon=4, n_action_steps=2, denoiser=NET, num_inference_steps=3, sampler="ddim"),
    "flow": FLOW,
    "mse": MSEConfig(width=16),
    "energy": EnergyPolicyConfig(base=FLOW, width=16, heads=2),
}


def _env(kind):
    return gym.make("steerlab/Nav2D-v0") if kind == "nav" else gym.make("steerlab/Particle-v0", n_dim=2)


def _built(kind):
    """An untrained policy of ``kind`` at a small size, with normalizers moved off their defaults."""
    torch.manual_seed(0)
    if kind == "nav":
        env = _env(kind)
        obs_dim = sum(int(np.prod(s.shape)) for s in env.observation_space.spaces.values())
        pol = build_policy(NavPolicyConfig(model=NAV), obs_dim, env.action_space.shape[0])
    else:
        pol = build_policy(PARTICLE[kind], 8, 2)
    for m in pol.modules():
        if isinstance(m, (MinMax, ZScore)):
            for b in m.buffers():
                b.mul_(1.5)
    return pol.eval()


def _rollout(pol, kind, steps=3):
    """Actions of ``steps`` env steps from seed 3, sampling with a seeded generator."""
    env = _env(kind)
    obs, _ = env.reset(seed=3)
    pol.reset()
    g = torch.Generator().manual_seed(1)
    acts = []
    for _ in range(steps):
        acts.append(pol.select_action(obs, generator=g))
        obs, _, terminated, truncated, _ = env.step(acts[-1].numpy())
        if terminated or truncated:
            break
    env.close()
    return torch.stack(acts)


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["ibc", "diffusion", "flow", "mse", "energy", "nav"])
def test_save_then_load_gives_the_same_tensors_and_actions(tmp_path, kind):
    pol = _built(kind)
    pol.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["kind"] == kind and cfg["policy"]["kind"] == kind and cfg["format"] == "steerlab-policy"
    assert (cfg["obs_dim"], cfg["act_dim"]) == (pol.spec.obs_dim, pol.spec.act_dim)
    loaded = steerlab.load_policy(tmp_path / "p")
    assert type(loaded) is type(pol) and not loaded.training and loaded.spec == pol.spec
    _assert_same_state(pol, loaded)
    assert any(isinstance(m, (MinMax, ZScore)) for m in loaded.modules())  # normalizers travel as buffers
    a, b = _rollout(pol, kind), _rollout(loaded, kind)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    if kind != "nav":
        obs = torch.randn(3, pol.n_obs_steps, 8, generator=torch.Generator().manual_seed(5))
        chunks = [p.predict_action_chunk(obs, generator=torch.Generator().manual_seed(2)) for p in (pol, loaded)]
        assert torch.equal(*chunks)


def test_nearest_table_and_a_directly_built_policy_round_trip(tmp_path):
    pol = build_policy(NearestConfig(n_obs_steps=1), 8, 2)
    rng = np.random.default_rng(0)
    pol.fit_normalizers({"obs": rng.normal(size=(30, 8)), "action": rng.normal(size=(30, 2))})
    loaded = steerlab.load_policy(pol.save(tmp_path / "nn"))
    assert loaded.keys.shape == (30, 8)
    _assert_same_state(pol, loaded)
    direct = NavPolicy(NavPolicyConfig(model=NAV))  # not built by build_policy: saves from its own cfg
    _assert_same_state(direct, steerlab.load_policy(direct.save(tmp_path / "nav")))


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, particle2d):
    """A flow run trained for 4 steps, with EMA weights."""
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(preset="test", dataset=str(particle2d), policy=FLOW, steps=4, batch_size=16, log_interval=2,
                      ckpt_interval=4, out_dir=str(out), run_name="flow", progress=False, monitor_batch=4,
                      ema_decay=0.5, lr=1e-2, eval=EvalConfig(episodes=2, batch=2))
    return train(cfg)


def test_load_a_trained_run(tmp_path, flow_run):
    cfg, ref, ckpt = load_run(flow_run)
    pol = steerlab.load_policy(flow_run)
    _assert_same_state(pol, ref)  # the EMA weights by default, as load_run
    assert torch.equal(_rollout(pol, "flow"), _rollout(ref, "flow"))
    raw = steerlab.load_policy(flow_run, ema=False)
    assert any(not torch.equal(a, b) for a, b in zip(raw.state_dict().values(), pol.state_dict().values()))
    assert pol.spec.config == cfg.policy and (pol.spec.obs_dim, pol.spec.act_dim) == (8, 2)
    # a loaded run saves itself, and the saved policy acts as the run does
    again = steerlab.load_policy(pol.save(tmp_path / "saved"))
    _assert_same_state(pol, again)
    assert torch.equal(_rollout(again, "flow"), _rollout(pol, "flow"))
    with pytest.raises(ValueError, match="run directory"):
        pol.save(flow_run)


def test_loading_imports_neither_matplotlib_nor_the_training_loop(tmp_path, flow_run):
    _built("mse").save(tmp_path / "p")
    code = ("import steerlab, sys\n"
            f"steerlab.load_policy({str(flow_run)!r}); steerlab.load_policy({str(tmp_path / 'p')!r})\n"
            "bad = [m for m in ('matplotlib', 'steerlab.train.loop', 'steerlab.eval.plots') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    light = "import steerlab, sys; assert 'torch' not in sys.modules and 'steerlab.registry' not in sys.modules"
    subprocess.run([sys.executable, "-c", light], check=True)


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory.*nor a saved policy"):
        steerlab.load_policy(tmp_path)
    d = _built("mse").save(tmp_path / "p")
    with pytest.raises(ValueError, match="ema=True applies to run directories"):
        steerlab.load_policy(d, ema=True)
    weights, config = d / "model.safetensors", d / "config.json"
    good_weights, good_config = weights.read_bytes(), config.read_text()
    weights.write_bytes(good_weights[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt.*save the policy again"):
        steerlab.load_policy(d)
    unchecked = json.loads(good_config)
    del unchecked["files"]  # no checksum recorded: safetensors itself rejects the damaged file
    config.write_text(json.dumps(unchecked))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt.*save the policy again"):
        steerlab.load_policy(d)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing.*policy\.save"):
        steerlab.load_policy(d)
    weights.write_bytes(good_weights)
    config.write_text(good_config.replace('"mse"', '"warp"'))
    with pytest.raises(ConfigError, match="unknown policy kind 'warp'; registered kinds: .*mse"):
        steerlab.load_policy(d)
    wider = json.loads(good_config)
    wider["policy"]["width"] = 24
    config.write_text(json.dumps(wider))
    with pytest.raises(CheckpointError, match="weights do not match the config"):
        steerlab.load_policy(d)
    config.unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        steerlab.load_policy(d)
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        steerlab.load_policy(d)


def test_run_without_ema_refuses_ema_and_a_run_without_checkpoints(tmp_path, flow_run):
    run = tmp_path / "run"
    shutil.copytree(flow_run, run)
    data = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**data, "ema_decay": None}))
    with pytest.raises(CheckpointError, match="without EMA"):
        steerlab.load_policy(run, ema=True)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        steerlab.load_policy(run)


def test_registry_lookup_and_registration_rules():
    assert {"ibc", "diffusion", "flow", "energy", "mse", "nearest", "nav"} <= set(registered_kinds())
    assert policy_entry("flow").config_cls is FlowConfig
    with pytest.raises(KeyError, match="unknown policy kind 'nope'; registered kinds: diffusion, energy"):
        policy_entry("nope")
    with pytest.raises(ValueError, match="defaults to 'flow'"):
        register_policy("other", FlowConfig)
    with pytest.raises(TypeError, match="'kind' field"):
        register_policy("x", dict)
    with pytest.raises(ValueError, match="already registered"):
        register_policy("flow", FlowConfig)(type("Impostor", (Policy,), {}))
    with pytest.raises(TypeError, match="built from a FlowConfig"):
        build_policy(_KindOnly(), 8, 2)


@dataclass(frozen=True)
class _KindOnly:
    kind: str = "flow"


@dataclass(frozen=True)
class TinyConfig:
    kind: Literal["tiny"] = "tiny"
    scale: float = 1.0
    """output scale"""


class TinyPolicy(Policy):
    def __init__(self, cfg: TinyConfig, obs_dim: int, act_dim: int):
        super().__init__()
        self.cfg = cfg
        self.lin = nn.Linear(obs_dim, act_dim)

    def predict_action_chunk(self, obs, generator=None):
        return (self.cfg.scale * self.lin(obs[:, -1]))[:, None]


def test_a_policy_registered_from_outside(tmp_path, monkeypatch):
    """A third-party policy: one decorator, then the trainer's config, its CLI, save and load take it."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    register_policy("tiny", TinyConfig)(TinyPolicy)
    cfg = from_dict(TrainConfig, {**config_to_dict(TrainConfig()), "policy": {"kind": "tiny", "scale": 2.0}})
    assert cfg.policy == TinyConfig(scale=2.0)
    cli = tyro.cli(TrainConfig[TinyConfig], default=TrainConfig(policy=TinyConfig()), args=["--policy.scale", "3"])
    assert cli.policy == TinyConfig(scale=3.0)
    with pytest.raises(ConfigError, match=r"config\.policy\.scale: expected float"):
        from_dict(TrainConfig, {"policy": {"kind": "tiny", "scale": "big"}})
    pol = build_policy(TinyConfig(scale=2.0), 8, 2)
    loaded = steerlab.load_policy(pol.save(tmp_path / "tiny"))
    assert isinstance(loaded, TinyPolicy) and loaded.cfg.scale == 2.0
    _assert_same_state(pol, loaded)


def test_the_config_modules_import_alone_without_a_cycle():
    for mod in ("steerlab.steer.critic_policy", "steerlab.train.config", "steerlab.policy_io", "steerlab.registry"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)


def test_readme_usage_runs(tmp_path, monkeypatch, flow_run):
    """The README's `load_policy` example, run as written against a trained run at the path it names."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "steerlab.load_policy(" in b]
    assert len(blocks) == 1
    run_path = re.search(r'load_policy\("([^"]+)"\)', blocks[0]).group(1)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(flow_run, tmp_path / run_path)
    scope = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert (tmp_path / "my-policy" / "model.safetensors").exists()
    _assert_same_state(scope["policy"], steerlab.load_policy("my-policy"))
    assert scope["truncated"]
