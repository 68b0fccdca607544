"""Noise optimization: it steers an analytic chain where the answer is known, respects its priors, budget and
early stop, keeps the best iterate, explains a missing gradient, and the zero-order baselines count their
evaluations. The chain is a flow sampler with the exact velocity of Gaussian data, so the sampled output is
close to mu + s * z and the optimal noise is known."""

import math

import pytest
import torch

from steerlab.sampling import alphas_cumprod, explicit, sample_ddpm, sample_euler, squaredcos_cap_v2
from steerlab.steer.noise_opt import (
    NoiseGradientError, NoiseOptConfig, chi_cdf, chi_nll, optimize_noise, screened_optimize,
)
from steerlab.steer.objectives import EndDistance, ObstacleCost, ReferenceDeviation
from steerlab.steer.search import best_of_n, cem, zo_search

MU, S = torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3])


def velocity(x, t):
    t = t.view(-1, 1, 1)
    m, V = (1 - t) * MU, t**2 + (1 - t) ** 2 * S**2
    return t * (x - m) / V - (MU + (1 - t) * S**2 * (x - m) / V)


def chain(z, step_noise=None, grad="full"):
    return sample_euler(velocity, z, 8, grad=grad)  # [B, H=3, A=2], ~ MU + S * z


def z0(b=4, seed=0):
    return torch.randn(b, 3, 2, generator=torch.Generator().manual_seed(seed))


def test_minimize_reaches_a_target_and_maximize_moves_away():
    target = torch.tensor([0.8, 0.2])
    obj = EndDistance(target)
    res = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.1, steps=150), progress=False, log=None)
    assert (res.initial_loss > 0.05).all() and (res.loss < 0.01).all()
    # the best sample is what the chain gives at the best noise, and its loss is what is reported
    assert torch.allclose(obj(chain(res.z).detach()), res.loss, atol=1e-6)
    assert torch.allclose(res.sample, chain(res.z).detach(), atol=1e-6)
    up = optimize_noise(chain, obj, z0(), NoiseOptConfig(direction="maximize", lr=0.1, steps=30), progress=False, log=None)
    assert (up.loss > up.initial_loss + 0.2).all()
    bests = [h["best_mean"] for h in up.history]
    assert bests == sorted(bests)  # best-iterate tracking never gets worse


@pytest.mark.parametrize("opt,lr", [("sgd", 0.5), ("lbfgs", 0.5)])
def test_other_optimizers(opt, lr):
    obj = ReferenceDeviation(torch.tensor([[0.3, 0.6]] * 3))
    res = optimize_noise(chain, obj, z0(), NoiseOptConfig(optimizer=opt, lr=lr, steps=40), progress=False, log=None)
    assert (res.loss < 0.2 * res.initial_loss).all()


