"""The CUDA path's autograd wrappers, run on CPU against a torch emulation of the kernels' contract.

The emulation implements exactly what ``cuda_ops/upfirdn2d.h`` and ``cuda_ops/bias_act.h`` document
(argument order, correlation filter, leading padding, grad modes), so these tests check the Python
side of the CUDA path — the adjoint padding of upfirdn2d's backward, the saved tensors and the
double backward of bias_act — without a GPU. The GPU tests check the kernels themselves.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylerig_au import ops
from stylerig_au.ops import activation, activation_cuda, jit, upfirdn, upfirdn_cuda


class EmulatedKernels:
    """Forward-only torch twin of the compiled module's two functions."""

    @staticmethod
    def upfirdn2d(x, f, separable, flip, gain, up_x, up_y, down_x, down_y, pad_x0, pad_y0, out_h, out_w):
        assert f.dtype == upfirdn_cuda.filter_dtype(x.dtype) and f.is_contiguous() and f.ndim == (1 if separable else 2)
        g = torch.outer(f, f) if separable else f
        g = (g.flip([0, 1]) if flip else g).double() * gain  # the correlation weights
        n, c, h, w = x.shape
        fh, fw = g.shape
        u = torch.zeros(n, c, h * up_y, w * up_x, dtype=x.dtype)
        u[:, :, ::up_y, ::up_x] = x
        need_h, need_w = (out_h - 1) * down_y + fh, (out_w - 1) * down_x + fw
        p = torch.zeros(n, c, need_h, need_w, dtype=x.dtype)  # p[j] = u[j - pad0] where that exists
        y0, y1 = max(pad_y0, 0), min(need_h, pad_y0 + h * up_y)
        x0, x1 = max(pad_x0, 0), min(need_w, pad_x0 + w * up_x)
        if y1 > y0 and x1 > x0:
            p[:, :, y0:y1, x0:x1] = u[:, :, y0 - pad_y0 : y1 - pad_y0, x0 - pad_x0 : x1 - pad_x0]
        weight = g.to(x.dtype)[None, None].repeat(c, 1, 1, 1)
        return F.conv2d(p, weight, groups=c, stride=(down_y, down_x))

    @staticmethod
    def bias_act(x, b, ref, dy, dim, act, grad, ref_is_y, alpha, gain, clamp):
        spec = next(s for s in activation.ACTIVATIONS.values() if s.cuda_id == act)
        shape = [-1 if i == dim else 1 for i in range(x.ndim)]
        bias = b.reshape(shape) if b.numel() else 0
        if grad == 0:
            y = spec.func(x + bias, alpha) * gain
            return y.clamp(-clamp, clamp) if clamp >= 0 else y
        if ref_is_y:
            assert clamp < 0, "ref_is_y cannot be used with a clamp"
            slope = torch.ones_like(ref) if spec.name == "linear" else torch.where(ref > 0, 1.0, alpha if spec.name == "lrelu" else 0.0)
            mask = (ref.abs() < clamp) if clamp >= 0 else torch.ones_like(ref, dtype=torch.bool)
            return torch.where(mask, x * slope * gain, torch.zeros_like(x))
        with torch.enable_grad():
            v = (ref + bias).detach().requires_grad_(True)
            f = spec.func(v, alpha) * gain
            (d1,) = torch.autograd.grad(f.sum(), v, create_graph=True)
            d2 = torch.autograd.grad(d1.sum(), v, allow_unused=True)[0] if d1.requires_grad else None
        d2 = torch.zeros_like(v) if d2 is None else d2
        mask = (f.abs() <= clamp) if clamp >= 0 else torch.ones_like(f, dtype=torch.bool)
        out = x * d1 if grad == 1 else x * dy * d2
        return torch.where(mask, out, torch.zeros_like(out)).detach()


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(jit, "load", lambda verbose=False: EmulatedKernels)


GEN = torch.Generator().manual_seed(2)


