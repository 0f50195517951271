"""upfirdn2d: upsample (zero insertion) → pad → 2-D FIR filter → downsample, plus its helpers.

Semantics follow NVIDIA's StyleGAN2-ADA op so that intuitions and checkpoints carry over:

* ``x`` is ``[N, C, H, W]`` (float16 / bfloat16 / float32 / float64);
* ``f`` is a 1-D filter (applied separably, once along x and once along y), a 2-D filter
  ``[fh, fw]``, or ``None`` (identity ``[[1]]``); it is a *true* convolution (the filter is
  flipped) unless ``flip_filter=True``;
* ``up`` / ``down`` are an int or ``[x, y]``; ``padding`` is an int, ``[x, y]`` or
  ``[x0, x1, y0, y1]`` and may be negative (cropping);
* ``gain`` scales the output (spread as ``gain ** 0.5`` per pass for a separable filter).

Output size along x: ``(W * up_x + x0 + x1 - fw + down_x) // down_x`` (likewise along y).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError
from stylerig_au.ops import jit

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise StylerigError(f"{name} must be an int or [x, y], got {list(value)}")
    if pair[0] < 1 or pair[1] < 1:
        raise StylerigError(f"{name} factors must be >= 1, got {list(pair)}")
    return pair[0], pair[1]


def _padding(padding: Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    pad = [int(p) for p in padding]
    if len(pad) == 2:
        return pad[0], pad[0], pad[1], pad[1]
    if len(pad) == 4:
        return pad[0], pad[1], pad[2], pad[3]
    raise StylerigError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {pad}")


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a 1-D / 2-D filter, or (1, 1) for ``None``."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise StylerigError("the filter must be a 1-D or 2-D tensor (use setup_filter) or None")
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def setup_filter(
    f: Sequence[float] | torch.Tensor | float | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """A float32 filter tensor ready for :func:`upfirdn2d`.

    ``f`` is None (identity), a scalar, a 1-D or a 2-D array. A 1-D filter stays 1-D (separable) when
    ``separable`` is True, or when it is None and the filter has >= 8 taps; otherwise it becomes the
    outer product with itself. ``normalize`` divides by the sum, ``flip_filter`` flips it, and
    ``gain`` multiplies the whole 2-D response (``gain ** 0.5`` per 1-D factor).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise StylerigError(f"a filter must be a non-empty scalar, 1-D or 2-D array, got shape {list(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise StylerigError("separable=True needs a 1-D filter")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images.

    Args:
        x: ``[N, C, H, W]`` floating tensor.
        f: float filter, 1-D (separable) or 2-D ``[fh, fw]``, or None for identity.
        up: integer upsampling factor (zero insertion), int or ``[x, y]``.
        down: integer downsampling factor (keep every ``down``-th sample), int or ``[x, y]``.
        padding: int, ``[x, y]`` or ``[x0, x1, y0, y1]``, applied after upsampling; negative crops.
        flip_filter: False gives a true convolution, True a correlation.
        gain: overall gain of the filter.
        impl: 'auto' (CUDA kernel for CUDA tensors when it builds, else reference), 'cuda' or 'ref'.

    Returns:
        ``[N, C, outH, outW]`` tensor of ``x``'s dtype and device.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise StylerigError(f"upfirdn2d expects a floating [N, C, H, W] tensor, got {shape}")
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    out_w = (x.shape[3] * upx + px0 + px1 - fw + downx) // downx
    out_h = (x.shape[2] * upy + py0 + py1 - fh + downy) // downy
    if out_w < 1 or out_h < 1:
        raise StylerigError(
            f"upfirdn2d output would be empty ({out_h}x{out_w}) for input {list(x.shape)}, filter {fh}x{fw}, "
            f"up {[upx, upy]}, down {[downx, downy]}, padding {[px0, px1, py0, py1]}: pad more or use a smaller filter"
        )
    if f is not None and f.device != x.device:
        f = f.to(x.device)
    args = ((upx, upy), (downx, downy), (px0, px1, py0, py1), bool(flip_filter), float(gain))
    if jit.use_cuda(impl, x, "upfirdn2d"):
        from stylerig_au.ops import upfirdn_cuda

        return upfirdn_cuda.upfirdn2d_cuda(x, f, *args)
    return _upfirdn2d_ref(x, f, *args)


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """Plain PyTorch: zero insertion, ``F.pad`` + slicing, grouped ``conv2d``, strided slicing."""
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, padding

    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    weight = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 2:
        x = F.conv2d(x, weight, groups=c)
    else:
        x = F.conv2d(x, weight.unsqueeze(2), groups=c)
        x = F.conv2d(x, weight.unsqueeze(3), groups=c)
    return x[:, :, ::downy, ::downx]


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter ``x`` with ``f`` keeping its size (for zero extra ``padding``); see :func:`upfirdn2d`."""
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by ``up`` with interpolation filter ``f``: ``[H, W] → [H*up, W*up]`` for zero ``padding``.

    The gain is multiplied by ``up_x * up_y`` so that a normalised filter preserves the mean.
    """
    upx, upy = _pair(up, "up")
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: IntPair = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Low-pass with ``f`` then keep every ``down``-th sample: ``[H, W] → [H/down, W/down]`` for zero ``padding``."""
    downx, downy = _pair(down, "down")
    px0, px1, py0, py1 = _padding(padding)
    fw, fh = _filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
