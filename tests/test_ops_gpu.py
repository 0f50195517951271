"""CUDA kernels against the PyTorch reference: values and gradients over the CPU tests' grid.

Skipped cleanly without a GPU. On a CUDA machine the build must succeed: a failure here is a bug,
not a skip. ``experiments/run_gpu_checks.sh`` runs this file and records its output.
"""

from __future__ import annotations

import pytest
import torch

from stylerig_au import ops
from stylerig_au.ops import jit
from tests.test_ops_upfirdn import FILTERS, grid

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.fixture(scope="module")
def dev():
    jit.load(verbose=True)  # raises with the cause if the build fails
    # The reference's conv2d would otherwise run in TF32 (10-bit mantissa) and miss float32 tolerances.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _close(got, want, dtype, what):
    scale = max(float(want.double().abs().max()), 1.0)
    err = float((got.double() - want.double()).abs().max())
    assert err <= TOL[dtype] * scale * 4, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def test_status_reports_cuda(dev):
    assert all(v.startswith("cuda") for v in ops.implementation_status().values())


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_upfirdn2d_values_and_gradients(dev, fname, dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 3, 9, 7, device=dev, generator=gen).to(dtype)
    for _, f, up, down, pad, flip in (c for c in grid() if c[0] == fname):
        f = None if f is None else f.to(dev)
        kw = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=1.7 if flip else 1.0)
        xc = x.detach().requires_grad_(True)
        xr = x.detach().requires_grad_(True)
        yc = ops.upfirdn2d(xc, f, impl="cuda", **kw)
        yr = ops.upfirdn2d(xr, f, impl="ref", **kw)
        assert yc.dtype == dtype and yc.shape == yr.shape
        _close(yc, yr, dtype, f"{fname} {kw} forward")
        dy = torch.randn(yr.shape, device=dev, generator=gen).to(dtype)
        (gc,) = torch.autograd.grad(yc, xc, dy)
        (gr,) = torch.autograd.grad(yr, xr, dy)
        _close(gc, gr, dtype, f"{fname} {kw} backward")


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
    gen = torch.Generator(device="cuda").manual_seed(1)
    x0 = torch.randn(4, 16, 5, 3, device=dev, generator=gen).to(dtype)
    b0 = torch.randn(16, device=dev, generator=gen).to(dtype)
    res = {}
    for impl in ("cuda", "ref"):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = ops.bias_act(x, b, act=act, clamp=clamp, impl=impl)
        gx, gb = torch.autograd.grad((y * y).sum(), (x, b), create_graph=True)
        # R1-style second order: d/dx of |dL/dx|^2.
        ggx, ggb = torch.autograd.grad(gx.float().square().sum(), (x, b), allow_unused=True)
        res[impl] = (y, gx, gb, ggx, ggb)
    for name, c, r in zip(("y", "dx", "db", "ddx", "ddb"), res["cuda"], res["ref"]):
        if c is None or r is None:
            assert c is None or float(c.abs().max()) == 0 or r is None, name
            continue
        _close(c, r, dtype if name in ("y", "dx") else torch.float16 if dtype == torch.float32 else dtype, f"{act} {name}")


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
