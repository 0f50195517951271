"""Autograd wrapper of the upfirdn2d CUDA kernel (loaded by :mod:`stylerig_au.ops.jit`).

The kernel takes the user's filter as is (1-D separable or 2-D; float32, or float64 for float64
images so that those are filtered in double) with a ``flip`` flag and a ``gain`` (a double), so a call
costs one launch and no filter preparation. Its adjoint is the same kernel with
the flip flag toggled, up and down swapped and the leading padding ``f - 1 - pad0``: the backward
pass is this same function again, so every derivative order stays on the GPU.
"""

from __future__ import annotations

import torch

from stylerig_au.ops import jit

_IDENTITY: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def filter_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """The kernel's filter (and accumulation) type for images of ``x_dtype``: float64 for float64, else float32."""
    return torch.float64 if x_dtype == torch.float64 else torch.float32


def _kernel_filter(f: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Contiguous filter of :func:`filter_dtype` on ``x``'s device (a no-op for setup_filter's output there)."""
    dtype = filter_dtype(x.dtype)
    if f is None:
        key = (x.device, dtype)
        if key not in _IDENTITY:
            _IDENTITY[key] = torch.ones(1, 1, dtype=dtype, device=x.device)
        return _IDENTITY[key]
    return f.detach().to(device=x.device, dtype=dtype).contiguous()


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, flip, gain, up, down, pad0, out_hw):  # type: ignore[override]
        ctx.args = (f, flip, gain, up, down, pad0, x.shape[2:])
        return jit.load().upfirdn2d(
            x.contiguous(), f, f.ndim == 1, flip, gain, up[0], up[1], down[0], down[1], pad0[0], pad0[1],
            out_hw[0], out_hw[1],
        )

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        f, flip, gain, up, down, pad0, in_hw = ctx.args
        fw = f.shape[-1]
        fh = fw if f.ndim == 1 else f.shape[0]
        dx = None
        if ctx.needs_input_grad[0]:
            pad_t = (fw - 1 - pad0[0], fh - 1 - pad0[1])
            dx = _Upfirdn2d.apply(dy, f, not flip, gain, down, up, pad_t, (in_hw[0], in_hw[1]))
        return dx, None, None, None, None, None, None, None


def upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """CUDA twin of ``upfirdn._upfirdn2d_ref`` (same arguments, already parsed). No gradient to ``f``."""
    g = _kernel_filter(f, x)
    fw = g.shape[-1]
    fh = fw if g.ndim == 1 else g.shape[0]
    px0, px1, py0, py1 = padding
    out_w = (x.shape[3] * up[0] + px0 + px1 - fw + down[0]) // down[0]
    out_h = (x.shape[2] * up[1] + py0 + py1 - fh + down[1]) // down[1]
    # A true convolution (flip_filter=False) is a correlation with the reversed filter: the kernel's flip.
    if not (x.requires_grad and torch.is_grad_enabled()):  # skip autograd bookkeeping when nothing needs it
        return jit.load().upfirdn2d(
            x.contiguous(), g, g.ndim == 1, not flip_filter, float(gain), up[0], up[1], down[0], down[1], px0, py0,
            out_h, out_w,
        )
    return _Upfirdn2d.apply(x, g, not flip_filter, float(gain), up, down, (px0, py0), (out_h, out_w))
