"""Generative processes (prediction types), the sampler registry and guidance as a denoiser wrapper."""

import math

import pytest
import torch

from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, FlowConfig, GenerativePolicy
from steerlab.sampling import (
    SAMPLERS, DiffusionProcess, FlowProcess, alphas_cumprod, chain_nfe, default_noise, fresh, get_sampler,
    run_sampler, samplers_for, squaredcos_cap_v2,
)
from steerlab.sampling.process import energy_guided

ABAR = alphas_cumprod(squaredcos_cap_v2(100))
DIFF_TYPES = ("epsilon", "sample", "v_prediction")
FLOW_TYPES = ("velocity", "sample")


def _process(kind, ptype, **kw):
    return DiffusionProcess(ABAR, ptype, **kw) if kind == "diffusion" else FlowProcess(ptype)


ALL = [("diffusion", p) for p in DIFF_TYPES] + [("flow", p) for p in FLOW_TYPES]


# ---------------------------------------------------------------------------------- golden training pairs
def test_diffusion_training_pair_golden():
    # t = 40: abar[t] = prod_{i <= t} (1 - beta_i) = f(t + 1) / f(0) by hand from the squared-cosine schedule
    f = lambda u: math.cos((u / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    ab = f(41) / f(0)
    assert float(ABAR[40]) == pytest.approx(ab, rel=1e-12)
    sa, sb = math.sqrt(ab), math.sqrt(1 - ab)
    x0, n, t = torch.tensor([[[0.5]]]), torch.tensor([[[-1.2]]]), torch.tensor([40])
    want_xt = sa * 0.5 + sb * -1.2
    for ptype, want in (("epsilon", -1.2), ("sample", 0.5), ("v_prediction", sa * -1.2 - sb * 0.5)):
        xt, tm, target = DiffusionProcess(ABAR, ptype).training_pair(x0, n, t)
        assert xt.item() == pytest.approx(want_xt, abs=1e-6)
        assert tm.item() == 40.0 and tm.dtype == torch.float32
        assert target.item() == pytest.approx(want, abs=1e-6), ptype


def test_flow_training_pair_golden():
    x0, n, t = torch.tensor([[[0.5]]]), torch.tensor([[[-1.2]]]), torch.tensor([0.25])
    for ptype, want in (("velocity", -1.2 - 0.5), ("sample", 0.5)):
        xt, tm, target = FlowProcess(ptype).training_pair(x0, n, t)
        assert xt.item() == pytest.approx(0.25 * -1.2 + 0.75 * 0.5)
        assert tm.item() == 0.25 and target.item() == pytest.approx(want), ptype


def test_flow_training_times_are_pi0s_beta():
    g = torch.Generator().manual_seed(0)
    t = FlowProcess().sample_t(5, g)
    u = torch.rand(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, u ** (1 / 1.5) * 0.999 + 0.001)
    with pytest.raises(ValueError, match="one of the two parameters must be 1"):
        FlowProcess(time_beta=(2.0, 2.0)).sample_t(3)


# ------------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("kind,ptype", ALL)
def test_the_target_converts_back_to_the_truth(kind, ptype):
    """At a training point, the exact target read by the process gives back the clean sample (and the noise /
    the velocity), for every prediction type."""
    g = torch.Generator().manual_seed(1)
    p = _process(kind, ptype)
    x0, n = torch.randn(6, 4, 2, generator=g, dtype=torch.float64), torch.randn(6, 4, 2, generator=g, dtype=torch.float64)
    t = p.sample_t(6, g)
    xt, tm, target = p.training_pair(x0, n, t)
    assert torch.allclose(p.x0_of(target, xt, tm), x0, atol=1e-9)
    if kind == "diffusion":
        x0b, eps = p.split(target, xt, p.abar_of(t, xt))
        assert torch.allclose(eps, n, atol=1e-9)
        assert torch.allclose(p.join(x0b, eps, p.abar_of(t, xt)), target, atol=1e-9)
    else:
        x0b, v = p.split(target, xt, tm)
        assert torch.allclose(v, n - x0, atol=1e-9)
        assert torch.allclose(p.join(x0b, v), target, atol=1e-9)


def test_flow_sample_conversion_is_finite_at_t_zero():
    p = FlowProcess("sample")
    x = torch.tensor([[[0.3]]], dtype=torch.float64)
    v = p.velocity_fn(lambda x, t: torch.full_like(x, 0.2))(x, torch.zeros(1, dtype=torch.float64))
    assert torch.isfinite(v).all()
    assert v.item() == pytest.approx((0.3 - 0.2) / 0.001)  # floored at the smallest training time


def test_unknown_prediction_type_is_a_clear_error():
    with pytest.raises(ValueError, match="use one of epsilon, sample, v_prediction"):
        DiffusionProcess(ABAR, "velocity")
    with pytest.raises(ValueError, match="use one of velocity, sample"):
        FlowProcess("epsilon")


# ------------------------------------------------------------------------ every sampler, every parameterization
M, S = 0.3, 0.5  # data N(M, S^2) per coordinate: every exact quantity has a closed form


def _gaussian_model(p, m: float = M, s: float = S):
    """The exact network for data ``N(m, s^2)`` in ``p``'s prediction type: ``E[x0 | x_t]`` and ``E[noise | x_t]``
    are linear in ``x_t`` (diffusion: ``x_t = a x0 + b n``; flow: ``a = 1 - t``, ``b = t``)."""

    def fn(x, t):
        if p.kind == "diffusion":
            ab = p.abar_of(t, x)
            a, b = ab.sqrt(), (1 - ab).sqrt()
        else:
            b = t.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
            a = 1 - b
        var = a * a * s * s + b * b
        x0 = m + a * s * s * (x - a * m) / var
        n = b * (x - a * m) / var
        return p.join(x0, n, ab) if p.kind == "diffusion" else p.join(x0, n - x0)

    return fn


# mean |error| to the exact probability-flow map z -> M + S z with 20 steps (measured: 0.028 DDIM, 0.053 RES on
# the diffusion table, 0.028 Euler, 0.0004 Heun, 0.025 RES on flows)
ODE_TOL = {("diffusion", "ddim"): 0.04, ("diffusion", "res"): 0.08, ("flow", "euler"): 0.04,
           ("flow", "heun"): 1e-3, ("flow", "res"): 0.04}


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_every_registered_sampler_samples_a_gaussian_in_every_prediction_type(kind):
    """With the exact model of a Gaussian written in each prediction type, every sampler gives the same samples
    (the conversions are exact); deterministic samplers converge to the exact probability-flow map
    ``z -> M + S z`` and DDPM draws the data's mean and spread."""
    names = samplers_for(kind)
    assert names == (("ddpm", "ddim", "res") if kind == "diffusion" else ("euler", "heun", "res"))
    z = torch.randn(4000, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    types = DIFF_TYPES if kind == "diffusion" else FLOW_TYPES
    for name in names:
        def run(ptype, n):
            p = _process(kind, ptype)
            return run_sampler(p, name, _gaussian_model(p), z, n, noise=fresh(torch.Generator().manual_seed(1)),
                               grad="none")

        # DDPM at every training index: with skipped indices its point estimate of x0 loses the posterior's spread
        n = 100 if name == "ddpm" else 20
        ref = run(types[0], n)
        for ptype in types[1:]:
            if name == "heun" and ptype == "sample":
                continue  # Heun's last call is at t = 0, where a clean-sample network's velocity is 0/0 (FlowProcess)
            assert torch.allclose(run(ptype, n), ref, atol=1e-9), (name, ptype)
        if name == "ddpm":
            assert ref.mean().item() == pytest.approx(M, abs=0.03) and ref.std().item() == pytest.approx(S, abs=0.03)
            continue
        err = (ref - (M + S * z)).abs().mean().item()
        assert err < ODE_TOL[kind, name], (name, err)
        # it converges (on the diffusion table, at all 100 indices: "leading" spacing with 80 would start at t = 79)
        n_fine = 100 if kind == "diffusion" else 4 * n
        assert (run(types[0], n_fine) - (M + S * z)).abs().mean().item() < err / 2, name


def test_registry_nfe_and_errors():
    assert [chain_nfe(n, 5) for n in ("ddpm", "ddim", "euler", "heun", "res")] == [5, 5, 5, 10, 6]
    assert set(SAMPLERS) == {"ddpm", "ddim", "euler", "heun", "res"}
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        get_sampler("dpm")
    with pytest.raises(ValueError, match="does not apply to a flow process; use one of euler, heun, res"):
        run_sampler(FlowProcess(), "ddpm", lambda x, t: x, torch.zeros(1, 2, 1), 3)
    with pytest.raises(ValueError, match="takes no option"):
        run_sampler(DiffusionProcess(ABAR), "ddpm", lambda x, t: x, torch.zeros(1, 2, 1), 3, eta=0.5)
    assert default_noise("ddpm").mode == "fresh" and default_noise("ddim").mode == "none"
    assert default_noise("ddim", eta=1.0).mode == "fresh" and default_noise("euler").mode == "none"


# -------------------------------------------------------------------------------------------- guidance
@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_guidance_is_the_same_step_in_every_prediction_type(kind):
    """One exact model written in each prediction type, guided by the same energy, moves the chain to the same
    place: the guidance rule does not depend on what the network outputs."""
    z = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    energy = lambda x0: ((x0 - 1.0) ** 2).sum()  # noqa: E731
    name = "ddim" if kind == "diffusion" else "euler"
    outs = {}
    for ptype in (DIFF_TYPES if kind == "diffusion" else FLOW_TYPES):
        p = _process(kind, ptype)
        outs[ptype] = run_sampler(p, name, energy_guided(p, _gaussian_model(p), energy, 0.1), z, 8, grad="none")
    ref = outs[DIFF_TYPES[0] if kind == "diffusion" else FLOW_TYPES[0]]
    plain = run_sampler(_process(kind, "sample"), name, _gaussian_model(_process(kind, "sample")), z, 8, grad="none")
    assert (ref - plain).abs().max() > 1e-2  # guidance moved the samples
    for ptype, out in outs.items():
        assert torch.allclose(out, ref, atol=1e-8), ptype


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_guidance_runs_with_every_sampler_of_the_process(kind):
    p = _process(kind, "sample")
    z = torch.randn(2, 2, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for name in samplers_for(kind):
        plain = run_sampler(p, name, _gaussian_model(p), z, 6, noise=fresh(torch.Generator().manual_seed(0)),
                            grad="none")
        guided = run_sampler(p, name, energy_guided(p, _gaussian_model(p), lambda x0: -x0.sum(), 0.5), z, 6,
                             noise=fresh(torch.Generator().manual_seed(0)), grad="none")
        assert (guided - plain).min() > 0, name  # lowering E = -sum(x0) pushes every sample up


# ------------------------------------------------------------------ a policy learns a bimodal target in each type
CASES = [(DiffusionConfig, p, "ddim") for p in DIFF_TYPES] + [(DiffusionConfig, p, "ddpm") for p in ("epsilon", "sample")] \
    + [(FlowConfig, p, "euler") for p in FLOW_TYPES]


@pytest.mark.parametrize("cls,ptype,sampler", CASES)
def test_each_parameterization_learns_both_modes_in_proportion(cls, ptype, sampler):
    """1-D actions from two modes, -0.6 with probability 0.3 and +0.6 with 0.7, at one observation: a small
    policy trained on them samples both modes, each in its demonstrated share (within 0.1)."""
    torch.manual_seed(0)
    extra = dict(num_train_timesteps=50, num_inference_steps=10 if sampler == "ddim" else 50) if cls is DiffusionConfig \
        else dict(num_inference_steps=10)
    cfg = cls(horizon=2, n_obs_steps=1, n_action_steps=1, prediction_type=ptype, sampler=sampler,
              denoiser=DenoiserConfig(width=64, depth=2, time_embed_dim=16), **extra)
    pol = GenerativePolicy(cfg, 1, 1)
    pol.env_low.fill_(-1.0)  # the default normalizers are the identity; the action bounds are [-1, 1]
    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1500)  # without the decay the last step's noise shows
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        mode = torch.where(torch.rand(256, 1, 1, generator=g) < 0.3, -0.6, 0.6)
        batch = {"obs": torch.zeros(256, 1, 1), "action": mode.expand(256, 2, 1).clone(),
                 "action_mask": torch.ones(256, 2, dtype=torch.bool)}
        loss, _ = pol.compute_loss(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    a = pol.predict_action_chunk(torch.zeros(2000, 1, 1), torch.Generator().manual_seed(5))[:, 0, 0]
    low = ((a - -0.6).abs() < 0.15).float().mean().item()
    high = ((a - 0.6).abs() < 0.15).float().mean().item()
    assert low == pytest.approx(0.3, abs=0.1) and high == pytest.approx(0.7, abs=0.1), (low, high)


@pytest.mark.parametrize("kind,ptype", [("diffusion", "sample"), ("diffusion", "v_prediction"), ("flow", "sample")])
def test_policy_loss_regresses_the_prediction_target(kind, ptype):
    """The policy's loss is the masked MSE to the process's target, drawn in the documented order (noise, then
    times), computed here by hand."""
    H = 4
    net = DenoiserConfig(width=32, depth=2, time_embed_dim=8)
    cfg = (DiffusionConfig(horizon=H, n_obs_steps=1, denoiser=net, n_action_steps=2, num_train_timesteps=50,
                           prediction_type=ptype) if kind == "diffusion"
           else FlowConfig(horizon=H, n_obs_steps=1, denoiser=net, n_action_steps=2, prediction_type=ptype))
    torch.manual_seed(0)
    pol = GenerativePolicy(cfg, 1, 1)
    obs, act = torch.rand(16, 1, 1), torch.rand(16, H, 1) * 2 - 1
    mask = torch.ones(16, H, dtype=torch.bool)
    mask[:, 3:] = False
    loss, _ = pol.compute_loss({"obs": obs, "action": act, "action_mask": mask}, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    n = torch.randn(act.shape, generator=g)
    if kind == "diffusion":
        t = torch.randint(50, (16,), generator=g)
        ab = pol.abar[t].float().view(16, 1, 1)
        xt = ab.sqrt() * act + (1 - ab).sqrt() * n
        target = act if ptype == "sample" else ab.sqrt() * n - (1 - ab).sqrt() * act
        out = pol.net(xt, t.float(), obs.flatten(1))
    else:
        t = torch.rand(16, generator=g) ** (1 / 1.5) * 0.999 + 0.001
        tt = t.view(16, 1, 1)
        out, target = pol.net(tt * n + (1 - tt) * act, t * 1000, obs.flatten(1)), act
    assert loss.item() == pytest.approx(((out - target)[:, :3] ** 2).mean().item(), rel=1e-5)
