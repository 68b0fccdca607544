"""IBC's energy MLPs: pre-activation residual blocks (:class:`MLPResNet`, the Langevin configs) and plain
ReLU layers (:class:`MLPPlain`, IBC's ``MLPDropout``, the particle DFO config).

Layout (google-research/ibc ``networks/mlp_ebm.py`` + ``layers/resnet.py``)::

    x -> Dense(width) -> [ReLU -> Dropout -> Dense -> ReLU -> Dropout -> Dense] + skip  (depth/2 times)
      -> Dense(out_dim)

No normalizer, no final activation; kernels and biases initialized N(0, 0.05²). Optional spectral
normalization on every dense layer (:class:`SpectralNormDense`, IBC's ``DenseSN``: one power iteration on every
call, the new ``u`` stored only in training mode).

Besides the usual ``forward``, the network exposes :meth:`MLPResNet.input_grad`, a hand-written
backward pass that returns ``d out / d x_tail`` (the gradient with respect to the last columns of the
input, i.e. the action) without autograd. It skips the weight gradients autograd would set up, reuses
the observation part of the first layer across many action samples, and does not compute the last
block's output when only the gradient is needed. ``tests/test_ebm.py`` checks it against autograd.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``x / (‖x‖₂ + eps)``: the epsilon is added to the norm, as in IBC's ``_l2normalize``."""
    return x / (x.pow(2).sum().sqrt() + eps)


class SpectralNormDense(nn.Module):
    """IBC's ``DenseSN`` (``networks/layers/spectral_norm.py``): a dense layer whose kernel is divided by an
    estimate of its largest singular value, refreshed by one power iteration on every call.

    With the stored vector ``u [out]`` and the raw weight ``W [out, in]`` (IBC's kernel is ``Wᵀ``), a call computes

        v = l2n(Wᵀ u),   u' = l2n(W v),   σ = u' · (W v),   W̄ = W / σ,   l2n(x) = x / (‖x‖ + 1e-12)

    and stores ``u ← u'`` only in training mode; in eval mode every call repeats the iteration from the same
    ``u``. Gradients flow through ``v``, ``u'`` and ``σ`` into ``W`` (IBC has no stop-gradient there); ``u`` itself is
    a buffer. ``u`` starts as N(0, 1) draws, without warm-up iterations.

    Reading :attr:`weight` is one such call (it is what :meth:`forward` uses), so code that reads a layer's
    ``weight`` and ``bias`` works for this layer as for ``nn.Linear``.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.in_features, self.out_features = d_in, d_out
        base = nn.Linear(d_in, d_out)  # PyTorch's default init, replaced by _dense when init_std is given
        self.weight_orig = nn.Parameter(base.weight.detach().clone())
        self.bias = nn.Parameter(base.bias.detach().clone())
        self.register_buffer("u", torch.randn(d_out))

    def power_iteration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W̄, u')`` from the stored ``u``, differentiable with respect to ``W``; stores nothing."""
        w = self.weight_orig
        v = _l2_normalize(self.u @ w)
        wv = w @ v
        u = _l2_normalize(wv)
        return w / (u @ wv), u

    @property
    def weight(self) -> torch.Tensor:
        w_bar, u = self.power_iteration()
        if self.training:
            with torch.no_grad():
                self.u.copy_(u)
        return w_bar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _dense(d_in: int, d_out: int, init_std: float | None, spectral_norm: bool) -> nn.Module:
    layer = SpectralNormDense(d_in, d_out) if spectral_norm else nn.Linear(d_in, d_out)
    if init_std is not None:
        nn.init.normal_(layer.weight_orig if spectral_norm else layer.weight, std=init_std)
        nn.init.normal_(layer.bias, std=init_std)
    return layer


