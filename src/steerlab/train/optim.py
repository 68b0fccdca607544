"""Keras' Adam (``tf.keras.optimizers.Adam``, the optimizer of google-research/ibc) as a torch optimizer.

Keras (``optimizer_v2/adam.py`` with TF's ``ApplyAdam`` kernel) differs from ``torch.optim.Adam`` in where the
bias correction and epsilon sit. With ``t`` the 1-based step count shared by all parameters::

    α = lr · sqrt(1 - β2^t) / (1 - β1^t)
    m ← m + (g - m)(1 - β1)
    v ← v + (g² - v)(1 - β2)
    w ← w - α · m / (sqrt(v) + ε),   ε = 1e-7

torch divides ``sqrt(v)`` by ``sqrt(1 - β2^t)`` before adding its ε (1e-8), so the two agree only where
``sqrt(v)`` is large against ε.
"""

from __future__ import annotations

import torch


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras' update (see the module docstring). ``state_dict`` holds ``m``, ``v`` and the step count,
    so a resumed run continues exactly."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7,
                 weight_decay: float = 0.0):
        if weight_decay:
            raise ValueError("Keras' Adam has no weight decay; use optimizer 'adamw' for decoupled weight decay")
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid Adam hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] += 1  # Keras' `iterations + 1`: counts steps, also for parameters without a gradient
            t = group["step"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v, g = state["m"], state["v"], p.grad
                # the scalars in the parameter's dtype, as Keras casts its hyper-parameters to the variable's
                one, b1t, b2t = (torch.tensor(x, dtype=p.dtype, device=p.device) for x in (1.0, b1, b2))
                alpha = group["lr"] * torch.sqrt(one - b2t**t) / (one - b1t**t)
                m.add_((g - m) * (one - b1t))
                v.add_((g * g - v) * (one - b2t))
                p.sub_(m * alpha / (v.sqrt() + group["eps"]))
        return loss
