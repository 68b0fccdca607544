"""Samplers: convergence to the exact answer on Gaussian data (where the ideal denoiser is analytic) at the
expected order, gradients w.r.t. the initial noise against float64 finite differences for every sampler x
noise source x gradient mode, and the schedules' golden values."""

import math

import pytest
import torch

from steerlab.sampling import (
    alphas_cumprod, eps_to_x0, explicit, fresh, from_seed, inference_timesteps, karras_sigmas, no_noise,
    sample_ddim, sample_ddpm, sample_euler, sample_heun, sample_res, squaredcos_cap_v2, velocity_to_x0,
)

MU = torch.tensor([0.3, -0.5, 1.0], dtype=torch.float64)
S = torch.tensor([0.5, 0.2, 1.5], dtype=torch.float64)


def ideal_eps(abar):
    def eps(x, t):
        ab = abar[t.round().long()].view(-1, 1)
        return torch.sqrt(1 - ab) * (x - torch.sqrt(ab) * MU) / (ab * S**2 + 1 - ab)
    return eps


def ideal_velocity(x, t):
    t = t.view(-1, 1)
    m, V = (1 - t) * MU, t**2 + (1 - t) ** 2 * S**2
    return t * (x - m) / V - (MU + (1 - t) * S**2 * (x - m) / V)


def ideal_x0(x, sigma):
    s2 = sigma.view(-1, 1) ** 2
    return MU + S**2 / (S**2 + s2) * (x - MU)


def _slope(ns, errs):
    return -(math.log(errs[-1]) - math.log(errs[0])) / (math.log(ns[-1]) - math.log(ns[0]))


Z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
BIG_T = 20_000
ABAR = alphas_cumprod(squaredcos_cap_v2(BIG_T))


