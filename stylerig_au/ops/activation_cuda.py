"""Autograd wrappers of the bias_act CUDA kernel (loaded by :mod:`stylerig_au.ops.jit`).

Forward saves the output ``y`` for piecewise-linear activations with a positive gain and no clamp
(its sign gives the slope, so the input can be freed) and the input ``x`` otherwise. With a clamp the
input is needed: in float16/bfloat16 a saved output equal to the (rounded) bound cannot tell a clamped
element (no gradient) from one rounded onto the bound (gradient, as ``torch.clamp`` gives it). The gradient op is itself
differentiable once more: w.r.t. ``dy`` it is the same linear map, and w.r.t. ``x`` (and so ``b``) it
uses the kernel's second-derivative mode. Third derivatives are not supported.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from stylerig_au.ops import jit
from stylerig_au.ops.activation import Activation

_EMPTY: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _empty(like: torch.Tensor) -> torch.Tensor:
    key = (like.device, like.dtype)
    if key not in _EMPTY:
        _EMPTY[key] = torch.empty(0, device=like.device, dtype=like.dtype)
    return _EMPTY[key]


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum([i for i in range(t.ndim) if i != dim])


class _Params:
    """The op's fixed arguments, carried between the autograd functions."""

    def __init__(self, dim: int, spec: Activation, alpha: float, gain: float, clamp: float, has_bias: bool) -> None:
        self.dim, self.act, self.alpha, self.gain, self.clamp = dim, spec.cuda_id, alpha, gain, clamp
        self.has_bias = has_bias
        self.ref_is_y = spec.piecewise_linear and gain > 0 and clamp < 0

    def run(self, x, b, ref, dy, grad: int) -> torch.Tensor:
        e = _empty(x)
        return jit.load().bias_act(
            x.contiguous(),
            e if b is None else b,
            e if ref is None else ref,
            e if dy is None else dy.contiguous(),
            self.dim,
            self.act,
            grad,
            self.ref_is_y and grad == 1,
            self.alpha,
            self.gain,
            self.clamp,
        )


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, p):  # type: ignore[override]
        x = x.contiguous()
        y = p.run(x, b, None, None, grad=0)
        ctx.p = p
        ctx.save_for_backward(y if p.ref_is_y else x, b)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        ref, b = ctx.saved_tensors
        p = ctx.p
        dx = _BiasActGrad.apply(dy, ref, b, p)
        db = _sum_to_bias(dx, p.dim) if b is not None and ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, ref, b, p):  # type: ignore[override]
        dy = dy.contiguous()
        ctx.p = p
        ctx.save_for_backward(dy, ref, b)
        return p.run(dy, None if p.ref_is_y else b, ref, None, grad=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, ddx):  # type: ignore[override]
        dy, ref, b = ctx.saved_tensors
        p = ctx.p
        ddy = p.run(ddx, None if p.ref_is_y else b, ref, None, grad=1) if ctx.needs_input_grad[0] else None
        dref = db = None
        if not p.ref_is_y and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            dref = p.run(ddx, b, ref, dy, grad=2)
            if b is not None and ctx.needs_input_grad[2]:
                db = _sum_to_bias(dref, p.dim)
        return ddy, dref, db, None


def bias_act_cuda(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, spec: Activation, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """CUDA twin of ``activation._bias_act_ref`` (same arguments, already validated)."""
    if b is not None:
        b = b.to(x.dtype).contiguous()
    p = _Params(dim, spec, alpha, gain, clamp, b is not None)
    needs_grad = x.requires_grad or (b is not None and b.requires_grad)
    if not (needs_grad and torch.is_grad_enabled()):  # skip autograd bookkeeping when nothing needs it
        return p.run(x, b, None, None, grad=0)
    return _BiasAct.apply(x, b, p)
