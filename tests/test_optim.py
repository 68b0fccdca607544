"""Keras' Adam (optimizer 'adam_keras'): golden steps by hand and against numpy, state_dict round trip."""

import numpy as np
import pytest
import torch

from steerlab.train.optim import KerasAdam


def _run(opt_factory, grads, lrs=None):
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = opt_factory([w])
    out = []
    for k, g in enumerate(grads):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[k]
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(w.item())
    return out


def test_keras_adam_two_steps_by_hand():
    """lr 1e-3, betas (0.9, 0.999), eps 1e-7, w0 = 1, gradients 1e-5 then -2e-5.
    Step 1: m = 1e-6, v = 1e-13, alpha = 1e-3 sqrt(0.001) / 0.1 = 3.1622777e-4,
            w -= alpha m / (sqrt(v) + 1e-7) = 3.1622777e-10 / 4.1622777e-7 = 7.5974693e-4.
    Step 2: m = 1e-6 + (-2e-5 - 1e-6) 0.1 = -1.1e-6, v = 1e-13 + (4e-10 - 1e-13) 0.001 = 4.999e-13,
            alpha = 1e-3 sqrt(1 - 0.999^2) / (1 - 0.9^2) = 2.3531673e-4,
            w -= alpha m / (sqrt(v) + 1e-7) = -3.2073957e-4.
    torch's Adam with the same eps adds it after dividing sqrt(v) by sqrt(1 - 0.999): its first step is
    1e-3 / 0.1 * 1e-6 / (1e-5 + 1e-7) = 9.9009901e-4."""
    w1, w2 = _run(KerasAdam, [1e-5, -2e-5])
    assert w1 == pytest.approx(1.0 - 7.5974693e-4, abs=1e-11)
    assert w2 == pytest.approx(1.0 - 7.5974693e-4 + 3.2073957e-4, abs=1e-11)
    (t1,) = _run(lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7), [1e-5])
    assert t1 == pytest.approx(1.0 - 9.9009901e-4, abs=1e-11)


def _keras_adam_numpy(w, grads, lrs, b1=0.9, b2=0.999, eps=1e-7):
    m, v = np.zeros_like(w), np.zeros_like(w)
    out = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        w = w - alpha * m / (np.sqrt(v) + eps)
        out.append(w.copy())
    return out


def test_keras_adam_matches_numpy_with_a_schedule_and_resumes_from_state_dict():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) * 10.0 ** rng.integers(-8, 1) for _ in range(6)]
    lrs = [1e-3 * 0.99 ** (k / 100) for k in range(6)]  # IBC's ExponentialDecay, read at steps 0..5
    expect = _keras_adam_numpy(w0, grads, lrs)

    def make():
        p = torch.nn.Parameter(torch.as_tensor(w0.copy()))
        return p, KerasAdam([p], lr=1e-3)

    p, opt = make()
    for k in range(6):
        opt.param_groups[0]["lr"] = lrs[k]
        p.grad = torch.as_tensor(grads[k])
        opt.step()
        assert np.allclose(p.detach().numpy(), expect[k], rtol=0, atol=1e-12)
    # stop after 3 steps, rebuild from the state dicts, continue: the same numbers
    q, opt_q = make()
    for k in range(3):
        opt_q.param_groups[0]["lr"] = lrs[k]
        q.grad = torch.as_tensor(grads[k])
        opt_q.step()
    state, weights = opt_q.state_dict(), q.detach().clone()
    r, opt_r = make()
    with torch.no_grad():
        r.copy_(weights)
    opt_r.load_state_dict(state)
    assert opt_r.param_groups[0]["step"] == 3
    for k in range(3, 6):
        opt_r.param_groups[0]["lr"] = lrs[k]
        r.grad = torch.as_tensor(grads[k])
        opt_r.step()
    assert torch.equal(r.detach(), p.detach())


def test_keras_adam_counts_steps_globally_and_rejects_weight_decay():
    """Keras' bias correction uses the optimizer's iteration count, also for a variable skipped in some steps."""
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = KerasAdam([a, b])
    a.grad = torch.ones(1)
    opt.step()  # b has no gradient: untouched, but the step count advances
    b.grad = torch.ones(1)
    a.grad = None
    opt.step()
    # b's first update at t = 2: m = 0.1, v = 0.001, alpha = 1e-3 sqrt(1 - 0.999^2) / (1 - 0.81)
    alpha = 1e-3 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    assert b.item() == pytest.approx(-alpha * 0.1 / (np.sqrt(0.001) + 1e-7), rel=1e-5)  # float32
    assert a.item() == pytest.approx(-1e-3 * np.sqrt(0.001) / 0.1 * 0.1 / (np.sqrt(0.001) + 1e-7), rel=1e-5)
    with pytest.raises(ValueError, match="weight decay"):
        KerasAdam([a], weight_decay=1e-4)
