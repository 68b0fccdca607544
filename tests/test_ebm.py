"""Golden values (computed by hand, see the comments) for IBC's formulas, and sampler properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steerlab.data.normalize import MinMax, ZScore, sampling_bounds
from steerlab.ebm.dfo import autoregressive_dfo, dfo, resample
from steerlab.ebm.langevin import langevin, langevin_step, langevin_step_size
from steerlab.ebm.losses import gradient_penalty, info_nce
from steerlab.ebm.policy import IBCConfig, IBCPolicy, LangevinConfig, counter_example_split
from steerlab.nets.mlp import MLPPlain, MLPResNet, SpectralNormDense
from steerlab.train.schedule import tf_exponential_decay


# ---------------------------------------------------------------- schedules
def test_langevin_step_size_schedule_golden():
    # (0.1 - 1e-5) * (1 - k/99)^2 + 1e-5
    assert langevin_step_size(0, 100) == pytest.approx(0.1, abs=1e-12)
    assert langevin_step_size(99, 100) == pytest.approx(1e-5, abs=1e-12)
    assert langevin_step_size(33, 100) == pytest.approx(0.04445, abs=1e-9)  # 0.09999 * 4/9 + 1e-5
    assert langevin_step_size(1, 3) == pytest.approx(0.0250075, abs=1e-10)  # 0.09999 / 4 + 1e-5
    assert langevin_step_size(0, 1, init=0.3) == 0.3


def test_tf_exponential_decay_golden():
    assert tf_exponential_decay(0, 0.99, 100) == 1.0
    assert 1e-3 * tf_exponential_decay(10_000, 0.99, 100) == pytest.approx(3.66032e-4, rel=1e-5)  # 0.99^100
    assert tf_exponential_decay(150, 0.99, 100) == pytest.approx(0.985038, rel=1e-6)  # not staircase: 0.99^1.5


# ---------------------------------------------------------------- one Langevin step and every clip
def _t(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_langevin_step_noise_off_and_clips_golden():
    lo, hi = _t(-1.0), _t(1.0)
    z = _t(0.0)
    # d = 0.1 * 0.5 * 0.4 = 0.02 -> 0.48
    assert langevin_step(_t(0.5), _t(0.4), z, 0.1, lo, hi).item() == pytest.approx(0.48)
    # d = 0.1 * 0.5 * 4 = 0.2, delta clip 0.1 * (1 - -1) / 2 = 0.1 -> 0.4
    assert langevin_step(_t(0.5), _t(4.0), z, 0.1, lo, hi).item() == pytest.approx(0.4)
    # no delta clip -> 0.3
    assert langevin_step(_t(0.5), _t(4.0), z, 0.1, lo, hi, delta_action_clip=None).item() == pytest.approx(0.3)
    # grad clip 1: d = 0.1 * 0.5 * 1 = 0.05 -> 0.45
    assert langevin_step(_t(0.5), _t(4.0), z, 0.1, lo, hi, grad_clip=1.0).item() == pytest.approx(0.45)
    # bound clip: 0.98 - (-0.1) = 1.08 -> 1.0
    assert langevin_step(_t(0.98), _t(-4.0), z, 0.1, lo, hi).item() == pytest.approx(1.0)
    # noise scales with eps: d = 0.1 * (0.2 + 1.0 * 0.3) = 0.05 -> 0.45
    assert langevin_step(_t(0.5), _t(0.4), _t(0.3), 0.1, lo, hi).item() == pytest.approx(0.45)
    # asymmetric bounds: half range 0.1 * (0.5 - -1.5) / 2 = 0.1
    assert langevin_step(_t(0.0), _t(10.0), z, 0.1, _t(-1.5), _t(0.5)).item() == pytest.approx(-0.1)


def test_langevin_chain_with_fixed_generator_golden():
    # torch.manual_seed(0) -> first standard normal 1.5409961 (a well-known value of torch's generator)
    g = lambda a: torch.full_like(a, 0.4)  # dE/da = 0.4 everywhere
    lo, hi = _t(-1.0), _t(1.0)
    a0 = _t(0.2)
    out = langevin(g, a0, lo, hi, num_steps=1, delta_action_clip=None, generator=torch.Generator().manual_seed(0))
    # K=1 -> eps = 0.1; d = 0.1 * (0.2 + 1.5409961) = 0.17409961
    assert out.item() == pytest.approx(0.2 - 0.17409961, abs=1e-6)
    out = langevin(g, a0, lo, hi, num_steps=1, noise_scale=0.1, delta_action_clip=None,
                   generator=torch.Generator().manual_seed(0))
    assert out.item() == pytest.approx(0.2 - 0.1 * (0.2 + 0.15409961), abs=1e-7)
    # textbook ULA: a - eps g + sqrt(2 eps) xi = 0.2 - 0.04 + 0.4472136 * 1.5409961
    out = langevin(g, a0, lo, hi, num_steps=1, form="ula", delta_action_clip=None,
                   generator=torch.Generator().manual_seed(0))
    assert out.item() == pytest.approx(0.8491544, abs=1e-6)
    # noise off: two steps, eps 0.1 then 1e-5: 0.2 - 0.02 - 0.5 * 1e-5 * 0.4
    out = langevin(g, a0, lo, hi, num_steps=2, noise_scale=0.0)
    assert out.item() == pytest.approx(0.2 - 0.02 - 2e-6, abs=1e-12)


def test_langevin_explicit_noise_is_used_and_shape_checked():
    g = lambda a: torch.zeros_like(a)
    a0 = torch.zeros(2, 3, 1, dtype=torch.float64)
    noise = torch.full((1, 2, 3, 1), -0.5, dtype=torch.float64)
    out = langevin(g, a0, _t(-1.0), _t(1.0), num_steps=1, noise=noise, delta_action_clip=None)
    assert torch.allclose(out, torch.full_like(out, 0.05))  # a - 0.1 * (-0.5)
    with pytest.raises(ValueError, match="noise must have shape"):
        langevin(g, a0, _t(-1.0), _t(1.0), num_steps=2, noise=noise)


# ---------------------------------------------------------------- losses
def test_info_nce_golden():
    # softmax([0, 1, 2]): p_pos = e^2 / (1 + e + e^2) = 0.6652410; -log p = 0.4076059
    # Keras clips the one-hot's zeros to 1e-7: + 1e-7 log(1e-7/0.0900306) + 1e-7 log(1e-7/0.2447285) = -2.842e-6
    v = info_nce(_t(2.0), _t(0.0, 1.0)[None])
    assert v.item() == pytest.approx(0.4076059 - 2.842e-6, abs=2e-7)
    # capped: p_pos ~ e^-100 -> clipped to 1e-7: -log 1e-7 = 16.1180957, plus 1e-7 log(1e-7 / 1)
    v = info_nce(_t(-100.0), _t(0.0)[None])
    assert v.item() == pytest.approx(16.1180957 - 1.6118e-6, abs=1e-6)
    # temperature 2 halves the logits: softmax([0, 1]) -> -log(e / (1 + e)) = 0.3132617
    v = info_nce(_t(2.0), _t(0.0)[None], temperature=2.0)
    assert v.item() == pytest.approx(0.3132617 + 1e-7 * math.log(1e-7 / 0.2689414), abs=1e-7)
    with pytest.raises(ValueError):
        info_nce(_t(1.0, 2.0), _t(0.0)[None])


def test_gradient_penalty_golden():
    g = _t(0.5, -2.0, 1.5, 0.2).reshape(1, 2, 2)
    # inf-norms 2.0, 1.5 -> relu(-1): 1.0, 0.5 -> squared 1.0, 0.25 -> mean 0.625
    assert gradient_penalty(g).item() == pytest.approx(0.625)
    assert gradient_penalty(g, square=False).item() == pytest.approx(0.75)
    assert gradient_penalty(g, margin=2.0).item() == 0.0
    # 2-norms sqrt(4.25)=2.0615528, sqrt(2.29)=1.5132746 -> (1.0615528^2 + 0.5132746^2) / 2
    assert gradient_penalty(g, norm="2").item() == pytest.approx((1.0615528**2 + 0.5132746**2) / 2, abs=1e-6)


# ---------------------------------------------------------------- normalizers
def test_normalizers_golden_and_inverse():
    mm = MinMax.from_range([0.0, 2.0], [1.0, 6.0])
    x = torch.tensor([[0.25, 5.0]])
    assert torch.allclose(mm.normalize(x), torch.tensor([[-0.5, 0.5]]))
    assert torch.allclose(mm.unnormalize(mm.normalize(x)), x)
    z = ZScore.fit(np.array([[1.0, 7.0], [3.0, 7.0]]))
    # mean (2, 7); std (1, 0 -> floored at float32 eps 1.1920929e-07)
    assert torch.allclose(z.std, torch.tensor([1.0, 1.1920929e-07]))
    y = z.normalize(torch.tensor([[4.0, 7.0]]))
    assert torch.allclose(y, torch.tensor([[2.0, 0.0]]))
    assert torch.allclose(z.unnormalize(y), torch.tensor([[4.0, 7.0]]))
    lo, hi = sampling_bounds(np.array([0.1, 0.0]), np.array([0.9, 1.0]), np.zeros(2), np.ones(2))
    assert np.allclose(lo, [0.06, 0.0]) and np.allclose(hi, [0.94, 1.0])  # ±5% of the range, clipped to env


def test_zscore_std_eps_shifts_a_near_constant_dimension():
    # a dimension constant in the data (a MuJoCo quaternion) that jitters by 6e-6 at evaluation
    x = np.array([[1.0, 0.5], [3.0, 0.5]])
    exact = ZScore.fit(x)  # IBC: std floored at float32 eps -> 6e-6 becomes ~50 units
    assert abs(exact.normalize(torch.tensor([[2.0, 0.500006]]))[0, 1].item()) > 40
    z = ZScore.fit(x, std_eps=1e-4)  # std (1, 0): the second is below 1e-4 -> std 1, shifted only
    assert torch.allclose(z.std, torch.tensor([1.0, 1.0]))
    y = z.normalize(torch.tensor([[2.0, 0.500006]]))
    assert torch.allclose(y, torch.tensor([[0.0, 6e-6]]), atol=1e-7)
    assert torch.allclose(z.unnormalize(y), torch.tensor([[2.0, 0.500006]]))
    with pytest.raises(ValueError, match="std_eps"):
        ZScore.fit(x, std_eps=-1.0)


def test_minmax_range_eps_shifts_near_constant_dimensions():
    """diffusion_policy's rule (range_eps): a dimension with range below it is shifted by its mid, not scaled, so
    simulator jitter of 1e-6 on a demonstrated constant stays 1e-6 instead of ~8 (1e-6 / float32 eps)."""
    x = np.array([[0.0, 0.70710677, 5.0], [1.0, 0.70710677 + 4e-6, 5.0], [0.5, 0.70710677, 5.0]])
    mm = MinMax.fit(x, range_eps=1e-4)
    assert torch.allclose(mm.half_range, torch.tensor([0.5, 1.0, 1.0]))
    y = mm.normalize(torch.tensor([[0.25, 0.70710677 + 1e-6, 5.0 + 1e-6]]))
    assert torch.allclose(y, torch.tensor([[-0.5, 1e-6 - 2e-6, 1e-6]]), atol=2e-7)
    assert torch.allclose(mm.unnormalize(y), torch.tensor([[0.25, 0.70710677 + 1e-6, 5.0 + 1e-6]]))
    ibc = MinMax.fit(x)  # IBC's rule: the same jitter is divided by max(half_range, eps)
    assert ibc.normalize(torch.tensor([[0.25, 0.70710677, 5.0 + 1e-6]]))[0, 2].item() > 7.0
    with pytest.raises(ValueError, match="range_eps"):
        MinMax(2, range_eps=-1.0)


def test_generative_policy_obs_range_eps_survives_a_checkpoint():
    from steerlab.generative.policy import DiffusionConfig, GenerativePolicy

    obs = np.concatenate([np.random.default_rng(0).random((32, 1)), np.full((32, 1), 0.25)], 1).astype(np.float32)
    act = np.random.default_rng(1).random((32, 2)).astype(np.float32)
    pol = GenerativePolicy(DiffusionConfig(), 2, 2)
    pol.fit_normalizers({"obs": obs, "action": act}, action_low=np.zeros(2), action_high=np.ones(2))
    assert pol.obs_norm.range_eps == 1e-4 and pol.obs_norm.half_range[1].item() == 1.0
    fresh = GenerativePolicy(DiffusionConfig(), 2, 2)
    fresh.load_state_dict(pol.state_dict())
    assert torch.equal(fresh.obs_norm.half_range, pol.obs_norm.half_range)


def test_minmax_golden_with_a_constant_dimension():
    """IBC's MinMaxNormalizationLayer: (x - mid) / max(half_range, float32 eps); a constant dimension maps to 0."""
    mm = MinMax.fit(np.array([[0.0, 2.0, 3.0], [1.0, 6.0, 3.0], [0.5, 3.0, 3.0]]))
    # mid = (0.5, 4, 3), half_range = (0.5, 2, max(0, 1.1920929e-07))
    assert torch.equal(mm.mid, torch.tensor([0.5, 4.0, 3.0]))
    assert torch.equal(mm.half_range, torch.tensor([0.5, 2.0, 1.1920929e-07]))
    y = mm.normalize(torch.tensor([[0.25, 5.0, 3.0], [0.0, 2.0, 3.0], [1.0, 6.0, 3.0]]))
    assert torch.allclose(y, torch.tensor([[-0.5, 0.5, 0.0], [-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    assert mm.normalize(torch.tensor([0.5, 4.0, 3.0 + 2.0**-20]))[2].item() == pytest.approx(2.0**-20 / 1.1920929e-07)
    # inverse: y * half_range + mid; the constant dimension comes back as the constant
    x = mm.unnormalize(torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.25, 0.7]]))
    assert torch.allclose(x, torch.tensor([[1.0, 2.0, 3.0], [0.5, 4.5, 3.0]]))
    # the IBC policy's sampling bounds on a constant action dimension collapse to its normalized value 0
    pol = IBCPolicy(IBCConfig(width=8, stats_samples=None), 2, 2)
    act = np.stack([np.linspace(0.2, 0.8, 16), np.full(16, 0.4)], 1).astype(np.float32)
    pol.fit_normalizers({"obs": np.random.default_rng(0).random((16, 2)), "action": act}, action_low=np.zeros(2),
                        action_high=np.ones(2))
    assert pol.lo[1].item() == 0.0 and pol.hi[1].item() == 0.0
    assert pol.lo[0].item() == pytest.approx(-1.1) and pol.hi[0].item() == pytest.approx(1.1)
    assert pol.act_norm.unnormalize(pol.lo)[1].item() == pytest.approx(0.4)


# ---------------------------------------------------------------- DFO
def test_dfo_resampling_picks_dominant_sample_and_noise_schedule():
    a = torch.tensor([[[0.1], [0.7], [0.3]]])
    logits_fn = lambda x: torch.where((x[..., 0] - 0.7).abs() < 1e-6, 100.0, 0.0)
    out, f = dfo(logits_fn, a, torch.tensor([-1.0]), torch.tensor([1.0]), iterations=1, noise_std=0.0)
    assert torch.allclose(out, torch.full_like(out, 0.7)) and f.shape == (1, 3)
    # spread after 3 iterations around one point: noise 0.33 and 0.165 between the three resamplings, none after
    # the last: sqrt(0.33^2 + 0.165^2)
    a = torch.zeros(1, 20000, 1)
    g = torch.Generator().manual_seed(0)
    out, _ = dfo(lambda x: torch.zeros(x.shape[:2]), a, torch.tensor([-50.0]), torch.tensor([50.0]), generator=g)
    assert out.std().item() == pytest.approx(0.36895, rel=0.02)


def test_dfo_iterations_golden():
    """IBC's iterative_dfo by hand: f(a) = 4a on a0 = (-0.5, 0, 0.5), bounds [-1, 1], given draws.

    Resampling inverts the CDF of softmax(f) at the sorted uniforms (indices ascending, as IBC's bincount+repeat).
    1. f = (-2, 0, 2), p = (0.015876, 0.117310, 0.866813), cdf = (0.015876, 0.133187, 1);
       u = (0.9, 0.1, 0.5) -> sorted (0.1, 0.5, 0.9) -> indices (1, 2, 2) -> a = (0, 0.5, 0.5).
    2. + 0.33 * (1, -2, 4) = (0.33, -0.16, 1.82) -> clip (0.33, -0.16, 1); f = (1.32, -0.64, 4);
       cdf = (0.063589, 0.072546, 1); u = (0.05, 0.07, 0.99) -> indices (0, 1, 2) -> a unchanged.
    3. + 0.165 * (2, 0, -1) = (0.66, -0.16, 0.835); f = (2.64, -0.64, 3.34); cdf = (0.327720, 0.340052, 1);
       u = (0.5, 0.2, 0.8) -> sorted (0.2, 0.5, 0.8) -> indices (0, 2, 2) -> a = (0.66, 0.835, 0.835),
       f = (2.64, 3.34, 3.34): no noise after the last resampling, the action is 0.835.
    """
    calls = []

    def logits_fn(x):
        calls.append(x.clone())
        return 4.0 * x[..., 0]

    col = lambda *v: torch.tensor(v, dtype=torch.float64)[None, :, None]  # noqa: E731
    row = lambda *v: torch.tensor(v, dtype=torch.float64)[None]  # noqa: E731
    a0 = col(-0.5, 0.0, 0.5)
    lo, hi = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    us = [row(0.9, 0.1, 0.5), row(0.05, 0.07, 0.99), row(0.5, 0.2, 0.8)]
    xis = [col(1.0, -2.0, 4.0), col(2.0, 0.0, -1.0)]
    expected = [(col(0.0, 0.5, 0.5), row(0.0, 2.0, 2.0)),
                (col(0.33, -0.16, 1.0), row(1.32, -0.64, 4.0)),
                (col(0.66, 0.835, 0.835), row(2.64, 3.34, 3.34))]
    for k, (a_k, f_k) in enumerate(expected, start=1):
        calls.clear()
        a, f = dfo(logits_fn, a0, lo, hi, iterations=k, uniforms=us[:k], noise=xis[: k - 1])
        assert len(calls) == k  # one evaluation per iteration, none after the last resampling
        assert torch.allclose(a, a_k, atol=1e-12) and torch.allclose(f, f_k, atol=1e-12)
    assert torch.allclose(calls[1], col(0.33, -0.16, 1.0), atol=1e-12)  # clipped before the evaluation
    assert torch.allclose(calls[2], col(0.66, -0.16, 0.835), atol=1e-12)
    assert a[0, f[0].argmax(), 0].item() == pytest.approx(0.835)
    with pytest.raises(ValueError, match="noise"):
        dfo(logits_fn, a0, lo, hi, iterations=3, uniforms=us, noise=xis[:1])


def test_resample_inverts_the_cdf_and_matches_softmax_frequencies():
    logits = torch.log(torch.tensor([[0.2, 0.0, 0.5, 0.3]]))
    a = torch.arange(4.0)[None, :, None]
    _, idx = resample(a, logits, 1.0, None, uniforms=torch.tensor([[0.95, 0.0, 0.19, 0.25]]))
    # cdf (0.2, 0.2, 0.7, 1); sorted uniforms (0, 0.19, 0.25, 0.95); the zero-mass index 1 is never drawn
    assert idx.tolist() == [[0, 0, 2, 3]]
    g = torch.Generator().manual_seed(0)
    _, idx = resample(torch.arange(40000.0)[None, :, None], logits.repeat_interleave(10000, 1), 2.0, g)
    freq = torch.bincount(idx[0] // 10000, minlength=4).double() / 40000
    p = torch.softmax(logits[0] / 2.0, 0).double()  # temperature 2: p^(1/2), renormalized
    assert torch.allclose(freq, p, atol=0.01)


def test_autoregressive_dfo_finds_prefix_dependent_optimum():
    # head j prefers a_j = 0.5 * a_{j-1} + 0.2 (a_{-1} = 0.4): optimum 0.4, 0.4, 0.4
    def logits_fn(x, j):
        prev = torch.full_like(x[..., 0], 0.4) if j == 0 else x[..., j - 1]
        out = -200.0 * (x[..., j] - (0.5 * prev + 0.2)) ** 2
        for i in range(j):
            p = torch.full_like(x[..., 0], 0.4) if i == 0 else x[..., i - 1]
            out = out - 200.0 * (x[..., i] - (0.5 * p + 0.2)) ** 2
        return out

    g = torch.Generator().manual_seed(0)
    a0 = torch.rand(1, 2048, 3, generator=g) * 2 - 1
    a, f = autoregressive_dfo(logits_fn, a0, -torch.ones(3), torch.ones(3), generator=g)
    best = a[0, f[0].argmax()]
    assert torch.allclose(best, torch.full((3,), 0.4), atol=0.05)


def test_autoregressive_dfo_resamples_the_prefix_only():
    # Head 0 picks a single sample; heads 1 and 2 are flat. Algorithm 2 resamples the prefix a_0..j, so the later
    # dimensions keep each slot's own value: dimension 2 still holds many distinct initial values afterwards
    # (whole-sample resampling would have copied sample 0's everywhere, leaving one).
    n = 256
    g = torch.Generator().manual_seed(0)
    a0 = torch.rand(1, n, 3, generator=g) * 2 - 1

    def logits_fn(x, j):
        if j == 0:
            return torch.where((x[..., 0] - a0[0, 0, 0]).abs() < 1e-7, 0.0, -1e9)
        return torch.zeros(x.shape[:-1])

    a, f = autoregressive_dfo(logits_fn, a0, -torch.ones(3), torch.ones(3), iterations=2, noise_std=0.0, generator=g)
    assert torch.equal(a[0, :, 0], a0[0, 0, 0].expand(n))
    assert bool(torch.isin(a[0, :, 2], a0[0, :, 2]).all())  # only initial values, no noise at std 0
    assert len(torch.unique(a[0, :, 2])) > n // 2
    assert f.shape == (1, n)
    # one iteration evaluates the last head without resampling: the samples come back unchanged
    a1, f1 = autoregressive_dfo(lambda x, j: x[..., j], a0, -torch.ones(3), torch.ones(3), iterations=1)
    assert torch.equal(a1, a0) and torch.equal(f1, a0[..., 2])


# ---------------------------------------------------------------- bounds properties
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0),
    form=st.sampled_from(["ibc", "ula"]),
    delta=st.sampled_from([None, 0.1, 0.5]),
)
def test_samplers_never_leave_bounds(seed, scale, form, delta):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-1.0, -0.3]), torch.tensor([0.4, 1.0])
    a0 = lo + (hi - lo) * torch.rand(4, 16, 2, generator=g)
    w = torch.randn(2, generator=g) * scale
    out = langevin(lambda a: w * torch.sin(7 * a) * scale, a0, lo, hi, num_steps=5, step_size_init=1.0,
                   noise_scale=scale, delta_action_clip=delta, form=form, generator=g)
    assert bool(((out >= lo) & (out <= hi)).all())
    out, _ = dfo(lambda a: (a * w).sum(-1) * scale, a0, lo, hi, noise_std=scale, generator=g)
    assert bool(((out >= lo) & (out <= hi)).all())
    out, _ = autoregressive_dfo(lambda a, j: a[..., j] * w[j] * scale, a0, lo, hi, noise_std=scale, generator=g)
    assert bool(((out >= lo) & (out <= hi)).all())