def test_priors_keep_the_noise_plausible():
    obj = EndDistance(torch.tensor([3.0, -2.0]))  # far outside the data: pulls z to extreme norms
    d = 6
    free = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.2, steps=60), progress=False, log=None)
    shell = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.2, steps=60, project_shell=True), progress=False, log=None)
    trust = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.2, steps=60, trust_radius=1.0), progress=False, log=None)
    chi = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.2, steps=60, chi_weight=1.0), progress=False, log=None)
    assert free.z.flatten(1).norm(dim=1).min() > 6
    assert torch.allclose(shell.z.flatten(1).norm(dim=1), torch.full((4,), math.sqrt(d)), atol=1e-5)
    assert ((trust.z - z0()).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()
    assert chi.z.flatten(1).norm(dim=1).max() < free.z.flatten(1).norm(dim=1).min()
    assert (chi_cdf(shell.z) > 0.005).all() and (chi_cdf(shell.z) < 0.995).all()


def test_chi_golden_values():
    z = torch.tensor([[3.0, 4.0]])  # d = 2, |z| = 5
    assert chi_nll(z).item() == pytest.approx(0.5 * 25 - 1 * math.log(5))
    assert chi_cdf(z).item() == pytest.approx(1 - math.exp(-25 / 2))  # chi_2 CDF = 1 - exp(-r^2/2)
    z1 = torch.tensor([[1.0]])  # d = 1: P(|N(0,1)| <= 1) = erf(1/sqrt2)
    assert chi_cdf(z1).item() == pytest.approx(math.erf(1 / math.sqrt(2)))


def test_budget_and_early_stop():
    obj = EndDistance(torch.tensor([0.8, 0.2]))
    cfg = NoiseOptConfig(lr=0.1, steps=1000, budget_nfe=200)
    res = optimize_noise(chain, obj, z0(), cfg, nfe_per_sample=8, backward_cost=1.5, progress=False, log=None)
    assert res.stopped == "budget" and res.nfe <= 200 and res.nfe > 200 - 8 * 2.5 - 8
    flat = optimize_noise(chain, lambda s: s.sum((1, 2)) * 0 + (s[:, 0, 0] - 10).abs().clamp(max=1e-9) + s[:, 0, 0] * 1e-12,
                          z0(), NoiseOptConfig(lr=0.1, steps=500, patience=5), progress=False, log=None)
    assert flat.stopped == "early stop" and flat.steps <= 6


def test_explicit_step_noise_is_optimized_too():
    abar = alphas_cumprod(squaredcos_cap_v2(20))
    net = torch.nn.Linear(6, 6)

    def eps(x, t):
        return net(x.flatten(1)).view_as(x) * 0.1

    def ddpm(z, xi):
        return sample_ddpm(eps, z, abar, list(range(19, -1, -4)), noise=explicit(xi))

    xi0 = torch.randn(5, 4, 3, 2, generator=torch.Generator().manual_seed(1))
    obj = EndDistance(torch.tensor([0.5, -0.5]))
    res = optimize_noise(ddpm, obj, z0(), NoiseOptConfig(lr=0.05, steps=40, optimize_step_noise=True),
                         step_noise_init=xi0, progress=False, log=None)
    assert res.step_noise is not None and not torch.equal(res.step_noise, xi0)
    assert (res.loss < res.initial_loss).all()
    assert torch.allclose(obj(ddpm(res.z, res.step_noise)).detach(), res.loss, atol=1e-5)


def test_a_missing_gradient_is_explained():
    obj = EndDistance(torch.tensor([0.8, 0.2]))
    with pytest.raises(NoiseGradientError, match="no_grad or with grad='none'"):
        optimize_noise(lambda z, xi: chain(z, grad="none"), obj, z0(), NoiseOptConfig(steps=2), progress=False, log=None)
    with pytest.raises(NoiseGradientError, match="detach"):
        optimize_noise(chain, lambda s: obj(s).detach(), z0(), NoiseOptConfig(steps=2), progress=False, log=None)
    fixed = z0(seed=5)
    with pytest.raises(NoiseGradientError, match="does not use its z"):
        optimize_noise(lambda z, xi: chain(fixed) + 0 * torch.ones(1, requires_grad=True), obj, z0(),
                       NoiseOptConfig(steps=2), progress=False, log=None)
    with pytest.raises(NoiseGradientError, match="exactly zero"):
        optimize_noise(chain, lambda s: obj(s.clamp(min=5.0)), z0(), NoiseOptConfig(steps=2), progress=False, log=None)
    with pytest.raises(ValueError, match="one value per restart"):
        optimize_noise(chain, lambda s: s.sum(), z0(), NoiseOptConfig(steps=2), progress=False, log=None)


def test_log_reports_config_initial_loss_and_gradient():
    lines = []
    optimize_noise(chain, EndDistance(torch.tensor([0.8, 0.2])), z0(), NoiseOptConfig(steps=3), progress=False,
                   log=lines.append)
    text = "\n".join(lines)
    assert "config" in text and "initial loss" in text and "gradient reached z0" in text and "best" in text


def test_same_seed_same_numbers():
    obj = ObstacleCost(torch.tensor([0.5, 0.5]), 0.2)
    a = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.05, steps=10), progress=False, log=None)
    b = optimize_noise(chain, obj, z0(), NoiseOptConfig(lr=0.05, steps=10), progress=False, log=None)
    assert torch.equal(a.z, b.z) and torch.equal(a.loss, b.loss)


