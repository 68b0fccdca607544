"""IBC's training losses as pure functions.

Sign convention: the network output ``f`` is a logit, the energy is ``E = -f`` (lower energy = better
action). Functions here take logits ``f`` as IBC does.
"""

from __future__ import annotations

import torch

#: Keras ``backend.epsilon()``: KLDivergence clips both distributions to ``[eps, 1]``.
KERAS_EPS = 1e-7


def info_nce(f_pos: torch.Tensor, f_neg: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """IBC's InfoNCE as computed by ``tf.keras.losses.KLDivergence`` on a one-hot target.

    Args:
        f_pos: ``[B]`` logits of the demonstrated actions.
        f_neg: ``[B, n]`` logits of the counter-examples.
        temperature: softmax temperature.

    Returns:
        ``[B]`` per-example loss ``sum_j clip(y_j) log(clip(y_j) / clip(p_j))`` with ``y`` one-hot on the
        positive (placed last, as IBC does) and ``p = softmax([f_neg, f_pos] / T)``; the clip at 1e-7 caps
        ``-log p_pos`` at about 16.12 and adds the tiny terms of the clipped zero entries.
    """
    if f_neg.dim() != 2 or f_pos.shape != f_neg.shape[:1]:
        raise ValueError(f"info_nce expects f_pos [B] and f_neg [B, n], got {list(f_pos.shape)} and {list(f_neg.shape)}")
    logits = torch.cat([f_neg, f_pos[:, None]], dim=1) / temperature
    p = torch.softmax(logits, dim=1).clamp(KERAS_EPS, 1.0)
    y = torch.zeros_like(p)
    y[:, -1] = 1.0
    y = y.clamp(KERAS_EPS, 1.0)
    return (y * torch.log(y / p)).sum(dim=1)


def grad_norm(grad: torch.Tensor, norm: str = "inf") -> torch.Tensor:
    """Norm of ``grad [..., A]`` over the last axis: ``inf``, ``1`` or ``2``."""
    if norm == "inf":
        return grad.abs().amax(dim=-1)
    if norm == "1":
        return grad.abs().sum(dim=-1)
    if norm == "2":
        return grad.norm(dim=-1)
    raise ValueError(f"unknown gradient norm {norm!r}; use 'inf', '1' or '2'")


def gradient_penalty(grad_f: torch.Tensor, margin: float = 1.0, norm: str = "inf", square: bool = True) -> torch.Tensor:
    """IBC's gradient penalty on ``grad_f = d f / d a`` at ``[B, M, A]`` actions.

    Returns ``[B]``: mean over the ``M`` actions of ``max(0, ||grad_f||_norm - margin)`` (squared if
    ``square``). IBC applies it at the final chain samples plus the positive, in normalized action space.
    """
    g = torch.relu(grad_norm(grad_f, norm) - margin)
    if square:
        g = g * g
    return g.mean(dim=-1)
