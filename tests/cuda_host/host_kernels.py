"""The CUDA kernels' own element math, compiled for the host with nvcc and called like the torch binding.

``ops_host.cu`` includes ``cuda_ops/bias_act.cu`` and ``cuda_ops/upfirdn2d.cu`` and runs their
``__host__ __device__`` element functions in plain loops. :class:`HostKernels` has the compiled
module's two functions (same arguments, same checks as ``ops_bindings.cpp``) and runs that program on
CPU tensors, so the autograd wrappers and the kernels' arithmetic (rounding, clamp masks, double
scalars) are tested on a machine without a GPU. The launch configuration and the binding's C++ are
not: the GPU tests and ``test_cuda_compile.py`` cover those.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from stylerig_au.ops import jit

HERE = Path(__file__).resolve().parent
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}  # stylerig::DType
_BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16}


def build(cache: Path | None = None) -> Path:
    """Compile ops_host.cu (once per source hash) and return the program's path; needs nvcc."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found")
    digest = hashlib.sha256()
    for path in [HERE / "ops_host.cu"] + sorted(jit.sources_dir().iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    base = cache or Path(os.environ.get("STYLERIG_AU_OPS_CACHE", Path.home() / ".cache" / "stylerig_au")) / "host_kernels"
    exe = base / digest.hexdigest()[:16] / "ops_host"
    if not exe.is_file():
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(".tmp")
        cmd = [nvcc, "-std=c++17", "-O2", "-arch=sm_80", f"-I{jit.sources_dir()}", str(HERE / "ops_host.cu"), "-o", str(tmp)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}\n{out.stderr[-4000:]}")
        tmp.replace(exe)
    return exe


def _write(t: torch.Tensor, folder: Path, name: str) -> str:
    if t.numel() == 0:
        return "-"
    path = folder / name
    t = t.detach().contiguous().cpu()
    path.write_bytes(t.view(_BITS.get(t.dtype, t.dtype)).numpy().tobytes())
    return str(path)


def _read(path: Path, like: torch.Tensor, shape) -> torch.Tensor:
    raw = bytearray(path.read_bytes())
    return torch.frombuffer(raw, dtype=_BITS.get(like.dtype, like.dtype)).view(like.dtype).reshape(shape).clone()


class HostKernels:
    """Twin of the compiled module (``jit.load()``): ``upfirdn2d(...)`` and ``bias_act(...)`` on CPU tensors."""

    def __init__(self, exe: Path) -> None:
        self.exe = exe
        self.calls = 0

    def _run(self, args: list[str]) -> None:
        self.calls += 1
        out = subprocess.run([str(self.exe), *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"ops_host {args[0]} failed: {out.stderr}")

    def upfirdn2d(self, x, f, separable, flip, gain, up_x, up_y, down_x, down_y, pad_x0, pad_y0, out_h, out_w):
        want_f = torch.float64 if x.dtype == torch.float64 else torch.float32
        assert x.ndim == 4 and x.is_contiguous() and f.is_contiguous(), "x and filter must be contiguous"
        assert f.dtype == want_f and f.ndim == (1 if separable else 2), "filter must be float64 for float64 x, else float32"
        fw = f.shape[-1]
        fh = fw if separable else f.shape[0]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            args = ["upfirdn2d", DTYPES[x.dtype], x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out_h, out_w,
                    up_x, up_y, down_x, down_y, pad_x0, pad_y0, fh, fw, int(separable), int(flip), repr(float(gain)),
                    _write(x, folder, "x"), _write(f, folder, "f"), str(folder / "out")]
            self._run([str(a) for a in args])
            return _read(folder / "out", x, (x.shape[0], x.shape[1], out_h, out_w))

    def bias_act(self, x, b, ref, dy, dim, act, grad, ref_is_y, alpha, gain, clamp):
        assert x.is_contiguous()
        assert grad == 0 or ref.numel() > 0, "grad >= 1 needs ref"
        assert grad != 2 or (dy.numel() > 0 and not ref_is_y), "grad == 2 needs dy and the forward input as ref"
        assert not ref_is_y or clamp < 0, "ref_is_y cannot be used with a clamp"
        for t in (ref, dy):
            assert t.numel() == 0 or (t.shape == x.shape and t.dtype == x.dtype and t.is_contiguous()), "ref/dy must match x"
        step, length = 1, 0
        if b.numel() > 0:
            assert b.ndim == 1 and b.shape[0] == x.shape[dim] and b.dtype == x.dtype, "bias must match x.shape[dim]"
            for s in x.shape[dim + 1 :]:
                step *= s
            length = b.shape[0]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            args = ["bias_act", DTYPES[x.dtype], act, grad, int(ref_is_y), repr(float(alpha)), repr(float(gain)),
                    repr(float(clamp)), x.numel(), step, length, _write(x, folder, "x"), _write(b, folder, "b"),
                    _write(ref, folder, "ref"), _write(dy, folder, "dy"), str(folder / "out")]
            self._run([str(a) for a in args])
            return _read(folder / "out", x, x.shape)
