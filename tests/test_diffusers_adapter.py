"""The diffusers adapter (and steerlab's own samplers where they claim the same chain) against diffusers' own
sampling loops with one fixed random denoiser, fixed z0 and fixed per-step noise; gradients w.r.t. z0 against
float64 central finite differences; the docs/diffusers.md example run as written."""

import re
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler  # noqa: E402

from steerlab.adapters.diffusers import (  # noqa: E402
    UnsupportedSchedulerError, chain_from_scheduler, diffusers_sampler, sample_diffusers,
)
from steerlab.sampling import (  # noqa: E402
    alphas_cumprod, explicit, from_seed, inference_timesteps, sample_ddim, sample_ddpm, sample_euler,
    squaredcos_cap_v2,
)

B, H, A = 3, 4, 2
torch.manual_seed(0)
MLP = torch.nn.Sequential(torch.nn.Linear(H * A + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, H * A))


def model(x, t, net=MLP):
    """A fixed random denoiser of ``x [B, H, A]`` and the scheduler timestep ``t [B]``."""
    tt = t.to(x.dtype).view(-1, 1) / 100
    return net(torch.cat([x.flatten(1), tt], 1)).view(x.shape)


def _t(t, x):
    return torch.full((x.shape[0],), float(t), dtype=x.dtype)


Z = torch.randn(B, H, A, generator=torch.Generator().manual_seed(1))
TOL = 2e-5  # float32 round-off over up to 100 steps


def ddpm_loop(s, n, z, seed):
    """diffusers' DDPM loop; returns the sample and the per-step noise it drew (one draw per timestep > 0 from
    the generator, as DDPMScheduler.step draws it with randn_tensor)."""
    s.set_timesteps(n)
    g, g_copy = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    x, xis = z.clone(), []
    for t in s.timesteps:
        xis.append(torch.randn(x.shape, generator=g_copy) if t > 0 else torch.zeros_like(x))
        x = s.step(model(x, _t(t, x)), t, x, generator=g).prev_sample
    return x, torch.stack(xis)


def ddim_loop(s, n, z, eta, xis, use_clipped_model_output=False):
    s.set_timesteps(n)
    x = z.clone()
    for k, t in enumerate(s.timesteps):
        x = s.step(model(x, _t(t, x)), t, x, eta=eta, use_clipped_model_output=use_clipped_model_output,
                   variance_noise=xis[k] if eta > 0 else None).prev_sample
    return x


def flow_loop(s, n, z, **kw):
    s.set_timesteps(n, **kw)
    x = z.clone()
    for t in s.timesteps:
        x = s.step(model(x, _t(t, x)), t, x).prev_sample
    return x


def _dp_ddpm(T):  # diffusion_policy's / NoMaD's DDPM config
    return DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                         prediction_type="epsilon", variance_type="fixed_small")


def _dp_ddim(T=100):
    return DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                         set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon")


PARITY = {}  # max |diff| per case, printed at the end of the module (pytest -s)


def _record(name, a, b):
    d = (a - b).abs().max().item()
    PARITY[name] = d
    assert d < TOL, (name, d)


@pytest.mark.parametrize("T,n", [(100, 100), (100, 10), (10, 10)])
def test_ddpm_matches_diffusers(T, n):
    ref, xis = ddpm_loop(_dp_ddpm(T), n, Z, seed=3)
    with torch.no_grad():
        out = sample_diffusers(chain_from_scheduler(_dp_ddpm(T), n), model, Z, noise=explicit(xis))
        own = sample_ddpm(model, Z, alphas_cumprod(squaredcos_cap_v2(T)), inference_timesteps(T, n),
                          noise=explicit(xis), clip_sample=1.0)
    _record(f"ddpm T={T} n={n} adapter", out, ref)
    _record(f"ddpm T={T} n={n} steerlab sample_ddpm", own, ref)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clipped", [False, True])
