"""Lazy JIT build of the CUDA ops, tried at most once per process, and the per-call dispatch.

The sources in ``cuda_ops/`` are compiled with ``torch.utils.cpp_extension.load`` + ninja into
``<cache>/<name>`` where ``name`` carries a hash of the sources and of the torch / CUDA / Python
versions, so a changed kernel or a new torch never reuses a stale binary. Nothing happens at import.

On the first CUDA call with ``impl='auto'`` the build is attempted; if it fails, one
:class:`OpsFallbackWarning` names the cause (no ninja, no nvcc, compiler error ...) and every later
call in this process uses the PyTorch reference without trying again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

from stylerig_au.errors import StylerigError

OPS = ("upfirdn2d", "bias_act")
IMPLS = ("auto", "cuda", "ref")
ENV_SOURCES = "STYLERIG_AU_CUDA_OPS"  # folder holding the .cu/.cpp/.h sources (default: <checkout>/cuda_ops)
ENV_BUILD_DIR = "STYLERIG_AU_OPS_CACHE"  # where builds go (see build_dir)
SOURCE_FILES = ("ops_bindings.cpp", "upfirdn2d.cu", "bias_act.cu")
HEADER_FILES = ("common.h", "common.cuh", "upfirdn2d.h", "bias_act.h")


class OpsFallbackWarning(UserWarning):
    """The CUDA ops could not be built; the PyTorch reference is used instead."""


_lock = threading.Lock()
_module: ModuleType | None = None
_failure: str | None = None  # cause of the one failed build of this process


def sources_dir() -> Path:
    """Folder of the CUDA sources: ``$STYLERIG_AU_CUDA_OPS``, ``cuda_ops/`` of a checkout, or the copy a
    wheel installs under ``<prefix>/share/stylerig_au/cuda_ops``."""
    env = os.environ.get(ENV_SOURCES)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "cuda_ops"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "stylerig_au" / "cuda_ops"


def build_name() -> str:
    """Extension name: fixed prefix + hash of the sources and the torch / CUDA / Python versions."""
    digest = hashlib.sha256()
    folder = sources_dir()
    for name in SOURCE_FILES + HEADER_FILES:
        path = folder / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    digest.update(f"{torch.__version__}|{torch.version.cuda}|{sys.version_info[:2]}".encode())
    return f"stylerig_au_ops_{digest.hexdigest()[:16]}"


def build_dir() -> Path:
    """Folder that holds this build (computed; not created here).

    ``$STYLERIG_AU_OPS_CACHE``, else ``$TORCH_EXTENSIONS_DIR/stylerig_au``, else
    ``~/.cache/stylerig_au/torch_extensions``; then one sub-folder per :func:`build_name`.
    """
    root = os.environ.get(ENV_BUILD_DIR)
    if root:
        base = Path(root).expanduser()
    elif os.environ.get("TORCH_EXTENSIONS_DIR"):
        base = Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser() / "stylerig_au"
    else:
        base = Path.home() / ".cache" / "stylerig_au" / "torch_extensions"
    return base / build_name()


def missing_tools() -> str | None:
    """Why a build cannot even start (no sources, no CUDA torch, no ninja, no nvcc), or None."""
    folder = sources_dir()
    missing = [n for n in SOURCE_FILES + HEADER_FILES if not (folder / n).is_file()]
    if missing:
        return f"CUDA sources not found in {folder} ({', '.join(missing)}); set ${ENV_SOURCES}"
    if torch.version.cuda is None:
        return "this torch is a CPU build"
    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    if not is_ninja_available():
        return "ninja not found (pip install ninja)"
    nvcc = shutil.which("nvcc") or (CUDA_HOME and shutil.which(os.path.join(CUDA_HOME, "bin", "nvcc")))
    if not nvcc:
        return "nvcc not found (install the CUDA toolkit matching torch's CUDA, or set CUDA_HOME)"
    return None


def _describe_error(err: BaseException) -> str:
    """One line naming why a build failed (the category, then the most telling line of the log)."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    low = text.lower()

    def first(*needles: str) -> str | None:
        for line in lines:
            lowered = line.lower()
            if any(n in lowered for n in needles) and not lowered.startswith("error building extension"):
                return line[:200]
        return None

    if "unsupported gnu version" in low or "unsupported clang version" in low or "host compiler" in low:
        return f"host compiler not supported by this nvcc ({first('unsupported', 'host compiler')})"
    if "mismatch" in low and "cuda" in low:
        return f"nvcc's CUDA version does not match torch's ({first('mismatch')})"
    detail = first("error:", "error :", "fatal", " error ") or first("error")
    if detail:
        return f"compile error: {detail}"
    return f"{type(err).__name__}: {lines[-1][:200] if lines else 'no message'}"


