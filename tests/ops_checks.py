"""Kernel-vs-reference checks shared by the GPU tests (real kernels on CUDA tensors) and the host tests
(the kernels' element math compiled for the CPU, :mod:`tests.cuda_host.host_kernels`).

Both call ``ops.*(impl='cuda')`` against ``impl='ref'`` with the same tolerances; only the device differs.
"""

from __future__ import annotations

import torch

from stylerig_au import ops

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
CLAMP_MARGIN_ULPS = 8


def close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """Max abs error within ``4 * TOL[dtype]`` times max(1, max |want|)."""
    got, want = got.detach().double(), want.detach().double()
    scale = max(float(want.abs().max()), 1.0)
    err = float((got - want).abs().max())
    assert err <= TOL[dtype] * scale * 4, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def away_from_clamp(x: torch.Tensor, b: torch.Tensor, act: str, clamp: float | None) -> torch.Tensor:
    """``x`` with the elements whose reference pre-clamp value lies within a few ulps of ±clamp moved to
    ``x + b = 0.5`` (far from any bound for every activation at clamp 0.9).

    The clamp's gradient jumps there (1 inside, 0 outside, bounds included as torch does), and at half
    precision which side an element lands on depends on the order of roundings (the reference rounds
    x + b, act and the gain to the storage type one by one, the kernel once). The same reasoning keeps
    the gradchecks away from the activations' kinks.
    """
    if clamp is None:
        return x
    v = ops.bias_act(x, b, act=act, impl="ref").double()
    near = (v.abs() - clamp).abs() <= CLAMP_MARGIN_ULPS * torch.finfo(x.dtype).eps * clamp
    moved = (0.5 - b.double()).reshape([1, -1] + [1] * (x.ndim - 2)).expand_as(x).to(x.dtype)
    return torch.where(near, moved, x)


def check_bias_act(dev: torch.device | str, act: str, dtype: torch.dtype, clamp: float | None, seed: int = 1) -> None:
    """Values, first and R1-style second derivatives of bias_act, 'cuda' vs 'ref', on ``dev``."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    x0 = torch.randn(4, 16, 5, 3, device=dev, generator=gen).to(dtype)
    b0 = torch.randn(16, device=dev, generator=gen).to(dtype)
    x0 = away_from_clamp(x0, b0, act, clamp)
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
        # Second-order terms chain several roundings: float32 gets float16's tolerance there.
        tol_dtype = dtype if name in ("y", "dx") else torch.float16 if dtype == torch.float32 else dtype
        close(c, r, tol_dtype, f"{act} clamp {clamp} {dtype} {name}")


def check_upfirdn2d(dev: torch.device | str, dtype: torch.dtype, cases, seed: int = 0) -> int:
    """Values and input gradients of upfirdn2d, 'cuda' vs 'ref', for each (name, f, up, down, pad, flip) case
    (gain 1.7 for flipped filters); returns the number of cases checked."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.randn(2, 3, 9, 7, device=dev, generator=gen).to(dtype)
    count = 0
    for fname, f, up, down, pad, flip in cases:
        f = None if f is None else f.to(dev)
        kw = dict(up=up, down=down, padding=pad, flip_filter=flip, gain=1.7 if flip else 1.0)
        xc = x.detach().requires_grad_(True)
        xr = x.detach().requires_grad_(True)
        yc = ops.upfirdn2d(xc, f, impl="cuda", **kw)
        yr = ops.upfirdn2d(xr, f, impl="ref", **kw)
        assert yc.dtype == dtype and yc.shape == yr.shape
        close(yc, yr, dtype, f"{fname} {kw} forward")
        dy = torch.randn(yr.shape, device=dev, generator=gen).to(dtype)
        (gc,) = torch.autograd.grad(yc, xc, dy)
        (gr,) = torch.autograd.grad(yr, xr, dy)
        close(gc, gr, dtype, f"{fname} {kw} backward")
        count += 1
    return count