def test_schedule_golden_values():
    b = squaredcos_cap_v2(2)
    f = lambda t: math.cos((t / 2 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert b[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-12)
    assert b[1].item() == pytest.approx(0.999)  # 1 - f(2)/f(1) = 1 is capped
    assert inference_timesteps(100, 10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    s = karras_sigmas(2, 0.002, 80.0, 7.0)
    mid = ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert s.tolist() == pytest.approx([80.0, mid, 0.002], rel=1e-12)


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("res", 2)])
def test_deterministic_samplers_converge_at_their_order(name, order):
    ns = [32, 64, 128, 256]
    errs = []
    for n in ns:
        if name == "ddim":
            ts = inference_timesteps(BIG_T, n)
            a = ABAR[ts[0]]
            exact = MU + S * (Z - a.sqrt() * MU) / torch.sqrt(a * S**2 + 1 - a)
            out = sample_ddim(ideal_eps(ABAR), Z, ABAR, ts, eta=0.0)
        elif name in ("euler", "heun"):
            exact = MU + S * Z
            out = (sample_euler if name == "euler" else sample_heun)(ideal_velocity, Z, n)
        else:
            sig = karras_sigmas(n)
            zhat = (sig[0] * Z - MU) / torch.sqrt(S**2 + sig[0] ** 2)
            x_min = MU + torch.sqrt(S**2 + sig[-1] ** 2) * zhat
            exact = ideal_x0(x_min, sig[-1:].expand(len(Z)))
            out = sample_res(ideal_x0, Z, sig)
        errs.append((out - exact).abs().max().item())
    assert errs == sorted(errs, reverse=True), errs
    assert errs[-1] < 0.03
    assert abs(_slope(ns, errs) - order) < 0.25, (errs, _slope(ns, errs))


def _linear_chain_moments(run, n_noise):
    """Mean and std of a chain affine in (z, per-step noise), from its value at 0 and its Jacobian."""
    z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    xi = torch.zeros(n_noise, 1, 3, dtype=torch.float64, requires_grad=True)
    y = run(z, explicit(xi))
    y.sum().backward()
    var = z.grad[0] ** 2 + (xi.grad[:, 0] ** 2).sum(0)
    return y.detach()[0], var.sqrt()


@pytest.mark.parametrize("eta", [None, 1.0, 0.5])  # None: DDPM ancestral
def test_stochastic_samplers_converge_in_distribution(eta):
    ns, errs = [16, 32, 64, 128], []
    for n in ns:  # "trailing" steps from the last training index, where abar ~ 0 and x_T ~ N(0, I) exactly
        ts = [round((BIG_T - 1) * (1 - k / (n - 1))) for k in range(n)]
        if eta is None:
            run = lambda z, nz: sample_ddpm(ideal_eps(ABAR), z, ABAR, ts, noise=nz)  # noqa: E731
        else:
            run = lambda z, nz: sample_ddim(ideal_eps(ABAR), z, ABAR, ts, eta=eta, noise=nz)  # noqa: E731
        mean, std = _linear_chain_moments(run, n)
        errs.append(((mean - MU).abs() + (std - S).abs()).max().item())
    assert errs == sorted(errs, reverse=True), errs
    assert errs[-1] < 0.05
    assert _slope(ns, errs) > 0.7, errs


def test_adapters_reproduce_the_ideal_x0():
    sig = torch.tensor([0.05, 0.7, 3.0], dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # flow -> EDM
    assert torch.allclose(velocity_to_x0(ideal_velocity)(x, sig), ideal_x0(x, sig), atol=1e-12)
    # VP eps -> EDM at sigmas that sit on the training table
    ts = torch.tensor([100, 5000, 15000])
    sig_t = torch.sqrt((1 - ABAR[ts]) / ABAR[ts])
    assert torch.allclose(eps_to_x0(ideal_eps(ABAR), ABAR)(x, sig_t), ideal_x0(x, sig_t), atol=1e-9)


# ------------------------------------------------------------------------------ gradients w.r.t. the noise

torch.manual_seed(0)
NET = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()
ABAR_SMALL = alphas_cumprod(squaredcos_cap_v2(50))
W = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def net_fn(x, t):
    return NET(torch.cat([x, t.view(-1, 1) / 50], 1))


def run_sampler(name, z, noise, grad):
    if name == "ddpm":
        return sample_ddpm(net_fn, z, ABAR_SMALL, inference_timesteps(50, 5), noise=noise, grad=grad)
    if name == "ddim":
        return sample_ddim(net_fn, z, ABAR_SMALL, inference_timesteps(50, 5), eta=0.5, noise=noise, grad=grad)
    if name == "euler":
        return sample_euler(net_fn, z, 5, noise=noise, grad=grad, s_churn=0.5)
    if name == "heun":
        return sample_heun(net_fn, z, 5, noise=noise, grad=grad, s_churn=0.5)
    return sample_res(lambda x, s: x - s.view(-1, 1) * net_fn(x / (1 + s.view(-1, 1)), s / (1 + s)), z,
                      karras_sigmas(5, 0.01, 10.0), noise=noise, grad=grad, s_churn=3.0)


def make_source(mode, xi=None):
    return {"fresh": lambda: fresh(torch.Generator().manual_seed(7)), "none": no_noise,
            "from_seed": lambda: from_seed(3), "explicit": lambda: explicit(xi)}[mode]()


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "heun", "res"])
@pytest.mark.parametrize("mode", ["fresh", "none", "from_seed", "explicit"])
@pytest.mark.parametrize("grad", ["full", "checkpoint"])
def test_gradient_wrt_z0_matches_finite_differences(name, mode, grad):
    z = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    xi = 0.7 * torch.randn(5, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(12))

    def loss(z, xi):
        return (run_sampler(name, z, make_source(mode, xi), grad) * W).sum()

    zr, xr = z.clone().requires_grad_(), xi.clone().requires_grad_()
    loss(zr, xr).backward()
    assert zr.grad is not None and zr.grad.abs().sum() > 0
    h = 1e-6
    fd = torch.zeros(8, dtype=torch.float64)
    for i in range(8):
        e = torch.zeros(8, dtype=torch.float64)
        e[i] = h
        fd[i] = (loss(z + e.view(2, 4), xi) - loss(z - e.view(2, 4), xi)) / (2 * h)
    cos = torch.nn.functional.cosine_similarity(zr.grad.flatten(), fd, 0)
    assert cos >= 0.999 and torch.allclose(zr.grad.flatten(), fd, rtol=1e-4, atol=1e-7)
    if mode == "explicit":  # the per-step noise is itself a parameter
        assert xr.grad is not None and xr.grad.abs().sum() > 0
        e = torch.zeros_like(xi)
        e[1, 0, 2] = h
        fd_xi = (loss(z, xi + e) - loss(z, xi - e)) / (2 * h)
        assert xr.grad[1, 0, 2].item() == pytest.approx(fd_xi.item(), rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler", "heun", "res"])
def test_grad_none_gives_the_same_sample_without_graph(name):
    z = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(11)).requires_grad_()
    a = run_sampler(name, z, make_source("from_seed"), "none")
    b = run_sampler(name, z, make_source("from_seed"), "full")
    c = run_sampler(name, z, make_source("from_seed"), "checkpoint")
    assert not a.requires_grad and b.requires_grad and c.requires_grad
    assert torch.equal(a, b.detach()) and torch.allclose(b, c, atol=0, rtol=0)


