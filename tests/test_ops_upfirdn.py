"""upfirdn2d reference path (CPU) against an independent scipy computation, and its gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from tests.ops_naive import upfirdn2d_naive

UPS = [(1, 1), (2, 2), (3, 3), (2, 1)]
DOWNS = [(1, 1), (2, 2), (1, 3)]
PADS = [(0, 0, 0, 0), (1, 1, 1, 1), (1, 2, 0, -1), (-1, 0, 2, 1), (3, 0, 0, 4)]
GEN = torch.Generator().manual_seed(0)
FILTERS = {
    "none": None,
    "box1": torch.ones(1),
    "blur4-2d": ops.setup_filter([1, 3, 3, 1]),
    "rand8-sep": torch.rand(8, generator=GEN) - 0.3,
    "rand3x2": torch.rand(3, 2, generator=GEN) - 0.5,
}


def out_size(h, w, f, up, down, pad):
    fw, fh = (1, 1) if f is None else ((f.shape[0],) * 2 if f.ndim == 1 else (f.shape[1], f.shape[0]))
    return (h * up[1] + pad[2] + pad[3] - fh + down[1]) // down[1], (w * up[0] + pad[0] + pad[1] - fw + down[0]) // down[0]


def grid():
    for fname, up, down, pad, flip in itertools.product(FILTERS, UPS, DOWNS, PADS, (False, True)):
        f = FILTERS[fname]
        if min(out_size(5, 6, f, up, down, pad)) >= 1:
            yield fname, f, up, down, pad, flip


@pytest.mark.parametrize("fname", list(FILTERS))
def test_reference_matches_naive_over_grid(fname):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=GEN)
    cases = [c for c in grid() if c[0] == fname]
    assert len(cases) > 50
    for _, f, up, down, pad, flip in cases:
        gain = 2.5 if flip else 1.0
        got = ops.upfirdn2d(x, f, up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=gain, impl="ref")
        want = upfirdn2d_naive(x.numpy(), None if f is None else f.numpy(), up, down, pad, flip, gain)
        assert got.shape == want.shape, (up, down, pad)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"{fname} {up} {down} {pad} {flip}")


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3), (torch.bfloat16, 3e-2)]
)
def test_reduced_precision_dtypes(dtype, tol):
    x = torch.randn(1, 4, 7, 5, generator=GEN)
    for fname in ("blur4-2d", "rand8-sep", "rand3x2"):
        f = FILTERS[fname]
        got = ops.upfirdn2d(x.to(dtype), f, up=2, down=1, padding=[1, 2, 2, 1], impl="ref")
        assert got.dtype == dtype
        want = upfirdn2d_naive(x.to(dtype).double().numpy(), f.numpy(), (2, 2), (1, 1), (1, 2, 2, 1))
        scale = np.abs(want).max()
        np.testing.assert_allclose(got.double().numpy(), want, atol=tol * scale, rtol=0)


@pytest.mark.parametrize(
    "f,up,down,pad,flip",
    [
        (FILTERS["blur4-2d"], (2, 2), (1, 1), (2, 1, 2, 1), False),
        (FILTERS["rand8-sep"], (1, 1), (2, 2), (3, 3, 3, 3), True),
        (FILTERS["rand3x2"], (3, 1), (1, 2), (-1, 2, 1, 0), False),
        (None, (2, 2), (2, 2), (0, 0, 0, 0), False),
    ],
)
def test_gradcheck_float64(f, up, down, pad, flip):
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=GEN, requires_grad=True)
    fn = lambda t: ops.upfirdn2d(t, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_helpers_shapes_and_mean_preservation():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 3.0)
    up = ops.upsample2d(x, f)
    down = ops.downsample2d(x, f)
    same = ops.filter2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4) and same.shape == (1, 2, 8, 8)
    # Away from the zero-padded border a normalised filter keeps a constant image constant.
    torch.testing.assert_close(up[..., 3:-3, 3:-3], torch.full_like(up[..., 3:-3, 3:-3], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))
    torch.testing.assert_close(same[..., 2:-2, 2:-2], torch.full_like(same[..., 2:-2, 2:-2], 3.0))
    assert ops.upsample2d(torch.ones(1, 1, 5, 3), f, up=[3, 1]).shape == (1, 1, 5, 9)
    assert ops.downsample2d(torch.ones(1, 1, 6, 9), f, down=[3, 2], padding=[1, 0]).shape == (1, 1, 3, 3)


def test_filter2d_is_a_true_convolution_unless_flipped():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    conv = ops.upfirdn2d(x, f, padding=[1, 0, 1, 0], impl="ref")[0, 0]
    corr = ops.upfirdn2d(x, f, padding=[1, 0, 1, 0], flip_filter=True, impl="ref")[0, 0]
    # An impulse reproduces the filter (convolution) or the filter reversed (correlation).
    torch.testing.assert_close(conv[2:4, 2:4], f)
    torch.testing.assert_close(corr[2:4, 2:4], f.flip([0, 1]))


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32 and abs(float(f.sum()) - 1) < 1e-6
    assert ops.setup_filter([1] * 8).shape == (8,)  # >= 8 taps stay separable by default
    assert ops.setup_filter([1, 2, 1], separable=True).shape == (3,)
    assert ops.setup_filter(None).shape == (1, 1)
    g = ops.setup_filter([1, 2], normalize=False, flip_filter=True, gain=4)
    torch.testing.assert_close(g, torch.tensor([[4.0, 2.0], [2.0, 1.0]]) * 4)
    s = ops.setup_filter([1, 1] * 4, gain=4)
    assert abs(float(s.sum()) - 2) < 1e-6  # gain ** 0.5 per separable factor


@pytest.mark.parametrize(
    "call",
    [
        lambda: ops.upfirdn2d(torch.zeros(2, 3, 4), None),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4, dtype=torch.int32), None),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4), None, up=0),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4), None, padding=[1, 2, 3]),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 2, 2), torch.ones(5, 5)),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2, 2)),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4), None, impl="fast"),
        lambda: ops.upfirdn2d(torch.zeros(1, 1, 4, 4), None, impl="cuda"),
    ],
)
def test_bad_arguments_raise_user_errors(call):
    with pytest.raises(StylerigError):
        call()