# ---------------------------------------------------------------- network and its hand-written gradient
@pytest.mark.parametrize("cls,depth,sn", [(MLPResNet, 0, False), (MLPResNet, 2, False), (MLPResNet, 6, False),
                                          (MLPResNet, 4, True), (MLPPlain, 1, False), (MLPPlain, 3, False),
                                          (MLPPlain, 2, True)])
def test_input_grad_matches_autograd_and_finite_differences(cls, depth, sn):
    torch.manual_seed(0)
    net = cls(7, 1, 32, depth, spectral_norm=sn).double()
    net.train()
    o = torch.randn(3, 5, dtype=torch.float64)
    net.forward_split(o, torch.zeros(3, 1, 2, dtype=torch.float64))  # one power iteration (training mode)
    net.eval()
    a = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    f = net.forward_split(o, a)[..., 0]
    (g_auto,) = torch.autograd.grad(f.sum(), a)
    v, g_fast = net.input_grad(o, a.detach(), need_value=True, chunk_rows=4)  # exercise chunking
    assert torch.allclose(v, f, atol=1e-12)
    assert torch.allclose(g_fast, g_auto, atol=1e-10)
    h = 1e-6
    for idx in [(0, 0, 0), (2, 3, 1)]:
        ap, am = a.detach().clone(), a.detach().clone()
        ap[idx] += h
        am[idx] -= h
        fd = (net.forward_split(o, ap)[idx[:2]] - net.forward_split(o, am)[idx[:2]]) / (2 * h)
        assert fd.item() == pytest.approx(g_fast[idx].item(), abs=1e-7)


