"""Compile the CUDA kernels with ``nvcc -c`` for sm_80 and sm_90 (skipped without nvcc).

The kernels include no torch header, so this works on a CPU-only machine with a CPU build of torch:
a broken kernel fails here, not on a user's first GPU run. The torch binding needs CUDA torch headers
and is only syntax-checked in a slow test, where the CUDA runtime headers are found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from stylerig_au.ops import jit

NVCC = shutil.which("nvcc")
ARCHS = ["80", "90"]
KERNELS = [n for n in jit.SOURCE_FILES if n.endswith(".cu")]

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")


@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile(arch, tmp_path):
    src = jit.sources_dir()
    for name in KERNELS:
        cmd = [NVCC, "-c", "-std=c++17", "-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}",
               "-Werror=all-warnings", str(src / name), "-o", str(tmp_path / f"{name}.o")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
        assert (tmp_path / f"{name}.o").stat().st_size > 0


def _cuda_include() -> Path | None:
    nvcc = Path(os.path.realpath(NVCC)) if NVCC else None
    candidates = [Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "include", Path("/usr/local/cuda/include")]
    if nvcc:
        candidates.insert(0, nvcc.parent.parent / "include")
    candidates += sorted(Path("/usr/local").glob("cuda-*/include"), reverse=True)
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


@pytest.mark.slow
def test_binding_syntax(tmp_path):
    from torch.utils.cpp_extension import include_paths

    cuda_inc = _cuda_include()
    if cuda_inc is None or not shutil.which("g++"):
        pytest.skip("CUDA runtime headers or g++ not found")
    # A CPU build of torch lacks this one generated header; an empty stand-in is enough for -fsyntax-only.
    stub = tmp_path / "stub"
    (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
    (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=stylerig_ops_check"]
    cmd += [f"-I{p}" for p in include_paths()] + [f"-I{stub}", f"-I{cuda_inc}", f"-I{jit.sources_dir()}"]
    cmd += [f"-I{sysconfig.get_paths()['include']}", str(jit.sources_dir() / "ops_bindings.cpp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
