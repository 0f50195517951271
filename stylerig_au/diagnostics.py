"""Facts about this machine and the toolkit's state, gathered for ``stylerig-au doctor``."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys


def tool_version(executable: str, flag: str = "--version") -> str:
    """'<path> (<first version line>)' for a program on PATH, or 'not found'."""
    found = shutil.which(executable)
    if not found:
        return "not found"
    try:
        out = subprocess.run([found, flag], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{found} (version unknown)"
    lines = [line for line in out.splitlines() if line.strip()]
    version = next((line for line in reversed(lines) if "release" in line.lower()), lines[0] if lines else "?")
    return f"{found} ({version.strip()})"


def torch_extensions_dir() -> str:
    """Where torch.utils.cpp_extension builds JIT extensions (computed; nothing is created)."""
    import os

    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return root
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_{cuda}"
    return os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions", tag)


def collect_report(build_ops: bool = False) -> dict[str, dict[str, str]]:
    """Sections of ``name -> value`` lines: system, torch, compilers, ops, assets."""
    import torch

    from stylerig_au import __version__
    from stylerig_au import pretrained as registry

    report: dict[str, dict[str, str]] = {}
    report["system"] = {
        "stylerig_au": __version__,
        "python": f"{sys.version.split()[0]} ({sys.executable})",
        "platform": platform.platform(),
    }
    cuda = torch.cuda.is_available()
    report["torch"] = {
        "torch": torch.__version__,
        "built with CUDA": torch.version.cuda or "no (CPU build)",
        "CUDA available": "yes" if cuda else "no",
        "GPU": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "none",
        "extensions cache": torch_extensions_dir(),
    }
    report["compilers"] = {
        "ninja": tool_version("ninja"),
        "nvcc": tool_version("nvcc"),
        "gcc": tool_version("gcc"),
    }
    try:
        from stylerig_au import ops

        report["ops"] = ops.implementation_status(build=build_ops)
    except (ImportError, AttributeError) as err:
        report["ops"] = {"status": f"unavailable ({err})"}
    assets: dict[str, str] = {"cache": str(registry.cache_dir())}
    for name in registry.ASSETS:
        found, where = registry.locate(name)
        assets[name] = f"{where}: {found}" if found else where
    for name, own in registry.OWN_ASSETS.items():
        try:
            assets[name] = f"bundled: {registry.own_path(name)}"
        except registry.AssetError:
            assets[name] = f"missing (re-create with '{own.made_by}')"
    report["assets"] = assets
    return report


def device_label(device: str) -> str:
    """A human name for a torch device, as benchmarks record it: the GPU's name, or the CPU and its thread count."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
