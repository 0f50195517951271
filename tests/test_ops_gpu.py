"""CUDA kernels against the PyTorch reference: values and gradients over the CPU tests' grid.

Skipped cleanly without a GPU. On a CUDA machine the build must succeed: a failure here is a bug,
not a skip. ``experiments/run_gpu_checks.sh`` runs this file and records its output.
"""

from __future__ import annotations

import pytest
import torch

from stylerig_au import ops
from stylerig_au.ops import jit
from tests.ops_checks import check_bias_act, check_upfirdn2d
from tests.test_ops_upfirdn import FILTERS, grid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def dev(no_tf32):
    """The GPU, with the ops built (raises with the cause if the build fails) and TF32 off: the reference's
    conv2d would otherwise miss float32 tolerances."""
    jit.load(verbose=True)
    return torch.device("cuda")


def test_status_reports_cuda(dev):
    assert all(v.startswith("cuda") for v in ops.implementation_status().values())


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_upfirdn2d_values_and_gradients(dev, fname, dtype):
    assert check_upfirdn2d(dev, dtype, [c for c in grid() if c[0] == fname]) > 50


def test_upfirdn2d_gradcheck_float64(dev):
    f = ops.setup_filter([1, 3, 3, 1], device=dev)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device=dev, requires_grad=True)
    for kw in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(up=[3, 1], down=[1, 2], padding=[-1, 2, 1, 0])):
        fn = lambda t: ops.upfirdn2d(t, f, impl="cuda", **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_many_planes_and_noncontiguous(dev):
    x = torch.randn(70000, 2, 4, 4, device=dev)[:, :1]  # > 65535 planes, non-contiguous
    f = ops.setup_filter([1, 3, 3, 1], device=dev)
    torch.testing.assert_close(ops.upsample2d(x, f, impl="cuda"), ops.upsample2d(x, f, impl="ref"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", list(ops.ACTIVATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("clamp", [None, 0.9])
def test_bias_act_values_and_gradients(dev, act, dtype, clamp):
    check_bias_act(dev, act, dtype, clamp)


def test_bias_act_gradcheck_float64(dev):
    for act in ops.ACTIVATIONS:
        x = torch.randn(2, 3, 4, dtype=torch.float64, device=dev)
        x = (x + 0.2 * x.sign()).requires_grad_(True)
        b = torch.zeros(3, dtype=torch.float64, device=dev, requires_grad=True)
        fn = lambda t, bb: ops.bias_act(t, bb, act=act, clamp=1.7, impl="cuda")  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b)), act
        assert torch.autograd.gradgradcheck(fn, (x, b)), act


def test_auto_uses_cuda_for_cuda_tensors(dev, monkeypatch):
    from stylerig_au.ops import upfirdn

    monkeypatch.setattr(upfirdn, "_upfirdn2d_ref", lambda *a, **k: pytest.fail("auto fell back to ref"))
    ops.upfirdn2d(torch.randn(1, 1, 4, 4, device=dev), None)
