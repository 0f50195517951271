"""Independent naive versions of the fused ops (numpy / scipy, float64), used as test oracles."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import convolve2d


def upfirdn2d_naive(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Explicit zero insertion, explicit zero padding / cropping, scipy's true 2-D convolution, slicing."""
    x = np.asarray(x, dtype=np.float64)
    f2 = np.ones((1, 1)) if f is None else np.asarray(f, dtype=np.float64)
    if f2.ndim == 1:
        f2 = np.outer(f2, f2)
    f2 = f2 * gain
    if flip_filter:  # convolve2d convolves; a correlation is a convolution with the reversed filter
        f2 = f2[::-1, ::-1]
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    planes = []
    for plane in x.reshape(n * c, h, w):
        u = np.zeros((h * upy, w * upx))
        u[::upy, ::upx] = plane
        p = np.zeros((u.shape[0] + max(py0, 0) + max(py1, 0), u.shape[1] + max(px0, 0) + max(px1, 0)))
        p[max(py0, 0) : max(py0, 0) + u.shape[0], max(px0, 0) : max(px0, 0) + u.shape[1]] = u
        p = p[max(-py0, 0) : p.shape[0] - max(-py1, 0), max(-px0, 0) : p.shape[1] - max(-px1, 0)]
        planes.append(convolve2d(p, f2, mode="valid")[::downy, ::downx])
    return np.stack(planes).reshape(n, c, *planes[0].shape)


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


NAIVE_ACTS = {
    "linear": (lambda v, a: v, 0.0, 1.0),
    "relu": (lambda v, a: np.maximum(v, 0.0), 0.0, math.sqrt(2)),
    "lrelu": (lambda v, a: np.where(v > 0, v, a * v), 0.2, math.sqrt(2)),
    "tanh": (lambda v, a: np.tanh(v), 0.0, 1.0),
    "sigmoid": (lambda v, a: _sigmoid(v), 0.0, 1.0),
    "elu": (lambda v, a: np.where(v > 0, v, a * (np.exp(v) - 1)), 1.0, 1.0),
    "selu": (lambda v, a: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * (np.exp(v) - 1)), 0.0, 1.0),
    "softplus": (lambda v, a: np.log1p(np.exp(v)), 0.0, 1.0),
    "swish": (lambda v, a: v * _sigmoid(v), 0.0, math.sqrt(2)),
}


def bias_act_naive(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Elementwise numpy, with NVIDIA's default alpha / gain per activation."""
    func, def_alpha, def_gain = NAIVE_ACTS[act]
    v = np.asarray(x, dtype=np.float64)
    if b is not None:
        shape = [1] * v.ndim
        shape[dim] = -1
        v = v + np.asarray(b, dtype=np.float64).reshape(shape)
    y = func(v, def_alpha if alpha is None else alpha) * (def_gain if gain is None else gain)
    if clamp is not None and clamp >= 0:
        y = np.clip(y, -clamp, clamp)
    return y