def load(verbose: bool = False) -> ModuleType:
    """Build (or load the cached build of) the CUDA ops; raises StylerigError with the cause on failure.

    A failure is remembered: later calls in this process raise at once without rebuilding.
    """
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if _failure is not None:
            raise StylerigError(f"CUDA ops unavailable: {_failure}")
        cause = missing_tools()
        if cause is None:
            try:
                from torch.utils.cpp_extension import load as cpp_load

                folder = sources_dir()
                target = build_dir()
                target.mkdir(parents=True, exist_ok=True)
                if not any(target.glob("*.so")):
                    print(f"stylerig_au: building the CUDA ops once into {target} (about a minute)", file=sys.stderr)
                _module = cpp_load(
                    name=target.name,
                    sources=[str(folder / n) for n in SOURCE_FILES],
                    extra_include_paths=[str(folder)],
                    extra_cflags=["-O3"],
                    extra_cuda_cflags=["-O3"],
                    build_directory=str(target),
                    verbose=verbose,
                )
                return _module
            except Exception as err:  # noqa: BLE001 (any build failure means: fall back)
                cause = _describe_error(err)
        _failure = cause
        raise StylerigError(f"CUDA ops unavailable: {cause}")


def use_cuda(impl: str, x: torch.Tensor, op: str) -> bool:
    """Whether ``op`` on ``x`` should run the CUDA kernel (building it on first need)."""
    if impl not in IMPLS:
        raise StylerigError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "ref":
        return False
    if impl == "cuda":
        if x.device.type != "cuda":
            raise StylerigError(f"{op}(impl='cuda') needs a CUDA tensor, got one on {x.device}; use impl='auto'")
        load()
        return True
    if x.device.type != "cuda":
        return False
    if _module is not None:
        return True
    if _failure is not None:
        return False
    try:
        load()
    except StylerigError as err:
        warnings.warn(
            f"{err}; falling back to the PyTorch reference ops (slower, same results). "
            "Run `stylerig-au doctor --build-ops` for details.",
            OpsFallbackWarning,
            stacklevel=3,
        )
        return False
    return True


def _reset_for_tests() -> None:
    """Forget the build state (tests only)."""
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        _module = None
        _failure = None


def implementation_status(build: bool = False) -> dict[str, str]:
    """Per op, which implementation is active (or would be used for CUDA tensors) and why.

    Never compiles unless ``build=True``, which attempts (or loads) the build now.
    """
    if build and torch.cuda.is_available():
        try:
            load()
        except StylerigError:
            pass
    if _module is not None:
        line = f"cuda (loaded {_module.__name__} from {build_dir()})"
    elif _failure is not None:
        line = f"ref (CUDA build failed in this process: {_failure})"
    elif not torch.cuda.is_available():
        line = "ref (no CUDA device; CPU tensors always use the PyTorch reference)"
    else:
        cause = missing_tools()
        if cause is not None:
            line = f"ref (CUDA build would fail: {cause})"
        elif build_dir().is_dir() and any(build_dir().glob("*.so")):
            line = f"cuda (cached build in {build_dir()}, loaded on first use)"
        else:
            line = f"cuda (built on first CUDA use into {build_dir()}; ref if that fails)"
    return {op: line for op in OPS}