def test_ddim_matches_diffusers(eta, clipped):
    xis = torch.randn(10, B, H, A, generator=torch.Generator().manual_seed(4))
    ref = ddim_loop(_dp_ddim(), 10, 2 * Z, eta, xis, use_clipped_model_output=clipped)  # 2 Z: the clip is active
    with torch.no_grad():
        chain = chain_from_scheduler(_dp_ddim(), 10, eta=eta, use_clipped_model_output=clipped)
        out = sample_diffusers(chain, model, 2 * Z, noise=explicit(xis))
        own = sample_ddim(model, 2 * Z, alphas_cumprod(squaredcos_cap_v2(100)), inference_timesteps(100, 10),
                          eta=eta, noise=explicit(xis), clip_sample=1.0, use_clipped_model_output=clipped)
    _record(f"ddim eta={eta} clipped_eps={clipped} adapter", out, ref)
    _record(f"ddim eta={eta} clipped_eps={clipped} steerlab sample_ddim", own, ref)
    other = ddim_loop(_dp_ddim(), 10, 2 * Z, eta, xis, use_clipped_model_output=not clipped)
    assert (other - ref).abs().max() > 1e-3  # the two eps variants differ on this chain


@pytest.mark.parametrize("pred", ["sample", "v_prediction"])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_prediction_types_and_spacings_match_diffusers(pred, spacing):
    kw = dict(num_train_timesteps=50, prediction_type=pred, timestep_spacing=spacing, clip_sample=True,
              clip_sample_range=1.5)
    ref, xis = ddpm_loop(DDPMScheduler(variance_type="fixed_large", **kw), 7, Z, seed=5)
    with torch.no_grad():
        out = sample_diffusers(chain_from_scheduler(DDPMScheduler(variance_type="fixed_large", **kw), 7), model, Z,
                               noise=explicit(xis))
    _record(f"ddpm {pred} {spacing} fixed_large adapter", out, ref)
    xis = torch.randn(7, B, H, A, generator=torch.Generator().manual_seed(6))
    ref = ddim_loop(DDIMScheduler(set_alpha_to_one=False, **kw), 7, Z, 0.5, xis)
    with torch.no_grad():
        out = sample_diffusers(chain_from_scheduler(DDIMScheduler(set_alpha_to_one=False, **kw), 7, eta=0.5), model,
                               Z, noise=explicit(xis))
    _record(f"ddim eta=0.5 {pred} {spacing} adapter", out, ref)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_euler_matches_diffusers(shift):
    ref = flow_loop(FlowMatchEulerDiscreteScheduler(shift=shift), 10, Z)
    with torch.no_grad():
        out = sample_diffusers(chain_from_scheduler(FlowMatchEulerDiscreteScheduler(shift=shift), 10), model, Z)
    _record(f"flow euler shift={shift} adapter", out, ref)


def test_steerlab_euler_is_flow_match_euler_on_its_own_times():
    """sample_euler's uniform times 1 -> 0 as FlowMatch sigmas (timesteps = 1000 sigma)."""
    n = 8
    ref = flow_loop(FlowMatchEulerDiscreteScheduler(), None, Z, sigmas=[1 - i / n for i in range(n)])
    with torch.no_grad():
        own = sample_euler(lambda x, t: model(x, t * 1000), Z, n)
    _record("flow euler steerlab sample_euler", own, ref)


def test_flow_match_stochastic_sampling_with_explicit_noise():
    s = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    s.set_timesteps(6)
    xis = torch.randn(6, B, H, A, generator=torch.Generator().manual_seed(7))
    x = Z.clone()
    for k, t in enumerate(s.timesteps):  # step() draws its noise from randn_tensor; feed it ours in order
        sig, sig_n = s.sigmas[k], s.sigmas[k + 1]
        x0 = x - sig * model(x, _t(t, x))
        x = (1 - sig_n) * x0 + sig_n * xis[k]
    with torch.no_grad():
        out = sample_diffusers(chain_from_scheduler(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), 6),
                               model, Z, noise=explicit(xis))
    _record("flow stochastic_sampling adapter", out, x)


def test_adapter_does_not_touch_the_scheduler_and_is_pure():
    s = FlowMatchEulerDiscreteScheduler()
    chain = chain_from_scheduler(s, 5)
    assert getattr(s, "num_inference_steps", None) is None and s.step_index is None  # set_timesteps ran on a copy
    with torch.no_grad():
        a, b = sample_diffusers(chain, model, Z), sample_diffusers(chain, model, Z)
    assert torch.equal(a, b)


