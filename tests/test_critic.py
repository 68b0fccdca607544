"""Energy critics: the mask convention, the InfoNCE value, correction and re-ranking by hand, the three
training modes (energy-only leaves the policy untouched and keeps no optimizer state for it), loading a base
policy without energy weights, learning on a task with a known answer, and the test-time evaluation."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from steerlab.commands.eval_args import parse_test_time
from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig
from steerlab.steer.critic import (
    SEED_SHAPES, CriticConfig, EnergyCritic, correct_actions, info_nce_energy, rerank,
)
from steerlab.steer.critic_policy import EnergyPolicy, EnergyPolicyConfig, TestTime

SMALL = CriticConfig(context_dim=5, act_dim=2, horizon=4, width=16, heads=2)


def test_mask_true_means_valid_and_padding_is_ignored():
    torch.manual_seed(0)
    m = EnergyCritic(SMALL).eval()
    ctx = torch.randn(3, 2, 5)
    a = torch.randn(3, 6, 4, 3)  # 3 action dims, only the first 2 scored
    e = m(ctx, torch.ones(3, 2, dtype=torch.bool), a)
    padded = torch.cat([ctx, 100 * torch.randn(3, 3, 5)], 1)  # garbage tokens marked invalid
    mask = torch.tensor([[True, True, False, False, False]] * 3)
    assert e.shape == (3, 6)
    assert torch.allclose(m(padded, mask, a), e, atol=1e-5)
    assert not torch.allclose(m(padded, torch.ones(3, 5, dtype=torch.bool), a), e, atol=1e-3)
    a2 = a.clone()
    a2[..., 2] += 5  # dims past act_dim are not scored
    assert torch.equal(m(ctx, None, a2), m(ctx, None, a))
    with pytest.raises(ValueError, match="True = valid"):
        m(ctx, torch.ones(3, 2), a)
    with pytest.raises(ValueError, match="at least one valid"):
        m(ctx, torch.zeros(3, 2, dtype=torch.bool), a)
    with pytest.raises(ValueError, match="actions must be"):
        m(ctx, None, torch.randn(3, 6, 5, 2))


def _reference_energy(m, ctx, mask, a):
    """The straightforward computation: every candidate gets its own copy of the context, attention through
    ``nn.MultiheadAttention`` with ``key_padding_mask`` (True = ignore), the head on every token, then pooling."""
    c = m.cfg
    b, n = a.shape[:2]
    kv = m.state_enc(ctx).repeat_interleave(n, 0)  # [B*N, S, W]
    pad = None if mask is None else (~mask).repeat_interleave(n, 0)
    q = m.action_enc(a[..., : c.act_dim].reshape(b * n, c.horizon, c.act_dim)) + m.pos
    h, _ = m.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
    h = m.norm(q + h)
    if c.pooling == "mean":
        return m.head(h).squeeze(-1).mean(1).view(b, n)
    pooled, _ = m.pool_attn(m.pool_query.expand(b * n, 1, c.width), h, h, need_weights=False)
    return m.head(pooled[:, 0]).squeeze(-1).view(b, n)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_shared_context_path_equals_reference(pooling):
    """The optimized path (context encoded and projected to keys/values once per context, shared by all
    candidates and reused across calls through ``prepare``/``energy``) gives the reference energies and
    gradients (w.r.t. the actions and the weights), with and without padding."""
    import dataclasses

    torch.manual_seed(0)
    m = EnergyCritic(dataclasses.replace(SMALL, pooling=pooling)).eval()
    ctx = torch.randn(3, 5, 5)
    a = torch.randn(3, 7, 4, 3, requires_grad=True)
    masks = [None, torch.ones(3, 5, dtype=torch.bool),
             torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)]
    for mask in masks:
        ref = _reference_energy(m, ctx, mask, a)
        got = m(ctx, mask, a)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            cache = m.prepare(ctx, mask)
        for _ in range(2):  # the cache is reusable
            torch.testing.assert_close(m.energy(cache, a), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.energy(cache, a[:, 2]), ref[:, 2:3], atol=1e-5, rtol=1e-5)  # [B, H, A]
        (g_ref,) = torch.autograd.grad(ref.sum(), a)
        (g,) = torch.autograd.grad(m.energy(cache, a).sum(), a)
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
        params = [p for p in m.parameters()]
        gp_ref = torch.autograd.grad(_reference_energy(m, ctx, mask, a).square().sum(), params, allow_unused=True)
        gp = torch.autograd.grad(m(ctx, mask, a).square().sum(), params, allow_unused=True)
        for x, y in zip(gp, gp_ref):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context batch"):
        m.energy(cache, a[:2])


@pytest.mark.parametrize("depth", [0, 2, 4])
def test_hand_written_action_gradient_equals_autograd(depth):
    """``action_grad`` (the correction step's gradient without autograd) equals autograd through ``energy``,
    energies included, with padding and with unscored action dims (gradient 0 there); attention pooling falls
    back to autograd."""
    import dataclasses

    torch.manual_seed(0)
    for pooling in ["mean", "attention"]:
        m = EnergyCritic(dataclasses.replace(SMALL, encoder_depth=depth, pooling=pooling)).eval()
        ctx = torch.randn(3, 5, 5)
        for mask in [None, torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)]:
            with torch.no_grad():
                cache = m.prepare(ctx, mask)
            a = torch.randn(3, 6, 4, 3, requires_grad=True)
            e_ref = m.energy(cache, a)
            (g_ref,) = torch.autograd.grad(e_ref.sum(), a)
            e, g = m.action_grad(cache, a)
            torch.testing.assert_close(e, e_ref.detach(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-5)
            assert (g[..., 2] == 0).all() and not g.requires_grad
    # correction through it equals correction through autograd
    m = EnergyCritic(SMALL).eval()
    with torch.no_grad():
        cache = m.prepare(torch.randn(2, 3, 5), None)
    a = torch.rand(2, 4, 2) * 2 - 1
    kw = dict(steps=3, alpha=5.0, clip_frac=0.05)
    ref = correct_actions(lambda c: m.energy(cache, c)[:, 0], a, **kw)
    got = correct_actions(None, a, grad_fn=lambda c: m.action_grad(cache, c[:, None])[1][:, 0], **kw)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert not torch.equal(ref, a)


def test_attention_pooling_and_seed_shapes_build():
    import dataclasses

    m = EnergyCritic(dataclasses.replace(SMALL, pooling="attention"))
    assert m(torch.randn(2, 3, 5), None, torch.randn(2, 4, 2)).shape == (2, 1)
    seed = EnergyCritic(SEED_SHAPES)
    n = sum(p.numel() for p in seed.parameters())
    assert 2e6 < n < 6e6
    e = seed(torch.randn(1, 8, 2048), torch.ones(1, 8, dtype=torch.bool), torch.randn(1, 2, 50, 32))
    assert e.shape == (1, 2) and torch.isfinite(e).all()


def test_info_nce_golden_value():
    e_pos, e_neg = torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    t = 0.5
    row0 = -math.log(math.exp(0) / (math.exp(0) + math.exp(-2) + math.exp(-4)))
    row1 = -math.log(math.exp(-2) / (math.exp(-2) + math.exp(0) + math.exp(-6)))
    loss, m = info_nce_energy(e_pos, e_neg, t)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert m["rank_acc"] == 0.5 and m["e_pos"] == 0.5 and m["energy_gap"] == pytest.approx(((1.5 - 0) + (1.5 - 1)) / 2)


def test_correction_by_hand():
    target = torch.tensor([[[0.2, -0.4]]])  # E = 0.5 |a - target|^2, dE/da = a - target

    def energy(a):
        return 0.5 * ((a - target) ** 2).sum((1, 2))

    a = torch.tensor([[[0.3, 0.9]]])
    one = correct_actions(energy, a, steps=1, alpha=0.5, clip_frac=0.1)  # max step 0.1 * 2 = 0.2
    assert torch.allclose(one, torch.tensor([[[0.3 - 0.05, 0.9 - 0.2]]]))  # 0.5*0.1 unclipped; 0.5*1.3 clipped
    many = correct_actions(energy, a, steps=60, alpha=0.5, clip_frac=0.1)
    assert torch.allclose(many, target, atol=1e-4)
    edge = correct_actions(lambda x: -x.sum((1, 2)), torch.full((2, 1, 2), 0.95), steps=3, alpha=1.0, clip_frac=0.5)
    assert (edge == 1.0).all()  # pushed up, kept inside the box
    c = torch.randn(3, 5, 4, 2)
    best, idx = rerank(lambda x: x.sum((2, 3)), c)
    assert torch.equal(idx, c.sum((2, 3)).argmin(1)) and torch.equal(best[1], c[1, idx[1]])


def test_test_time_parse():
    tt = parse_test_time("steps=3,alpha=0.2", 16, None)
    assert (tt.correct_steps, tt.alpha, tt.rerank) == (3, 0.2, 16)
    assert tt.label() == "rerank 16 + correct 3x0.2"
    with pytest.raises(ValueError, match="steps=N"):
        parse_test_time("step3", None, None)


# ----------------------------------------------------------------------------------- modes and loading

NET = DenoiserConfig(width=32, depth=2, time_embed_dim=16)
BASE = FlowConfig(horizon=4, n_obs_steps=1, n_action_steps=2, denoiser=NET, num_inference_steps=4)


def _cfg(mode, **kw):
    return EnergyPolicyConfig(**{**dict(base=BASE, mode=mode, width=16, heads=2, n_policy=2, n_perturbed=3,
                                        n_uniform=1, n_batch=2), **kw})


def _batch(b=16):
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.rand(b, 1, 3, generator=g), "action": torch.rand(b, 4, 2, generator=g),
            "action_mask": torch.ones(b, 4, dtype=torch.bool)}


@pytest.mark.parametrize("mode", ["monitor", "joint", "energy-only"])
def test_modes_train_what_they_say(mode):
    torch.manual_seed(0)
    pol = EnergyPolicy(_cfg(mode), 3, 2)
    pol.fit_normalizers({"obs": np.random.rand(20, 3), "action": np.random.rand(20, 2)}, action_low=np.zeros(2), action_high=np.ones(2))
    before = {k: v.clone() for k, v in pol.state_dict().items()}
    params = [p for p in pol.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, 1e-2)
    for _ in range(3):
        loss, m = pol.compute_loss(_batch(), torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"energy_loss", "e_pos", "e_neg", "energy_gap", "rank_acc"} <= set(m)
    changed = {k for k, v in pol.state_dict().items() if not torch.equal(v, before[k])}
    base_changed = any(k.startswith("base.net") for k in changed)
    critic_changed = any(k.startswith("critic.") for k in changed)
    assert (base_changed, critic_changed) == {"monitor": (True, False), "joint": (True, True),
                                              "energy-only": (False, True)}[mode]
    if mode == "energy-only":
        n_critic = sum(1 for _ in pol.critic.parameters())
        assert len(opt.state) == n_critic  # no optimizer state for any policy parameter
        assert all(not p.requires_grad for p in pol.base.parameters())


def test_energy_loss_shares_the_batch_negatives_encoding():
    """energy_loss encodes the batch negatives' action tokens once (as the positives' rolled): the same loss and
    parameter gradients as scoring the concatenated candidates directly."""
    torch.manual_seed(0)
    pol = EnergyPolicy(_cfg("energy-only"), 3, 2)
    pol.fit_normalizers({"obs": np.random.rand(20, 3), "action": np.random.rand(20, 2)}, action_low=np.zeros(2), action_high=np.ones(2))
    batch = _batch()
    params = list(pol.critic.parameters())
    loss, _ = pol.energy_loss(batch, torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(loss, params)
    g = torch.Generator().manual_seed(1)
    x = pol.base.act_norm.normalize(batch["action"])
    neg = pol.negatives(batch["obs"], x, g)
    assert torch.equal(neg[:, -2], x.roll(1, 0)) and torch.equal(neg[:, -1], x.roll(2, 0))  # batch negatives last
    e = pol.energy(batch["obs"], torch.cat([x[:, None], neg], 1))
    ref, _ = info_nce_energy(e[:, 0], e[:, 1:], pol.cfg.temperature)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads, torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, particle2d):
    from steerlab.cli import main

    out = tmp_path_factory.mktemp("runs")
    main(["train", "flow-particle", "--steps", "40", "--dataset", str(particle2d), "--out-dir", str(out),
          "--run-name", "base", "--no-progress", "--eval.episodes", "2", "--eval.batch", "2",
          "--policy.denoiser.width", "32", "--policy.denoiser.depth", "2", "--batch-size", "32", "--no-eval"])
    return out / "base"


def test_energy_only_training_from_a_base_run(base_run, particle2d, tmp_path, capsys):
    """Through the real training loop: the base checkpoint has no energy weights (reported by name), the saved
    policy weights equal the base run's, and the optimizer state holds only the critic's parameters."""
    from steerlab.cli import main
    from steerlab.train.checkpoint import latest_checkpoint, load_trainer_state, load_weights

    main(["train", "energy-particle", "--steps", "20", "--dataset", str(particle2d), "--out-dir", str(tmp_path),
          "--run-name", "critic", "--no-progress", "--policy.base-run", str(base_run), "--val-episodes", "5",
          "--policy.base.denoiser.width", "32", "--policy.base.denoiser.depth", "2", "--batch-size", "16",
          "--log-interval", "10", "--policy.width", "16", "--policy.heads", "2", "--no-eval"])
    out = capsys.readouterr().out
    assert "energy weights not in it" in out and "critic.attn.in_proj_weight" in out
    base_w = load_weights(latest_checkpoint(base_run), ema=True)
    ck = latest_checkpoint(tmp_path / "critic")
    w = load_weights(ck)
    assert all(torch.equal(w[f"base.{k}"], v) for k, v in base_w.items())
    state = load_trainer_state(ck)["optimizer"]["state"]
    n_critic = sum(1 for k in w if k.startswith("critic.") and not k.startswith("critic.pos"))
    assert len(state) == n_critic
    rows = (tmp_path / "critic" / "metrics.csv").read_text().splitlines()
    assert "monitor_rank_acc" in rows[0] and "e_pos" in rows[0]
    # the trained critic run is self-contained: it loads with its base run gone, without re-reading it
    import shutil

    from steerlab.eval.run import load_run

    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "critic", moved)
    cfg_json = json.loads((moved / "config.json").read_text())
    cfg_json["policy"]["base_run"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(cfg_json))
    capsys.readouterr()
    _, pol, _ = load_run(moved)
    assert "loaded base policy" not in capsys.readouterr().out
    for k, v in pol.state_dict().items():
        if k.startswith("base."):
            torch.testing.assert_close(v, base_w[k[5:]] if k[5:] in base_w else v)


def test_loading_mismatches_are_errors_naming_keys(base_run, tmp_path):
    from safetensors.torch import save_file

    from steerlab.steer.critic_policy import load_base_policy
    from steerlab.train.checkpoint import CheckpointError, latest_checkpoint, load_weights, record_checksums

    pol = EnergyPolicy(EnergyPolicyConfig(base=FlowConfig(), base_run=str(base_run)), 8, 2)
    with pytest.raises(CheckpointError, match="different policy config"):
        pol.fit_normalizers({"obs": np.zeros((4, 8)), "action": np.zeros((4, 2))}, action_low=np.zeros(2),
                            action_high=np.ones(2))
    # a checkpoint with a foreign key and a missing one
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(base_run, bad)
    ck = latest_checkpoint(bad)
    w = load_weights(ck, ema=True)
    w.pop("net.net.proj.weight")
    w["stranger.weight"] = torch.zeros(1)
    save_file(w, str(ck / "ema.safetensors"))
    record_checksums(ck)  # a consistent checkpoint of another policy, not a damaged file
    cfg_json = json.loads((bad / "config.json").read_text())
    from steerlab.train.config import config_from_dict_policy

    base_cfg = config_from_dict_policy(cfg_json["policy"])
    pol = EnergyPolicy(EnergyPolicyConfig(base=base_cfg), 8, 2)
    with pytest.raises(CheckpointError, match=r"missing \['base.net.net.proj.weight'\], unexpected \['base.stranger.weight'\]"):
        load_base_policy(pol, bad)


def test_critic_learns_and_test_time_uses_it():
    """A frozen, untrained flow policy emits random chunks; the demonstrations are a fixed function of the
    observation. The critic learns to rank chunks by their distance to the demonstration; re-ranking and
    correction move the executed chunks toward it, guidance lowers their energy. (Checked at 1 and 2 threads:
    the margins hold at both.)"""
    torch.manual_seed(0)
    pol = EnergyPolicy(_cfg("energy-only", temperature=0.5, n_perturbed=6), 1, 2)
    obs = np.random.default_rng(0).random((2000, 1)).astype(np.float32)
    demo = lambda o: np.stack([np.repeat(o, 4, 1), np.repeat(1 - o, 4, 1)], -1)  # noqa: E731
    pol.fit_normalizers({"obs": obs, "action": demo(obs).reshape(-1, 2)}, action_low=np.zeros(2), action_high=np.ones(2))
    opt = torch.optim.Adam([p for p in pol.parameters() if p.requires_grad], 3e-3)
    g = torch.Generator().manual_seed(0)
    def batch_of(idx):
        o = torch.as_tensor(obs[idx])
        return {"obs": o[:, None], "action": torch.as_tensor(demo(obs[idx])), "action_mask": torch.ones(len(idx), 4, dtype=torch.bool)}

    for _ in range(300):
        loss, m = pol.compute_loss(batch_of(torch.randint(2000, (64,), generator=g)), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pol.eval()
    # top-1 ranking accuracy over 512 rows among 11 negatives (chance 1/12; the nearest perturbed negatives are
    # close to the positive, so it reads 0.63 on an AVX2 EPYC and 0.7-0.8 on AVX-512 CPUs after 300 steps)
    with torch.no_grad():
        ms = [pol.compute_loss(batch_of(torch.randint(2000, (64,), generator=g)), g)[1] for _ in range(8)]
    assert np.mean([m["rank_acc"] for m in ms]) > 0.45
    assert np.mean([m["e_pos"] for m in ms]) < np.mean([m["e_neg"] for m in ms])
    o = torch.linspace(0.1, 0.9, 32)[:, None, None]
    target = torch.as_tensor(demo(o[:, 0].numpy()))

    def err(tt):
        a = pol.predict_action_chunk(o, torch.Generator().manual_seed(3), test_time=tt)
        assert a.shape == (32, 4, 2) and (a >= 0).all() and (a <= 1).all()
        return ((a - target) ** 2).mean().item()

    # the critic ranks chunks by their distance to the demonstration: 48 candidates per observation at several
    # noise scales around it, Spearman correlation of energy and squared error
    tn = pol.base.act_norm.normalize(target)
    scales = torch.tensor([0.02, 0.05, 0.1, 0.2, 0.5, 1.0]).repeat_interleave(8)
    cand = (tn[:, None] + scales[None, :, None, None] * torch.randn(32, 48, 4, 2, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
    tokens, mask = pol.context(o)
    with torch.no_grad():
        e = pol.critic(tokens, mask, cand)
    ranks = [x.argsort(1).argsort(1).float() for x in (e, ((cand - tn[:, None]) ** 2).mean((2, 3)))]
    ranks = [r - r.mean(1, keepdim=True) for r in ranks]
    rho = ((ranks[0] * ranks[1]).sum(1) / (ranks[0].norm(dim=1) * ranks[1].norm(dim=1))).mean()
    assert rho > 0.8

    base = err(TestTime())
    assert err(TestTime(rerank=64)) < 0.85 * base  # the base emits random chunks: only a few of 64 are close
    assert err(TestTime(correct_steps=5, alpha=0.5, clip_frac=0.1)) < 0.8 * base

    def energy(tt):
        with torch.no_grad():
            return pol.critic(tokens, mask, pol.sample_normalized(o, torch.Generator().manual_seed(3), tt=tt)[:, None]).mean()

    # guidance at the predicted clean chunk lowers the energy of what is sampled (it overshoots at large weights:
    # at 0.1 the sign of the change depends on float rounding in training — summation order alone flips it —
    # while 0.03 lowers the energy by ~3 on either side of that)
    assert energy(TestTime(guidance=0.03)) < energy(TestTime())


_DIFFUSION = DiffusionConfig(horizon=4, n_obs_steps=1, n_action_steps=2, denoiser=NET, num_train_timesteps=20,
                             num_inference_steps=4)
GUIDED_BASES = {
    "flow-euler": BASE, "flow-heun": dataclasses.replace(BASE, sampler="heun"),
    "flow-res": dataclasses.replace(BASE, sampler="res"),
    "diffusion-ddpm": _DIFFUSION, "diffusion-ddim": dataclasses.replace(_DIFFUSION, sampler="ddim"),
    "diffusion-ddim-eta": dataclasses.replace(_DIFFUSION, sampler="ddim", eta=0.5),
    "diffusion-res": dataclasses.replace(_DIFFUSION, sampler="res"),
}


@pytest.mark.parametrize("name", sorted(GUIDED_BASES))
def test_guidance_wraps_the_denoiser_of_every_configured_sampler(name):
    """Guidance of weight 0 reproduces the unguided chain of the configured sampler exactly, and the guided path
    of sample_normalized runs that sampler (not Euler / DDIM in its place): at a tiny weight it matches the
    configured chain, not another sampler's."""
    from steerlab.sampling import from_seed

    base_cfg = GUIDED_BASES[name]
    torch.manual_seed(0)
    pol = EnergyPolicy(_cfg("energy-only", base=base_cfg), 3, 2)
    pol.fit_normalizers({"obs": np.random.rand(20, 3), "action": np.random.rand(20, 2)}, action_low=np.zeros(2), action_high=np.ones(2))
    obs = torch.rand(3, 1, 3, generator=torch.Generator().manual_seed(1))
    z = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(2))
    base, noise = pol.base, from_seed(4)
    cond = base.condition(obs)
    with torch.no_grad():
        cache = pol.critic.prepare(*pol.context(obs))
    plain = base.sample(cond, z, noise=noise)
    guided0 = base.sample(cond, z, noise=noise, denoiser=pol.guided_denoiser(cond, cache, 0.0))
    assert torch.equal(guided0, plain)
    tiny = pol.sample_normalized(obs, z=z, noise=noise, tt=TestTime(guidance=1e-9))
    assert torch.allclose(tiny, plain, atol=1e-6)
    assert not torch.allclose(pol.sample_normalized(obs, z=z, noise=noise, tt=TestTime(guidance=0.5)), plain,
                              atol=1e-4)  # the guidance term does act
    if base_cfg.sampler == "res":  # the guided path used to run Euler (flow) or DDIM (diffusion) instead
        fallback = "euler" if base_cfg.kind == "flow" else "ddim"
        assert (tiny - base.sample(cond, z, noise=noise, sampler=fallback)).abs().max() > 1e-3