def test_input_grad_does_not_advance_spectral_norm_in_training_mode():
    net = MLPResNet(4, 1, 16, 2, spectral_norm=True)
    net.train()
    u = net.proj.u.clone()
    net.input_grad(torch.randn(2, 2), torch.randn(2, 3, 2))
    assert torch.equal(u, net.proj.u) and net.proj.training  # read as an eval-mode call, the mode restored
    net.forward_split(torch.randn(2, 2), torch.randn(2, 3, 2))  # a training forward stores one iteration
    assert not torch.equal(u, net.proj.u)


def _sn_numpy(w, u, eps=1e-12):
    """IBC's DenseSN power iteration in numpy, kernel k = w.T [in, out]: v = l2n(u k^T), u' = l2n(v k),
    sigma = (v k) u'^T; returns (w / sigma, u')."""
    l2n = lambda x: x / (np.sqrt((x**2).sum()) + eps)  # noqa: E731
    k = w.T
    v = l2n(u @ k.T)
    u_new = l2n(v @ k)
    return w / ((v @ k) @ u_new), u_new


def test_spectral_norm_dense_golden_by_hand():
    """W = [[3, 0], [0, 1]], u0 = (1, 1).
    Call 1: v = (3, 1)/sqrt(10), W v = (9, 1)/sqrt(10), u1 = (9, 1)/sqrt(82), sigma1 = sqrt(82/10) = 2.8635642.
    Call 2 (from u1): v = (27, 1)/sqrt(730), W v = (81, 1)/sqrt(730), u2 = (81, 1)/sqrt(6562),
    sigma2 = sqrt(6562/730) = 2.9981729. Training stores u1 then u2; eval recomputes sigma1 and keeps u0."""
    w = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    layer = SpectralNormDense(2, 2).double()
    for training, sigmas, us in [(True, (2.8635642, 2.9981729), ((9, 1), (81, 1))),
                                 (False, (2.8635642, 2.8635642), ((1, 1), (1, 1)))]:
        with torch.no_grad():
            layer.weight_orig.copy_(w)
            layer.u.copy_(torch.tensor([1.0, 1.0]))
        layer.train(training)
        for sigma, u in zip(sigmas, us):
            w_bar = layer.weight.detach()
            assert torch.allclose(w_bar, w / sigma, atol=1e-7)
            u = torch.tensor(u, dtype=torch.float64)
            assert torch.allclose(layer.u, u / u.norm() if training else u, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_spectral_norm_dense_matches_numpy_two_calls(training):
    rng = np.random.default_rng(1)
    w, u0, b, x = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=(5, 4))
    layer = SpectralNormDense(4, 3).double().train(training)
    with torch.no_grad():
        layer.weight_orig.copy_(torch.as_tensor(w))
        layer.u.copy_(torch.as_tensor(u0))
        layer.bias.copy_(torch.as_tensor(b))
    w1, u1 = _sn_numpy(w, u0)
    w2, u2 = _sn_numpy(w, u1) if training else (w1, u1)
    y1 = layer(torch.as_tensor(x)).detach().numpy()
    assert np.allclose(y1, x @ w1.T + b, atol=1e-12)
    assert np.allclose(layer.u.numpy(), u1 if training else u0, atol=1e-12)
    y2 = layer(torch.as_tensor(x)).detach().numpy()
    assert np.allclose(y2, x @ w2.T + b, atol=1e-12)
    assert np.allclose(layer.u.numpy(), u2 if training else u0, atol=1e-12)