@pytest.mark.parametrize("make,field", [
    (lambda: DDPMScheduler(variance_type="learned_range"), "variance_type"),
    (lambda: DDPMScheduler(thresholding=True), "thresholding"),
    (lambda: DDIMScheduler(thresholding=True), "thresholding"),
    (lambda: FlowMatchEulerDiscreteScheduler(invert_sigmas=True), "invert_sigmas"),
])
def test_unsupported_configs_name_the_field(make, field):
    with pytest.raises(UnsupportedSchedulerError, match=field):
        chain_from_scheduler(make(), 5)


def test_unsupported_scheduler_and_arguments_are_clear_errors():
    from diffusers import EulerDiscreteScheduler

    with pytest.raises(UnsupportedSchedulerError, match="EulerDiscreteScheduler"):
        chain_from_scheduler(EulerDiscreteScheduler(), 5)
    with pytest.raises(UnsupportedSchedulerError, match="eta"):
        chain_from_scheduler(_dp_ddpm(10), 5, eta=0.5)
    with pytest.raises(UnsupportedSchedulerError, match="set_timesteps"):
        chain_from_scheduler(_dp_ddim(), None)


# ------------------------------------------------------------------------------ gradients w.r.t. z0

MLP64 = torch.nn.Sequential(torch.nn.Linear(H * A + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, H * A)).double()
MLP64.load_state_dict({k: v.double() for k, v in MLP.state_dict().items()})
W = torch.randn(B, H, A, dtype=torch.float64, generator=torch.Generator().manual_seed(8))

GRAD_CASES = {
    "ddpm": (lambda: _dp_ddpm(20), 5, {}, "from_seed"),
    "ddim-eta1": (lambda: _dp_ddim(20), 5, dict(eta=1.0), "explicit"),
    "flow": (FlowMatchEulerDiscreteScheduler, 5, {}, "none"),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
@pytest.mark.parametrize("grad", ["full", "checkpoint"])
def test_gradient_wrt_z0_matches_finite_differences(case, grad):
    make, n, kw, mode = GRAD_CASES[case]
    xi = torch.randn(n, B, H, A, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    chain = diffusers_sampler(lambda x, t: model(x, t, MLP64), make(), (B, H, A), n, noise_mode=mode, seed=2,
                              grad=grad, **kw)
    step_noise = xi if mode == "explicit" else None
    z = 0.5 * Z.double()

    def loss(z):
        return (chain.sample_fn(z, step_noise) * W).sum()

    zr = z.clone().requires_grad_()
    loss(zr).backward()
    h, idx = 1e-6, [(0, 0, 0), (1, 2, 1), (2, 3, 0), (0, 1, 1)]
    for i in idx:
        e = torch.zeros_like(z)
        e[i] = h
        fd = (loss(z + e) - loss(z - e)) / (2 * h)
        assert zr.grad[i].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8), (i, zr.grad[i].item(), fd.item())


def test_noise_optimization_and_search_run_on_a_diffusers_chain():
    from steerlab.steer.noise_opt import NoiseOptConfig, optimize_noise
    from steerlab.steer.search import best_of_n

    chain = diffusers_sampler(model, _dp_ddim(), (B, H, A), 10, grad="checkpoint")
    objective = lambda x: ((x[:, -1] - 0.5) ** 2).sum(-1)  # noqa: E731
    res = optimize_noise(chain.sample_fn, objective, Z, NoiseOptConfig(steps=10, lr=0.1), nfe_per_sample=chain.nfe,
                         progress=False, log=None)
    assert (res.loss <= res.initial_loss).all() and (res.loss < res.initial_loss).any()
    found = best_of_n(chain.sample_fn, objective, (B, H, A), 4, generator=torch.Generator().manual_seed(0))
    assert found.nfe == 4 and found.z.shape == (B, H, A)
    ddpm = diffusers_sampler(model, _dp_ddpm(10), (B, H, A), 10, noise_mode="fresh", seed=1)
    assert torch.equal(ddpm.sample_fn(Z), ddpm.sample_fn(Z))  # fresh: the same draws on every call


def test_docs_example_runs():
    text = (Path(__file__).parents[1] / "docs" / "diffusers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/diffusers.md has no python example"
    ns = {}
    exec(compile("\n".join(blocks), "docs/diffusers.md", "exec"), ns)  # noqa: S102
    res = ns["result"]
    assert (res.loss <= res.initial_loss).all()


def teardown_module(module):
    for k, v in PARITY.items():
        print(f"[parity] {k}: max |diff| {v:.2e}")