def test_zero_order_baselines_count_evaluations_and_improve():
    obj = EndDistance(torch.tensor([0.8, 0.2]))
    g = torch.Generator().manual_seed(0)
    first = z0()
    bon = best_of_n(chain, obj, first.shape, 32, nfe_per_sample=8, generator=g, z_first=first)
    assert bon.nfe == 32 * 8 and (bon.loss <= obj(chain(first, grad="none"))).all()
    zo = zo_search(chain, obj, first, iterations=8, n_neighbors=4, nfe_per_sample=8, generator=g)
    assert zo.nfe == (1 + 32) * 8 and (zo.loss < obj(chain(first, grad="none"))).all()
    ce = cem(chain, obj, first.shape, iterations=4, population=8, nfe_per_sample=8, generator=g)
    assert ce.nfe == 32 * 8
    assert torch.allclose(obj(chain(ce.z, grad="none")), ce.loss, atol=1e-6)
    up = cem(chain, obj, first.shape, iterations=4, population=8, direction="maximize", generator=g)
    assert (up.loss > ce.loss).all()


def test_screened_optimize_starts_from_the_best_draw_and_keeps_the_budget():
    obj = EndDistance(torch.tensor([0.8, 0.2]))
    cfg = NoiseOptConfig(lr=0.05, steps=1000, budget_nfe=8 * 16 + 8 * 3 * 6 + 8)
    kw = dict(screen_draws=16, nfe_per_sample=8, backward_cost=2.0)
    r = screened_optimize(chain, obj, z0(), cfg, generator=torch.Generator().manual_seed(1), **kw)
    screen = best_of_n(chain, obj, z0().shape, 16, nfe_per_sample=8, generator=torch.Generator().manual_seed(1),
                       z_first=z0())
    assert (r.loss < screen.loss).all()  # gradient steps from the best draw improve every row
    assert torch.allclose(r.initial_loss, screen.loss, atol=1e-6)  # and start exactly there
    assert r.steps == 6 and r.nfe == cfg.budget_nfe and r.stopped == "budget"
    again = screened_optimize(chain, obj, z0(), cfg, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(again.z, r.z) and torch.equal(again.loss, r.loss)
    with pytest.raises(ValueError, match="set cfg.budget_nfe"):
        screened_optimize(chain, obj, z0(), NoiseOptConfig(), **kw)
    with pytest.raises(ValueError, match="less than one gradient step"):
        screened_optimize(chain, obj, z0(), NoiseOptConfig(budget_nfe=8 * 16 + 8), **kw)


def test_screening_finds_the_basin_a_single_gradient_start_misses():
    """A wide local maximum at 0 around the start and a higher, narrow one at 2: gradient ascent from the start
    stays at the local one, the screen of prior draws lands most rows in the global one's basin."""
    def f(z):  # [B, 1] -> [B]
        return torch.exp(-z[:, 0] ** 2 / 0.5) + 2 * torch.exp(-(z[:, 0] - 2) ** 2 / 0.1)

    def ident(z, step_noise=None):
        return z

    start = torch.full((8, 1), 0.1)
    cfg = NoiseOptConfig(direction="maximize", lr=0.05, steps=1000, budget_nfe=64 + 2 * 30 + 1)
    alone = optimize_noise(ident, f, start, cfg, backward_cost=1.0, progress=False, log=None)
    assert (alone.loss < 1.01).all() and (alone.z.abs() < 0.2).all()  # climbed the local maximum only
    r = screened_optimize(ident, f, start, cfg, screen_draws=64, backward_cost=1.0,
                          generator=torch.Generator().manual_seed(0))
    # (rows left in the local basin get fewer steps there: equal up to convergence)
    assert (r.loss >= alone.loss - 1e-4).all() and int((r.loss > 1.9).sum()) >= 6


def test_noise_modes_of_a_policy_chain():
    """from_seed and none give deterministic chains (same z, same chunk); gradients reach z0 through both."""
    from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, GenerativePolicy
    from steerlab.steer.policy_chain import chain_nfe, policy_sampler

    torch.manual_seed(0)
    pol = GenerativePolicy(DiffusionConfig(horizon=4, n_obs_steps=1, n_action_steps=2, num_train_timesteps=20,
                                           num_inference_steps=5, denoiser=DenoiserConfig(width=32, depth=2)), 2, 2)
    obs = torch.rand(3, 1, 2)
    for mode in ("none", "from_seed", "fresh"):
        ch = policy_sampler(pol, obs, noise_mode=mode)
        assert ch.nfe == 5 and ch.shape == (3, 4, 2)
        z = torch.randn(ch.shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
        a, b = ch.sample_fn(z), ch.sample_fn(z)
        assert torch.equal(a, b)
        a.sum().backward()
        assert z.grad.abs().sum() > 0
    assert chain_nfe("heun", 5) == 10 and chain_nfe("res", 5) == 6
    with pytest.raises(ValueError, match="explicit"):
        policy_sampler(pol, obs, noise_mode="explicit").sample_fn(z)


def test_fresh_step_noise_is_independent_of_z0_drawn_with_the_same_seed():
    """`steerlab noise` draws z0 from manual_seed(noise_seed) and passes the same seed to the chain: with fresh
    per-step noise, DDPM's step-0 injection must not be a copy of z0 (a 2-step DDPM injects only at step 0)."""
    from steerlab.generative.policy import DenoiserConfig, DiffusionConfig, GenerativePolicy
    from steerlab.steer.policy_chain import initial_noise, policy_sampler

    torch.manual_seed(0)
    pol = GenerativePolicy(DiffusionConfig(horizon=4, n_obs_steps=1, n_action_steps=2, num_train_timesteps=20,
                                           num_inference_steps=2, clip_sample=None,
                                           denoiser=DenoiserConfig(width=32, depth=2)), 2, 2)
    obs = torch.rand(3, 1, 2)
    seed = 5
    ch = policy_sampler(pol, obs, noise_mode="fresh", seed=seed, grad="none")
    z = torch.randn(ch.shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(initial_noise(ch.shape, ch.n_noise_steps, seed)[0], z)  # the CLI's z0
    with_z0_as_step_noise = ch.sample_fn(z, torch.stack([z, torch.zeros_like(z)]))
    out = ch.sample_fn(z)
    assert not torch.allclose(out, with_z0_as_step_noise, atol=1e-4)
    # the injected noise is a fixed draw of its own stream, the same on every call
    assert torch.equal(out, ch.sample_fn(z))
    xi0 = ch.sample_fn(z, torch.stack([torch.zeros_like(z), torch.zeros_like(z)]))
    assert not torch.allclose(out, xi0, atol=1e-4)


def test_path_obstacle_cost_follows_the_env_and_its_gradient_is_exact():
    import gymnasium as gym
    import numpy as np

    import steerlab  # noqa: F401
    from steerlab.steer.objectives import PathObstacleCost

    env = gym.make("steerlab/Particle-v0", n_dim=2).unwrapped
    obs, _ = env.reset(seed=1)
    chunk = torch.rand(1, 4, 2, generator=torch.Generator().manual_seed(0))
    center = ((obs["pos_agent"] + chunk[0, 0].numpy()) / 2).tolist()  # on the way to the first set-point
    cost = PathObstacleCost(center, 0.2, obs["pos_agent"][None], obs["vel_agent"][None])
    path = cost.path(chunk)[0]
    for h in range(4):
        o, *_ = env.step(chunk[0, h].numpy())
        assert np.allclose(path[(h + 1) * 10 - 1].numpy(), o["pos_agent"], atol=1e-5)  # the env's own physics
    c64 = PathObstacleCost(center, 0.2, obs["pos_agent"][None].astype(np.float64),
                           obs["vel_agent"][None].astype(np.float64))
    c64.center, c64.pos, c64.vel = c64.center.double(), c64.pos.double(), c64.vel.double()
    x = chunk.double().requires_grad_()
    (g,) = torch.autograd.grad(c64(x).sum(), x)
    e = torch.zeros_like(x)
    e[0, 0, 0] = 1e-6
    fd = (c64(x + e) - c64(x - e)).item() / 2e-6
    assert abs(fd) > 1e-3  # the path enters the ball here, so the check is not of two zeros
    assert g[0, 0, 0].item() == pytest.approx(fd, rel=1e-4, abs=1e-9)