class _EnergyMLP(nn.Module):
    """What IBC's two layer types share: Dense(in, width) -> hidden layers (``_trunk``) -> Dense(out_dim), the
    split first layer (observation part computed once per row) and the spectral-norm handling."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 1,
        width: int = 256,
        depth: int = 2,
        dropout: float = 0.0,
        spectral_norm: bool = False,
        init_std: float | None = 0.05,
    ):
        super().__init__()
        self._check_depth(depth)
        if in_dim <= 0 or out_dim <= 0 or width <= 0:
            raise ValueError(f"in_dim, out_dim and width must be positive, got {in_dim}, {out_dim}, {width}")
        self.in_dim, self.out_dim, self.width, self.depth = in_dim, out_dim, width, depth
        self.dropout = dropout
        dense = lambda i, o: _dense(i, o, init_std, spectral_norm)  # noqa: E731
        self.proj = dense(in_dim, width)
        self._build_hidden(dense)
        self.head = dense(width, out_dim)  # made after the hidden layers: the order of the N(0, 0.05²) draws

    def _check_depth(self, depth: int) -> None:
        raise NotImplementedError

    def _build_hidden(self, dense) -> None:
        """Create the hidden layers with ``dense(d_in, d_out)``."""
        raise NotImplementedError

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _hidden_weights(self, dt: torch.dtype) -> list:
        """The hidden layers' weights and biases in ``dt``, as :meth:`_input_grad_chunk` reads them."""
        raise NotImplementedError

    @staticmethod
    def _input_grad_chunk(weights, x_head, x_tail, need_value):
        """``(value [b, n] or None, grad [b, n, Dt])`` for one chunk of rows."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_dim] -> [..., out_dim]``."""
        return self._trunk(self.proj(x))

    def forward_split(self, x_head: torch.Tensor, x_tail: torch.Tensor) -> torch.Tensor:
        """``forward(cat([x_head broadcast over samples, x_tail], -1))`` without materializing the concat.

        ``x_head [B, Dh]`` (e.g. the observation), ``x_tail [B, N, Dt]`` (e.g. N actions) -> ``[B, N, out_dim]``.
        The first layer's product with ``x_head`` is computed once per row instead of once per sample.
        """
        dh = x_head.shape[-1]
        w0 = self.proj.weight
        h = (x_head @ w0[:, :dh].T + self.proj.bias).unsqueeze(1) + x_tail @ w0[:, dh:].T
        return self._trunk(h)

    @contextlib.contextmanager
    def _spectral_norm_frozen(self):
        """Read spectral-normalized weights as an eval-mode call does: one power iteration, ``u`` not stored."""
        sn = [m for m in self.modules() if isinstance(m, SpectralNormDense)]
        modes = [m.training for m in sn]
        for m in sn:
            m.train(False)
        try:
            yield
        finally:
            for m, mode in zip(sn, modes):
                m.train(mode)

    # ------------------------------------------------------------------ fast input gradient
    def input_grad(
        self,
        x_head: torch.Tensor,
        x_tail: torch.Tensor,
        need_value: bool = False,
        chunk_rows: int = 4096,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Gradient of output 0 with respect to the tail of the input, without autograd.

        The input is ``cat([x_head broadcast over samples, x_tail], -1)``.

        Args:
            x_head: ``[B, Dh]`` the part shared by all samples of a row (the observation).
            x_tail: ``[B, N, Dt]`` the per-sample part (the actions), ``Dh + Dt == in_dim``.
            need_value: also return the output ``[B, N]``.
            chunk_rows: rows (``B·N``) processed at a time; chunks that fit in cache run about 2-3x faster
                on CPU than one pass over 50k rows (measured in ``benchmarks/bench_langevin.py``).
            dtype: compute dtype of the matrix products (e.g. ``torch.bfloat16``, faster on CPUs with
                native bf16 matrix units, much slower without); results are returned in ``x_tail``'s dtype.

        Returns:
            ``(out [B, N] or None, d out[...,0] / d x_tail [B, N, Dt])``.

        Runs in inference mode semantics, as IBC runs its MCMC chains with ``training=False``: no dropout, and
        each spectral-norm layer does one power iteration from its stored ``u`` without storing the result.
        """
        if self.out_dim != 1:
            raise ValueError("input_grad is defined for a scalar output (out_dim == 1)")
        dt = dtype or x_tail.dtype
        dh = x_head.shape[-1]
        with self._spectral_norm_frozen(), torch.no_grad():
            w0 = self.proj.weight.to(dt)
            weights = (w0[:, :dh].T.contiguous(), w0[:, dh:].T.contiguous(), w0[:, dh:].contiguous(),
                       self.proj.bias.to(dt), self._hidden_weights(dt), self.head.weight[0].to(dt),
                       self.head.bias[0].to(dt))
        step = max(1, chunk_rows // max(1, x_tail.shape[1]))
        parts = [
            self._input_grad_chunk(weights, x_head[i : i + step].to(dt), x_tail[i : i + step].to(dt), need_value)
            for i in range(0, x_head.shape[0], step)
        ]
        value = torch.cat([p[0] for p in parts]).to(x_tail.dtype) if need_value else None
        return value, torch.cat([p[1] for p in parts]).to(x_tail.dtype)


class MLPResNet(_EnergyMLP):
    """Dense(width) -> depth/2 pre-activation residual blocks -> Dense(out_dim).

    Args:
        in_dim: input features.
        out_dim: output features (1 for an energy).
        width: hidden width.
        depth: number of dense layers inside the residual stack; must be even (IBC's convention:
            depth 2 = one residual block).
        dropout: dropout rate applied after each activation inside the blocks.
        spectral_norm: make every dense layer a :class:`SpectralNormDense` (IBC's ``DenseSN``).
        init_std: std of the normal init of kernels and biases (IBC: 0.05); None: PyTorch's default init.
    """

    def _check_depth(self, depth: int) -> None:
        if depth % 2 != 0 or depth < 0:
            raise ValueError(f"depth must be a non-negative even number (IBC: 2 layers per residual block), got {depth}")

    def _build_hidden(self, dense) -> None:
        w = self.width
        self.blocks = nn.ModuleList(nn.ModuleList([dense(w, w), dense(w, w)]) for _ in range(self.depth // 2))

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        for l1, l2 in self.blocks:
            y = l1(nn.functional.dropout(torch.relu(h), p, self.training))
            y = l2(nn.functional.dropout(torch.relu(y), p, self.training))
            h = h + y
        return self.head(h)

    def _hidden_weights(self, dt):
        return [(l1.weight.to(dt), l1.bias.to(dt), l2.weight.to(dt), l2.bias.to(dt)) for l1, l2 in self.blocks]

    @staticmethod
    def _input_grad_chunk(weights, x_head, x_tail, need_value):
        w_head_t, w_tail_t, w_tail, b0, blocks, w_out, b_out = weights
        b, n = x_tail.shape[:2]
        # rows = b * n; the observation part of the first layer is computed once per row of x_head
        h = ((x_head @ w_head_t + b0).unsqueeze(1) + x_tail @ w_tail_t).reshape(b * n, -1)  # [rows, W]
        saved = []
        for i, (w1, b1, w2, b2) in enumerate(blocks):
            z1 = torch.addmm(b1, torch.relu(h), w1.T)
            saved.append((h, z1))
            if i < len(blocks) - 1 or need_value:  # the last block's output only matters for the value
                h = torch.addmm(b2, torch.relu(z1), w2.T).add_(h)
        value = (h @ w_out + b_out).reshape(b, n) if need_value else None
        g = w_out  # d out / d h, the same for every row: [W]
        relu_bwd = torch.ops.aten.threshold_backward  # ReLU's backward kernel: grad where input > 0, else 0
        for (w1, _, w2, _), (h_in, z1) in zip(reversed(blocks), reversed(saved)):
            g_p2 = g @ w2
            g_z1 = relu_bwd(g_p2.expand_as(z1) if g_p2.dim() == 1 else g_p2, z1, 0)
            g = relu_bwd(g_z1 @ w1, h_in, 0).add_(g)
        if g.dim() == 1:  # no residual block: the gradient is the same for every sample
            g = g.expand(b * n, g.shape[0])
        return value, (g @ w_tail).reshape(b, n, -1)


class MLPPlain(_EnergyMLP):
    """IBC's ``MLPDropout`` layers: ``depth`` times [Dense(width) -> ReLU -> Dropout], then Dense(out_dim).

    The layer type of the repo's particle DFO config (``particle/mlp_ebm_dfo.gin``: ``MLPEBM.layers =
    'MLPDropout'``). Same interface as :class:`MLPResNet` (``forward``, ``forward_split``, ``input_grad``);
    kernels and biases initialized N(0, 0.05²), optional spectral normalization.
    """

    def _check_depth(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"a plain MLP needs depth >= 1 hidden layers, got {depth}")

    def _build_hidden(self, dense) -> None:
        self.hidden = nn.ModuleList(dense(self.width, self.width) for _ in range(self.depth - 1))

    def _trunk(self, z: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        h = nn.functional.dropout(torch.relu(z), p, self.training)
        for layer in self.hidden:
            h = nn.functional.dropout(torch.relu(layer(h)), p, self.training)
        return self.head(h)

    def _hidden_weights(self, dt):
        return [(layer.weight.to(dt), layer.bias.to(dt)) for layer in self.hidden]

    @staticmethod
    def _input_grad_chunk(weights, x_head, x_tail, need_value):
        w_head_t, w_tail_t, w_tail, b0, hidden, w_out, b_out = weights
        relu_bwd = torch.ops.aten.threshold_backward
        b, n = x_tail.shape[:2]
        zs = [((x_head @ w_head_t + b0).unsqueeze(1) + x_tail @ w_tail_t).reshape(b * n, -1)]
        for w, bias in hidden:
            zs.append(torch.addmm(bias, torch.relu(zs[-1]), w.T))
        value = (torch.relu(zs[-1]) @ w_out + b_out).reshape(b, n) if need_value else None
        g = relu_bwd(w_out.expand_as(zs[-1]), zs[-1], 0)  # d out / d z_last
        for (w, _), z in zip(reversed(hidden), reversed(zs[:-1])):
            g = relu_bwd(g @ w, z, 0)
        return value, (g @ w_tail).reshape(b, n, -1)
