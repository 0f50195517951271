"""The lazy loader: nothing compiles at import or in status, a failed build is tried once, one warning."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from stylerig_au.ops import jit


class FakeCudaTensor:
    """Just enough of a CUDA tensor for the dispatch decision (no GPU needed)."""

    device = torch.device("cuda", 0)


@pytest.fixture
def fresh_loader(monkeypatch):
    jit._reset_for_tests()
    yield monkeypatch
    jit._reset_for_tests()


def test_import_compiles_nothing():
    code = (
        "import sys, torch.utils.cpp_extension as c\n"
        "c.load = lambda *a, **k: sys.exit('compiled at import')\n"
        "import stylerig_au.ops as o\n"
        "print(sorted(o.implementation_status()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "bias_act" in out.stdout and "upfirdn2d" in out.stdout


def test_status_names_each_op_and_does_not_build(fresh_loader):
    import torch.utils.cpp_extension as cpp

    fresh_loader.setattr(cpp, "load", lambda *a, **k: pytest.fail("status must not compile"))
    status = ops.implementation_status()
    assert set(status) == {"upfirdn2d", "bias_act"}
    assert all(v.startswith(("ref", "cuda")) and "(" in v for v in status.values())


def test_failed_build_is_tried_once_and_warns_once(fresh_loader):
    import torch.utils.cpp_extension as cpp

    calls = []

    def broken_build(*args, **kwargs):
        calls.append(kwargs.get("name"))
        raise RuntimeError("Error building extension: nvcc fatal : Unsupported gpu architecture 'compute_999'")

    fresh_loader.setattr(jit, "missing_tools", lambda: None)
    fresh_loader.setattr(cpp, "load", broken_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert jit.use_cuda("auto", FakeCudaTensor(), "upfirdn2d") is False
        assert jit.use_cuda("auto", FakeCudaTensor(), "bias_act") is False
        assert jit.use_cuda("auto", FakeCudaTensor(), "upfirdn2d") is False
    assert len(calls) == 1
    fallback = [w for w in caught if issubclass(w.category, jit.OpsFallbackWarning)]
    assert len(fallback) == 1
    message = str(fallback[0].message)
    assert "Unsupported gpu architecture" in message and "reference" in message
    # An explicit request for the kernel says why it cannot have it, still without rebuilding.
    with pytest.raises(StylerigError, match="Unsupported gpu architecture"):
        jit.use_cuda("cuda", FakeCudaTensor(), "bias_act")
    assert len(calls) == 1
    assert "build failed" in ops.implementation_status()["bias_act"]


def test_missing_tool_is_named(fresh_loader):
    fresh_loader.setattr(jit, "missing_tools", lambda: "ninja not found (pip install ninja)")
    with pytest.warns(jit.OpsFallbackWarning, match="ninja not found"):
        assert jit.use_cuda("auto", FakeCudaTensor(), "bias_act") is False


def test_compiler_errors_are_classified():
    gcc = jit._describe_error(RuntimeError("#error -- unsupported GNU version! gcc versions later than 12"))
    assert gcc.startswith("host compiler") and "gcc versions later than 12" in gcc
    log = "Error building extension 'stylerig_au_ops_x': [1/3] nvcc -c a.cu\nfoo.cu(3): error: identifier x\nninja: build stopped"
    assert jit._describe_error(RuntimeError(log)) == "compile error: foo.cu(3): error: identifier x"
    cuda = jit._describe_error(RuntimeError("The detected CUDA version (12.1) mismatches the version that was used to compile PyTorch (13.0)."))
    assert cuda.startswith("nvcc's CUDA version") and "12.1" in cuda


def test_build_name_tracks_sources_and_versions(tmp_path, monkeypatch):
    for name in jit.SOURCE_FILES + jit.HEADER_FILES:
        (tmp_path / name).write_text("// " + name)
    monkeypatch.setenv(jit.ENV_SOURCES, str(tmp_path))
    first = jit.build_name()
    (tmp_path / "bias_act.cu").write_text("// changed")
    assert jit.build_name() != first and jit.build_name().startswith("stylerig_au_ops_")
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert jit.build_name() != first


def test_cpu_tensors_always_use_the_reference(fresh_loader):
    fresh_loader.setattr(jit, "load", lambda verbose=False: pytest.fail("no build for CPU tensors"))
    assert jit.use_cuda("auto", torch.zeros(1), "bias_act") is False
    assert jit.use_cuda("ref", torch.zeros(1), "bias_act") is False


def test_sources_are_present():
    folder = jit.sources_dir()
    for name in jit.SOURCE_FILES + jit.HEADER_FILES:
        assert (folder / name).is_file(), name