@pytest.mark.parametrize(
    "fname,up,down,pad,flip",
    [
        ("blur", (2, 2), (1, 1), (2, 1, 2, 1), False),
        ("sep", (1, 1), (2, 2), (3, 4, 3, 4), True),
        ("rect", (3, 1), (1, 2), (-1, 2, 1, 0), False),
        ("rect", (2, 3), (3, 2), (0, 3, 2, -1), True),
        ("none", (2, 2), (2, 2), (0, 0, 0, 0), False),
    ],
)
def test_upfirdn2d_wrapper_matches_reference_with_gradients(emulated, fname, up, down, pad, flip):
    f = {"blur": ops.setup_filter([1, 3, 3, 1]), "sep": torch.rand(8, generator=GEN), "rect": torch.rand(3, 2, generator=GEN), "none": None}[fname]
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=GEN, requires_grad=True)
    args = (up, down, pad, flip, 1.7)
    got = upfirdn_cuda.upfirdn2d_cuda(x, f, *args)
    want = upfirdn._upfirdn2d_ref(x, f, *args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)  # float64 images get a float64 filter
    dy = torch.randn_like(want)
    (g_got,) = torch.autograd.grad(got, x, dy, create_graph=True)
    (g_want,) = torch.autograd.grad(want, x, dy, create_graph=True)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
    small = torch.randn(1, 1, 4, 3, dtype=torch.float64, generator=GEN, requires_grad=True)
    fn = lambda t: upfirdn_cuda.upfirdn2d_cuda(t, f, *args)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (small,)) and torch.autograd.gradgradcheck(fn, (small,))


@pytest.mark.parametrize("act", list(activation.ACTIVATIONS))
@pytest.mark.parametrize("clamp", [-1.0, 1.1])
def test_bias_act_wrapper_first_and_second_derivatives(emulated, act, clamp):
    spec = activation.ACTIVATIONS[act]
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=GEN)
    x = (x + 0.2 * x.sign()).requires_grad_(True)
    b = (0.1 * torch.randn(3, dtype=torch.float64, generator=GEN)).requires_grad_(True)
    args = (1, spec, spec.alpha, spec.gain, clamp)
    fn = lambda t, bb: activation_cuda.bias_act_cuda(t, bb, *args)  # noqa: E731
    torch.testing.assert_close(fn(x, b), activation._bias_act_ref(x, b, *args))
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_no_grad_calls_match(emulated):
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=GEN)
    f = ops.setup_filter([1, 3, 3, 1])
    spec = activation.ACTIVATIONS["lrelu"]
    b = torch.randn(2, dtype=torch.float64, generator=GEN)
    with torch.no_grad():
        up = upfirdn_cuda.upfirdn2d_cuda(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)
        act = activation_cuda.bias_act_cuda(x, b, 1, spec, 0.2, 2**0.5, 0.5)
    torch.testing.assert_close(up, upfirdn._upfirdn2d_ref(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(act, activation._bias_act_ref(x, b, 1, spec, 0.2, 2**0.5, 0.5))


@pytest.mark.parametrize(
    "kwargs,impl,kernel",
    [
        (dict(act="linear"), "auto", False),  # a plain bias add: the reference (its backward is free)
        (dict(act="linear", gain=1.0, clamp=None), "auto", False),
        (dict(act="linear"), "cuda", True),  # forced
        (dict(act="linear", gain=2.0), "auto", True),
        (dict(act="linear", clamp=256), "auto", True),
        (dict(act="lrelu"), "auto", True),
        (dict(act="relu", gain=1.0), "auto", True),
        (dict(act="lrelu"), "ref", False),
    ],
)
def test_bias_act_dispatch_rule(monkeypatch, kwargs, impl, kernel):
    """impl='auto' on a (pretend) CUDA tensor runs the kernel except for a linear, gain-1, unclamped bias add."""
    calls = []

    class Recorder(EmulatedKernels):
        @staticmethod
        def bias_act(*args):
            calls.append(args[5])
            return EmulatedKernels.bias_act(*args)

    monkeypatch.setattr(jit, "load", lambda verbose=False: Recorder)
    monkeypatch.setattr(jit, "use_cuda", lambda impl, x, op: impl != "ref")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=GEN)
    b = torch.randn(3, dtype=torch.float64, generator=GEN)
    y = ops.bias_act(x, b, impl=impl, **kwargs)
    assert bool(calls) == kernel
    torch.testing.assert_close(y, ops.bias_act(x, b, impl="ref", **kwargs))
    if impl == "auto":
        spec = activation.ACTIVATIONS[kwargs["act"]]
        clamp = -1.0 if kwargs.get("clamp") is None else float(kwargs["clamp"])
        assert activation.kernel_can_win(spec, kwargs.get("gain", spec.gain), clamp) == kernel
