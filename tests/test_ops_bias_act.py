"""bias_act reference path (CPU) against elementwise numpy, and its first and second derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from tests.ops_naive import bias_act_naive

ACTS = list(ops.ACTIVATIONS)
GEN = torch.Generator().manual_seed(1)


def test_every_issue_activation_is_available():
    assert set(ACTS) == {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"}
    assert ops.ACTIVATIONS["lrelu"].alpha == 0.2 and ops.ACTIVATIONS["lrelu"].gain == math.sqrt(2)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"gain": 0.7}, {"clamp": 0.8}, {"alpha": 0.3, "gain": 2.0, "clamp": 1.5}],
    ids=["defaults", "gain", "clamp", "all"],
)
def test_reference_matches_naive(act, kwargs):
    x = torch.randn(3, 5, 4, 2, dtype=torch.float64, generator=GEN) * 3
    b = torch.randn(5, dtype=torch.float64, generator=GEN)
    got = ops.bias_act(x, b, act=act, impl="ref", **kwargs)
    want = bias_act_naive(x.numpy(), b.numpy(), 1, act, **kwargs)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_bias_along_other_dims_and_no_bias():
    x = torch.randn(4, 3, 6, dtype=torch.float64, generator=GEN)
    for dim in (0, 1, 2, -1):
        b = torch.randn(x.shape[dim], dtype=torch.float64, generator=GEN)
        got = ops.bias_act(x, b, dim=dim, act="lrelu", impl="ref")
        np.testing.assert_allclose(got.numpy(), bias_act_naive(x.numpy(), b.numpy(), dim % 3, "lrelu"), rtol=1e-12)
    np.testing.assert_allclose(ops.bias_act(x, act="tanh").numpy(), np.tanh(x.numpy()), rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_reduced_precision(dtype, tol):
    x = torch.randn(2, 8, 3, 3, generator=GEN).to(dtype)
    b = torch.randn(8, generator=GEN)
    got = ops.bias_act(x, b, act="lrelu", clamp=2.0, impl="ref")
    assert got.dtype == dtype
    want = bias_act_naive(x.double().numpy(), b.to(dtype).double().numpy(), 1, "lrelu", clamp=2.0)
    np.testing.assert_allclose(got.double().numpy(), want, atol=tol * 4, rtol=tol)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck_float64(act):
    # Keep samples away from the kinks of relu / lrelu / elu and from the clamp edges.
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=GEN)
    x = (x + 0.2 * x.sign()).requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64).requires_grad_(True)
    fn = lambda t, bb: ops.bias_act(t, bb, act=act, clamp=1.7, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_r1_style_double_backward_runs():
    x = torch.randn(2, 4, 5, 5, requires_grad=True, generator=GEN)
    b = torch.randn(4, requires_grad=True, generator=GEN)
    y = ops.bias_act(x * 1.3, b, act="lrelu").square().sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    g.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: ops.bias_act(torch.zeros(2, 3), act="gelu"),
        lambda: ops.bias_act(torch.zeros(2, 3), torch.zeros(4)),
        lambda: ops.bias_act(torch.zeros(2, 3), torch.zeros(3), dim=3),
        lambda: ops.bias_act(torch.zeros(2, 3, dtype=torch.int64)),
        lambda: ops.bias_act(torch.zeros(2, 3), impl="cuda"),
    ],
)
def test_bad_arguments_raise_user_errors(call):
    with pytest.raises(StylerigError):
        call()