def test_spectral_norm_dense_gradient_flows_through_the_power_iteration():
    """No stop-gradient (as IBC): d(sum W_bar)/dW includes the path through v, u' and sigma (finite differences)."""
    rng = np.random.default_rng(2)
    w, u0 = rng.normal(size=(3, 2)), rng.normal(size=3)
    layer = SpectralNormDense(2, 3).double().eval()
    with torch.no_grad():
        layer.weight_orig.copy_(torch.as_tensor(w))
        layer.u.copy_(torch.as_tensor(u0))
    (g,) = torch.autograd.grad(layer.weight.sum(), layer.weight_orig)
    h, fd = 1e-6, np.zeros_like(w)
    for i in range(3):
        for j in range(2):
            wp, wm = w.copy(), w.copy()
            wp[i, j] += h
            wm[i, j] -= h
            fd[i, j] = (_sn_numpy(wp, u0)[0].sum() - _sn_numpy(wm, u0)[0].sum()) / (2 * h)
    assert np.allclose(g.numpy(), fd, atol=1e-7)
    sigma = w[0, 0] / _sn_numpy(w, u0)[0][0, 0]
    assert not np.allclose(fd, np.full_like(w, 1.0 / sigma), atol=1e-3)  # the gradient with sigma held constant


@pytest.mark.parametrize("grad_penalty,moves", [(True, 2), (False, 1)])
def test_spectral_norm_u_moves_once_per_training_forward(grad_penalty, moves):
    """IBC's training step calls the network in training mode for the InfoNCE logits and again for the gradient
    penalty: u takes two power iterations per step with the penalty, one without; the chains (training=False)
    move it not at all."""
    cfg = IBCConfig(width=8, spectral_norm=True, grad_penalty=grad_penalty, langevin=LangevinConfig(num_steps=2),
                    num_counter_examples=4)
    torch.manual_seed(0)
    pol = IBCPolicy(cfg, 2, 2).double().train()
    batch = {"obs": torch.randn(3, 2, 2, dtype=torch.float64), "action": torch.rand(3, 1, 2, dtype=torch.float64)}
    w = pol.net.proj.weight_orig.detach().numpy()
    u = pol.net.proj.u.numpy().copy()
    for _ in range(moves):
        u = _sn_numpy(w, u)[1]
    pol.compute_loss(batch, torch.Generator().manual_seed(0))
    assert np.allclose(pol.net.proj.u.numpy(), u, atol=1e-12)


