"""The CUDA kernels' element math, compiled for the CPU with nvcc, against the PyTorch reference.

:mod:`tests.cuda_host.host_kernels` runs ``bias_act_element`` and ``taps_of`` / ``filter_pixel`` (the very
functions the kernels call) on CPU tensors through the real autograd wrappers, so what the H200 run
exposed is checked without a GPU: half-precision clamp gradients, and float64 computed in double
(scalars and the filter travel as double). Skipped without nvcc.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from stylerig_au import ops
from stylerig_au.ops import activation, activation_cuda, jit, upfirdn_cuda
from tests.ops_checks import check_bias_act, check_upfirdn2d
from tests.test_ops_upfirdn import FILTERS, grid

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found on PATH")
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture(scope="module")
def host_kernels():
    from tests.cuda_host.host_kernels import HostKernels, build

    return HostKernels(build())


@pytest.fixture
def on_host(host_kernels, monkeypatch):
    """impl='cuda' on CPU tensors runs the host-compiled kernel math."""
    real_use_cuda = jit.use_cuda
    monkeypatch.setattr(jit, "load", lambda verbose=False: host_kernels)
    monkeypatch.setattr(jit, "use_cuda", lambda impl, x, op: impl == "cuda" or real_use_cuda(impl, x, op))
    return host_kernels


@pytest.mark.parametrize("act", list(ops.ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clamp", [None, 0.9])
def test_bias_act_kernel_math(on_host, act, dtype, clamp):
    before = on_host.calls
    check_bias_act("cpu", act, dtype, clamp)
    assert on_host.calls > before  # the kernel math ran, not the reference twice


def test_half_clamp_gradient_is_zero_on_clamped_elements(on_host):
    """The H200 failure: a float16 output stored at the (rounded) bound still let the gradient through."""
    x = torch.tensor([0.5, 1.2, -3.0, 0.95, 0.8999], dtype=torch.float16, requires_grad=True)
    for impl in ("cuda", "ref"):
        (g,) = torch.autograd.grad(ops.bias_act(x, act="linear", clamp=0.9, impl=impl).sum(), x)
        assert g.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0], impl


@pytest.mark.parametrize("dtype", DTYPES)
def test_upfirdn2d_kernel_math(on_host, dtype):
    for fname in FILTERS:
        cases = [c for c in grid() if c[0] == fname][::7]  # a spread of the GPU test's grid (each case is 2 runs)
        assert check_upfirdn2d("cpu", dtype, cases) >= 8


def test_float64_is_computed_in_double(on_host):
    """Scalars that float32 cannot hold (gain 1.7, alpha 0.1, clamp 0.3) and a float64 filter: exact to 1e-14."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=gen)
    f = torch.rand(4, dtype=torch.float64, generator=gen) + 1 / 3  # not a float32 number
    for sep_f in (f, torch.outer(f, f)):
        got = ops.upfirdn2d(x, sep_f, up=2, padding=[1, 2, 2, 1], gain=1.7, impl="cuda")
        want = ops.upfirdn2d(x, sep_f, up=2, padding=[1, 2, 2, 1], gain=1.7, impl="ref")
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    b = torch.randn(3, dtype=torch.float64, generator=gen)
    for act in ops.ACTIVATIONS:
        got = ops.bias_act(x, b, act=act, alpha=0.1, gain=1.7, clamp=0.3, impl="cuda")
        want = ops.bias_act(x, b, act=act, alpha=0.1, gain=1.7, clamp=0.3, impl="ref")
        torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14, msg=act)


def test_gradcheck_float64_through_the_kernel_math(on_host):
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda t: ops.upfirdn2d(t, f, up=2, padding=[2, 1, 2, 1], gain=1.7, impl="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))
    for act in ("lrelu", "tanh"):
        v = torch.randn(2, 3, 2, dtype=torch.float64)
        v = (v + 0.2 * v.sign()).requires_grad_(True)
        b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        fn = lambda t, bb: ops.bias_act(t, bb, act=act, clamp=1.7, impl="cuda")  # noqa: E731
        assert torch.autograd.gradcheck(fn, (v, b)) and torch.autograd.gradgradcheck(fn, (v, b)), act


def test_wrappers_hand_the_kernel_double_scalars_and_the_right_filter(monkeypatch):
    """What the Python side passes to the binding: Python floats (never float32-rounded), a contiguous filter on
    the images' device, float64 for float64 images and float32 otherwise, and no saved-output mode with a clamp."""
    seen = []

    class Recorder:
        @staticmethod
        def upfirdn2d(x, f, *args):
            assert f.device == x.device and f.is_contiguous()
            seen.append(("upfirdn2d", x.dtype, f.dtype, args[2]))
            return torch.zeros(1)

        @staticmethod
        def bias_act(x, b, ref, dy, dim, act, grad, ref_is_y, alpha, gain, clamp):
            seen.append(("bias_act", ref_is_y, alpha, gain, clamp))
            return torch.zeros_like(x)

    monkeypatch.setattr(jit, "load", lambda verbose=False: Recorder)
    for dtype in (torch.float64, torch.float32, torch.float16):
        upfirdn_cuda.upfirdn2d_cuda(torch.zeros(1, 1, 4, 4, dtype=dtype), torch.ones(2, dtype=torch.float64) / 3,
                                    (1, 1), (1, 1), (0, 0, 0, 0), False, 1.7)
    upfirdn_cuda.upfirdn2d_cuda(torch.zeros(1, 1, 4, 4, device="meta"), torch.ones(3, 2).t(), (1, 1), (1, 1), (0, 0, 0, 0), True, 2.0)
    assert seen == [("upfirdn2d", torch.float64, torch.float64, 1.7), ("upfirdn2d", torch.float32, torch.float32, 1.7),
                    ("upfirdn2d", torch.float16, torch.float32, 1.7), ("upfirdn2d", torch.float32, torch.float32, 2.0)]
    seen.clear()
    spec = activation.ACTIVATIONS["lrelu"]
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    for clamp in (-1.0, 0.3):
        y = activation_cuda.bias_act_cuda(x, None, 1, spec, 0.1, 1.7, clamp)
        y.backward(torch.ones_like(y))
    assert [s[2:] for s in seen] == [(0.1, 1.7, -1.0)] * 2 + [(0.1, 1.7, 0.3)] * 2
    assert all(isinstance(v, float) for s in seen for v in s[2:])
    assert [s[1] for s in seen] == [False, True, False, False]  # backward from y only without a clamp
