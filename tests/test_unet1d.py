import math

import pytest
import torch

from steerlab.nets.unet1d import ConditionalUnet1D, sinusoidal_embedding

SMALL = dict(time_embed_dim=16, down_dims=(16, 32), n_groups=4)


def small_model(input_dim=3, cond_dim=5, seed=0, **kw):
    torch.manual_seed(seed)
    return ConditionalUnet1D(input_dim, cond_dim, **{**SMALL, **kw})


@pytest.mark.parametrize("input_dim,cond_dim,T,kw", [
    (3, 5, 8, {}),
    (2, 0, 6, {}),
    (4, 7, 8, dict(down_dims=(8, 16, 24), kernel_size=3)),
    (1, 2, 4, dict(down_dims=(8,))),
])
def test_output_shape_matches_input(input_dim, cond_dim, T, kw):
    m = small_model(input_dim, cond_dim, **kw)
    x = torch.randn(3, T, input_dim)
    cond = torch.randn(3, cond_dim) if cond_dim else None
    assert m(x, torch.tensor([0.0, 10.0, 999.0]), cond).shape == x.shape


def test_time_may_be_scalar_or_int():
    m = small_model()
    x, cond = torch.randn(2, 8, 3), torch.randn(2, 5)
    ref = m(x, torch.tensor([7.0, 7.0]), cond)
    for t in (7, 7.0, torch.tensor(7.0), torch.tensor([7, 7])):
        torch.testing.assert_close(m(x, t, cond), ref)


def test_output_depends_on_cond_and_time():
    m = small_model()
    x, cond, t = torch.randn(2, 8, 3), torch.randn(2, 5), torch.tensor([5.0, 500.0])
    out = m(x, t, cond)
    assert (m(x, t, cond + 1.0) - out).abs().max() > 1e-3
    assert (m(x, t + 50.0, cond) - out).abs().max() > 1e-3
    assert (m(x + 1.0, t, cond) - out).abs().max() > 1e-3


def test_samples_are_independent_in_the_batch():
    m = small_model()
    x, cond, t = torch.randn(4, 8, 3), torch.randn(4, 5), torch.rand(4) * 999
    torch.testing.assert_close(m(x, t, cond)[1:2], m(x[1:2], t[1:2], cond[1:2]), rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_input():
    m = small_model()
    x = torch.randn(2, 8, 3, requires_grad=True)
    m(x, torch.tensor([1.0, 2.0]), torch.randn(2, 5)).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.parameters())


def test_float64():
    m = small_model().double()
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    out = m(x, torch.tensor([3.0, 4.0], dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == x.shape and torch.isfinite(out).all()


def test_errors_say_what_is_wrong():
    m = small_model()
    t, cond = torch.zeros(2), torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"expects x \[B, T, 3\]"):
        m(torch.randn(2, 8), t, cond)
    with pytest.raises(ValueError, match=r"expects x \[B, T, 3\]"):
        m(torch.randn(2, 8, 4), t, cond)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(len\(down_dims\)-1\) = 2"):
        m(torch.randn(2, 7, 3), t, cond)
    with pytest.raises(ValueError, match=r"cond must be \[2, 5\], got None"):
        m(torch.randn(2, 8, 3), t, None)
    with pytest.raises(ValueError, match=r"cond must be \[2, 5\], got \[2, 4\]"):
        m(torch.randn(2, 8, 3), t, torch.randn(2, 4))


def test_sinusoidal_embedding_golden_values():
    torch.testing.assert_close(sinusoidal_embedding(torch.tensor([0.0]), 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    # dim 6: half = 3, frequencies exp(-log(1e4) * i / 2) = 1, 1e-2, 1e-4
    t = 2.5
    want = [math.sin(t), math.sin(t * 1e-2), math.sin(t * 1e-4), math.cos(t), math.cos(t * 1e-2), math.cos(t * 1e-4)]
    got = sinusoidal_embedding(torch.tensor([0.0, t]), 6)
    assert got.shape == (2, 6)
    torch.testing.assert_close(got[1], torch.tensor(want), rtol=0, atol=1e-6)
    # integer timesteps are treated as floats
    torch.testing.assert_close(sinusoidal_embedding(torch.tensor([3]), 4),
                               torch.tensor([[math.sin(3), math.sin(3e-4), math.cos(3), math.cos(3e-4)]]))


def test_same_seed_same_model():
    a, b = small_model(seed=1), small_model(seed=1)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    x, cond, t = torch.randn(2, 8, 3), torch.randn(2, 5), torch.tensor([1.0, 2.0])
    assert torch.equal(a(x, t, cond), b(x, t, cond))
    c = small_model(seed=2)
    assert not torch.equal(a(x, t, cond), c(x, t, cond))


def test_default_size_matches_diffusion_policy():
    m = ConditionalUnet1D(input_dim=2, global_cond_dim=66)
    n = sum(p.numel() for p in m.parameters())
    assert 60_000_000 <= n <= 70_000_000, n