def test_from_seed_noise_is_a_signed_permutation_of_z0():
    z = torch.randn(3, 50, 2, generator=torch.Generator().manual_seed(0))
    src = from_seed(5)
    n0, n1 = src.draw(0, z, z), src.draw(1, z, z)
    for n in (n0, n1):
        assert torch.allclose(n.abs().flatten(1).sort(1).values, z.abs().flatten(1).sort(1).values)
    assert not torch.allclose(n0, n1) and torch.equal(n0, src.draw(0, z, z))
    big = torch.randn(4000, 8, generator=torch.Generator().manual_seed(1))
    m = src.draw(3, big, big)
    assert abs(m.mean().item()) < 0.03 and abs(m.std().item() - 1) < 0.03


def test_bad_arguments_are_clear_errors():
    z = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="gradient mode"):
        run_sampler("euler", z, no_noise(), "adjoint-please")
    with pytest.raises(ValueError, match="explicit noise"):
        run_sampler("ddpm", z, explicit(torch.zeros(2, 3, 3, dtype=torch.float64)), "full")
    with pytest.raises(ValueError, match="noise mode"):
        from steerlab.sampling import NoiseSource

        NoiseSource("gaussian")


@pytest.mark.parametrize("clipped_eps", [False, True])
def test_ddim_with_clip_keeps_the_model_eps_unless_asked(clipped_eps):
    """DDIM eta=0 with an active clip, by hand: x0 is clipped; the direction term uses the model's eps (diffusers'
    default) or, with use_clipped_model_output, the eps re-derived from the clipped x0."""
    z = 3 * torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ts, c = [40, 20, 0], 0.3
    x = z
    for t, tp in zip(ts, [*ts[1:], -1]):
        a, ap = ABAR_SMALL[t].item(), (ABAR_SMALL[tp].item() if tp >= 0 else 1.0)
        eps = net_fn(x, torch.full((2,), float(t), dtype=torch.float64))
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-c, c)
        if clipped_eps:
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
    out = sample_ddim(net_fn, z, ABAR_SMALL, ts, clip_sample=c, use_clipped_model_output=clipped_eps)
    assert torch.allclose(out, x, rtol=0, atol=1e-12)
    other = sample_ddim(net_fn, z, ABAR_SMALL, ts, clip_sample=c, use_clipped_model_output=not clipped_eps)
    assert (out - other).abs().max() > 1e-3  # the clip is active, so the two variants differ
    loose = [sample_ddim(net_fn, z, ABAR_SMALL, ts, clip_sample=100.0, use_clipped_model_output=u) for u in (0, 1)]
    assert torch.allclose(*loose, rtol=0, atol=1e-12)  # and agree where nothing is clipped


def test_abar_at_inverts_the_timestep_map_of_eps_to_x0():
    from steerlab.sampling import abar_at

    t = torch.tensor([0.0, 7.0, 49.0])
    assert torch.allclose(abar_at(ABAR_SMALL, t), ABAR_SMALL[[0, 7, 49]], rtol=1e-12, atol=0)
    seen = []
    sig = torch.tensor([0.05, 0.9, 4.0], dtype=torch.float64)
    eps_to_x0(lambda x, t: seen.append(t) or torch.zeros_like(x), ABAR_SMALL)(torch.zeros(3, 2, dtype=torch.float64), sig)
    assert torch.allclose(abar_at(ABAR_SMALL, seen[0]), 1 / (1 + sig**2), rtol=1e-10, atol=0)