def test_mlp_layout_matches_ibc():
    net = MLPResNet(10, 1, 256, 2)
    assert sum(p.numel() for p in net.parameters()) == 10 * 256 + 256 + 2 * (256 * 256 + 256) + 257
    with pytest.raises(ValueError, match="even"):
        MLPResNet(10, 1, 256, 3)
    assert 0.04 < float(net.blocks[0][0].weight.detach().std()) < 0.06  # N(0, 0.05^2) init


def test_plain_mlp_layout_matches_ibc_mlp_dropout():
    """IBC's MLPDropout with hidden sizes [256, 256] and MLPEBM's Dense(1): 10->256->256->1, ReLU after each hidden."""
    net = MLPPlain(10, 1, 256, 2)
    assert sum(p.numel() for p in net.parameters()) == 10 * 256 + 256 + 256 * 256 + 256 + 257
    x = torch.randn(5, 10)
    h = torch.relu(net.proj(x))
    h = torch.relu(net.hidden[0](h))
    assert torch.allclose(net(x), net.head(h))
    with pytest.raises(ValueError, match="depth >= 1"):
        MLPPlain(10, 1, 256, 0)


def test_chain_dtype_auto_follows_native_bf16(monkeypatch):
    """'auto' picks bfloat16 only where the CPU has native bf16 (emulated bf16 is many times slower)."""
    from steerlab import hw
    import steerlab.ebm.policy as pol_mod

    for flags, expect in [(frozenset({"avx2", "fma"}), "float32"), (frozenset({"avx2", "avx512_bf16"}), "bfloat16"),
                          (frozenset({"amx_bf16"}), "bfloat16")]:
        monkeypatch.setattr(hw, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(hw.platform, "system", lambda: "Linux")
        monkeypatch.setattr(pol_mod, "native_bf16", hw.native_bf16)
        p = IBCPolicy(IBCConfig(chain_dtype="auto"), 8, 2)
        assert p.chain_dtype == expect and p.runtime_info == {"chain_dtype": expect}
    assert IBCPolicy(IBCConfig(chain_dtype="bfloat16"), 8, 2).chain_dtype == "bfloat16"
    with pytest.raises(ValueError, match="chain_dtype"):
        IBCPolicy(IBCConfig(chain_dtype="float16"), 8, 2)


def test_uniform_warmup_uses_uniform_counter_examples_then_langevin():
    """With ``uniform_warmup_steps=W`` the loss before step W is exactly the uniform-only (DFO-config) loss, and from
    step W on exactly the Langevin loss: same weights, batch and generator seed give the same numbers."""
    rng = np.random.default_rng(0)
    obs, act = rng.random((256, 3)).astype(np.float32), rng.random((256, 2)).astype(np.float32)
    batch = {"obs": torch.as_tensor(obs[:32])[:, None].repeat(1, 2, 1), "action": torch.as_tensor(act[:32])[:, None]}

    def loss(cfg, step):
        torch.manual_seed(0)
        pol = IBCPolicy(cfg, 3, 2)
        pol.fit_normalizers({"obs": obs, "action": act}, action_low=np.zeros(2), action_high=np.ones(2))
        return pol.compute_loss(batch, torch.Generator().manual_seed(5), step=step)

    small = dict(width=32, stats_samples=None, langevin=LangevinConfig(num_steps=5))
    warm = IBCConfig(uniform_warmup_steps=3, **small)
    l_uniform, _ = loss(IBCConfig(fraction_langevin_samples=0.0, **small), 0)
    l_langevin, _ = loss(IBCConfig(**small), 0)
    assert l_uniform.item() != l_langevin.item()  # the two phases differ on this batch
    for step in (0, 2):
        lw, m = loss(warm, step)
        assert lw.item() == l_uniform.item() and m["uniform_warmup"] == 1.0
    for step in (3, 10):
        lw, m = loss(warm, step)
        assert lw.item() == l_langevin.item() and m["uniform_warmup"] == 0.0
    with pytest.raises(ValueError, match="uniform_warmup_steps"):
        IBCPolicy(IBCConfig(uniform_warmup_steps=-1), 3, 2)


@pytest.mark.parametrize("n,frac,n_lang", [(8, 0.7, 5), (8, 1.0, 8), (8, 0.0, 0), (8, 0.5, 4), (3, 0.5, 1),
                                           (64, 0.99, 63), (10, 0.29, 2), (100, 0.29, 28), (7, 0.15, 1)])
def test_counter_example_split_truncates_as_ibc(n, frac, n_lang):
    """IBC: langevin = int(fraction * n) (Python float product, so 0.29 * 100 = 28.999999999999996 -> 28), the
    remainder uniform."""
    assert counter_example_split(n, frac) == (n - n_lang, n_lang)


def test_counter_examples_are_uniform_first_then_langevin():
    """n = 8, fraction 0.7: the first 3 counter-examples are the uniform draws, the last 5 Langevin-refined."""
    pol = IBCPolicy(IBCConfig(width=16, fraction_langevin_samples=0.7, langevin=LangevinConfig(num_steps=3)), 2, 2)
    o = torch.randn(4, 4)
    neg = pol.counter_examples(o, 8, torch.Generator().manual_seed(3))
    uni = pol.uniform_actions((4, 8), torch.Generator().manual_seed(3), o.device)
    assert torch.equal(neg[:, :3], uni[:, :3])
    assert not torch.isclose(neg[:, 3:], uni[:, 3:]).all(-1).any()


@pytest.mark.parametrize("inference,energy", [("dfo", "joint"), ("autoregressive_dfo", "autoregressive")])
def test_dfo_inference_temperature_is_its_own_field(monkeypatch, inference, energy):
    """IBC's policy resamples at temperature 1.0 whatever the InfoNCE temperature; dfo_temperature sets it."""
    import steerlab.ebm.policy as pol_mod

    seen = []

    def spy(fn):
        def wrapped(*args, **kw):
            seen.append(kw["temperature"])
            return fn(*args, **kw)
        return wrapped

    monkeypatch.setattr(pol_mod, "dfo", spy(pol_mod.dfo))
    monkeypatch.setattr(pol_mod, "autoregressive_dfo", spy(pol_mod.autoregressive_dfo))
    o = torch.randn(2, 4)
    for kw, expect in [({}, 1.0), ({"dfo_temperature": 0.25}, 0.25)]:
        cfg = IBCConfig(width=8, inference=inference, energy=energy, temperature=0.1, inference_samples=8, **kw)
        IBCPolicy(cfg, 2, 2).infer_normalized(o, torch.Generator().manual_seed(0))
        assert seen[-1] == expect
    assert IBCConfig().dfo_temperature == 1.0


@pytest.mark.parametrize("mode", ["all", "random"])
def test_autoregressive_loss_trains_every_head_on_every_row(monkeypatch, mode):
    """The paper trains one model per action dimension on every sample: with ar_train_heads='all' each row of the
    batch gives one InfoNCE term per head j (rows r*A + j); 'random' draws one head per row."""
    cfg = IBCConfig(width=8, energy="autoregressive", inference="autoregressive_dfo", num_counter_examples=4,
                    fraction_langevin_samples=0.0, grad_penalty=False, n_obs_steps=1, ar_train_heads=mode)
    pol = IBCPolicy(cfg, 2, 3)
    heads = []
    real = pol.ar_logits
    monkeypatch.setattr(pol, "ar_logits", lambda o, a, j: heads.append(j.clone()) or real(o, a, j))
    batch = {"obs": torch.randn(5, 1, 2), "action": torch.rand(5, 1, 3) * 2 - 1}
    loss, _ = pol.compute_loss(batch, torch.Generator().manual_seed(0))
    (j,) = heads
    if mode == "all":
        assert j.tolist() == [0, 1, 2] * 5
    else:
        assert j.shape == (5,) and bool(((j >= 0) & (j < 3)).all())
    assert torch.isfinite(loss)


def test_made_head_j_depends_on_the_prefix_only():
    """Output j of the masked network is a function of the observation and a_0..j: changing a_k changes heads
    j >= k and leaves heads j < k exactly as they were."""
    from steerlab.nets.made import MaskedARMLP

    torch.manual_seed(0)
    net = MaskedARMLP(obs_dim=3, act_dim=4, width=16, depth=3, init_std=0.5)
    o, a = torch.randn(2, 3), torch.randn(2, 5, 4)
    f = net.forward_split(o, a)
    for k in range(4):
        b = a.clone()
        b[..., k] += 1.0
        g = net.forward_split(o, b)
        assert torch.equal(g[..., :k], f[..., :k])
        assert ((g[..., k:] - f[..., k:]).abs().amax((0, 1)) > 0).all()
    # the observation reaches every head
    assert ((net.forward_split(o + 1, a) - f).abs().amax((0, 1)) > 0).all()
    # hidden degrees in proportion to 1 / (d + 1): 16 units over 4 dims -> 8, 4, 2, 2
    assert net.mask0[:, 3:].sum(0).tolist() == [16, 8, 4, 2]
    with pytest.raises(ValueError, match="width 3 is too small for 4 action dims"):
        MaskedARMLP(3, 4, width=3)


def test_shared_cuts_golden():
    """Counts proportional to 1 / (j + 1) by largest remainders: n = 16, A = 4 gives shares 7.68, 3.84, 2.56, 1.92
    -> floors 7, 3, 2, 1 and the 3 left to remainders .92, .84, .68 (j = 3, 1, 0)."""
    from steerlab.ebm.policy import shared_cuts

    assert shared_cuts(16, 4).tolist() == [0] * 8 + [1] * 4 + [2] * 2 + [3] * 2
    assert shared_cuts(5, 1).tolist() == [0] * 5
    assert len(shared_cuts(16, 32)) == 16 and shared_cuts(16, 32)[0] == 0


def test_shared_autoregressive_loss_is_each_heads_infonce():
    """ar_train_heads='shared': one pass over [counter-examples, positive]; head m's term is IBC's InfoNCE over the
    positive and the counter-examples whose cut is <= m, recomputed here head by head from the same draws."""
    from steerlab.ebm.losses import info_nce
    from steerlab.ebm.policy import shared_cuts

    cfg = IBCConfig(width=16, layers="mlp", energy="autoregressive", inference="autoregressive_dfo",
                    ar_network="made", ar_train_heads="shared", num_counter_examples=6, fraction_langevin_samples=0.0,
                    grad_penalty=False, n_obs_steps=1, temperature=0.5)
    pol = IBCPolicy(cfg, 2, 3)
    batch = {"obs": torch.randn(4, 1, 2), "action": torch.rand(4, 1, 3) * 2 - 1}
    loss, m = pol.compute_loss(batch, torch.Generator().manual_seed(0))
    o = pol.obs_features(batch["obs"])
    pos = pol.act_norm.normalize(batch["action"][:, 0])
    u = pol.uniform_actions((4, 6), torch.Generator().manual_seed(0), pos.device)
    cuts = shared_cuts(6, 3)
    neg = pos[:, None].repeat(1, 6, 1)
    for k, j in enumerate(cuts.tolist()):
        dims = range(j + 1) if k % 2 else [j]
        for d in dims:
            neg[:, k, d] = u[:, k, d]
    f = pol.net.forward_split(o, torch.cat([neg, pos[:, None]], 1))
    terms = [info_nce(f[:, -1, h], f[:, :-1, h][:, cuts <= h], 0.5) for h in range(3)]
    # IBC's KL form clips probabilities at 1e-7; the shared loss is the plain cross-entropy: equal here
    assert torch.allclose(loss, torch.stack(terms).mean(), atol=1e-5)
    assert m["e_pos"] != m["e_neg"]
    with pytest.raises(ValueError, match="needs ar_network='made'"):
        IBCPolicy(IBCConfig(energy="autoregressive", inference="autoregressive_dfo", ar_train_heads="shared"), 2, 3)
