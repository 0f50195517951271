"""bias_act: bias add, activation, gain and clamp fused in one op (NVIDIA StyleGAN2-ADA semantics).

``y = clamp(act(x + b) * gain, -clamp, clamp)`` with ``b`` broadcast along ``dim``. Default
``alpha`` / ``gain`` per activation are those of :data:`ACTIVATIONS` (e.g. lrelu: slope 0.2, gain √2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError
from stylerig_au.ops import jit


@dataclass(frozen=True)
class Activation:
    """One activation: its function, defaults and its id in the CUDA kernel."""

    name: str
    func: Callable[[torch.Tensor, float], torch.Tensor]
    alpha: float
    gain: float
    cuda_id: int
    piecewise_linear: bool  # second derivative is zero everywhere it exists


def _lrelu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.leaky_relu(x, alpha)


def _elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.elu(x, alpha)


# cuda_id values must match the ACT_* constants in cuda_ops/bias_act.h.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("linear", lambda x, _: x, 0.0, 1.0, 0, True),
        Activation("relu", lambda x, _: F.relu(x), 0.0, math.sqrt(2), 1, True),
        Activation("lrelu", _lrelu, 0.2, math.sqrt(2), 2, True),
        Activation("tanh", lambda x, _: torch.tanh(x), 0.0, 1.0, 3, False),
        Activation("sigmoid", lambda x, _: torch.sigmoid(x), 0.0, 1.0, 4, False),
        Activation("elu", _elu, 1.0, 1.0, 5, False),
        Activation("selu", lambda x, _: F.selu(x), 0.0, 1.0, 6, False),
        Activation("softplus", lambda x, _: F.softplus(x), 0.0, 1.0, 7, False),
        Activation("swish", lambda x, _: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 8, False),
    )
}


def kernel_can_win(spec: Activation, gain: float, clamp: float) -> bool:
    """Whether ``impl='auto'`` should run the CUDA kernel for these arguments (the dispatch rule).

    A linear activation with gain 1 and no clamp is a plain broadcast add: the reference is one add
    forward and *no* work backward (the add passes the gradient through), while the kernel's backward
    writes a full extra tensor. Measured on an H200 (bias_act on the 3-channel to-RGB output, fwd+bwd)
    the kernel ran at 0.55-0.77x the reference there, so 'auto' uses the reference for it. Every other
    combination fuses two or more passes and goes to the kernel. ``impl='cuda'`` always runs the kernel.
    """
    return not (spec.name == "linear" and gain == 1 and clamp < 0)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add a bias, apply an activation, scale by ``gain`` and clamp, in one pass.

    Args:
        x: floating tensor of any shape.
        b: 1-D bias of length ``x.shape[dim]``, or None.
        dim: the axis of ``x`` the bias runs along (1 for NCHW).
        act: one of ``ACTIVATIONS`` (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: activation parameter (lrelu slope, elu scale); None for the activation's default.
        gain: output scale; None for the activation's default (√2 for relu/lrelu/swish, else 1).
        clamp: clamp the output to ``[-clamp, clamp]``; None for no clamping.
        impl: 'auto', 'cuda' or 'ref' ('auto' keeps plain bias adds on the reference: see
            :func:`kernel_can_win`).

    Returns:
        Tensor of ``x``'s shape, dtype and device. Twice differentiable on every path.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise StylerigError("bias_act expects a floating-point tensor")
    spec = ACTIVATIONS.get(act)
    if spec is None:
        raise StylerigError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    if x.ndim == 0:
        raise StylerigError("bias_act expects a tensor with at least one dimension")
    dim = dim % x.ndim if -x.ndim <= dim < x.ndim else dim
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
            raise StylerigError(
                f"bias must be 1-D with x.shape[dim] entries; got bias {list(getattr(b, 'shape', []))} "
                f"for x {list(x.shape)} and dim {dim}"
            )
    alpha = float(spec.alpha if alpha is None else alpha)
    gain = float(spec.gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if (impl != "auto" or kernel_can_win(spec, gain, clamp)) and jit.use_cuda(impl, x, "bias_act"):
        from stylerig_au.ops import activation_cuda

        return activation_cuda.bias_act_cuda(x, b, dim, spec, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    spec: Activation,
    alpha: float,
    gain: float,
    clamp: float,
) -> torch.Tensor:
    """Plain PyTorch composition (autograd gives every derivative order)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
