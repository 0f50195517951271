"""experiments/run_gpu_train.sh, the prepared GPU training call, tried on the CPU with QUICK=1 (2 steps of
batch 1, with the geometry term): it must bring back a loadable mapper, its card and the logs, and nothing
too big to return."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_asset

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_gpu_training_run_writes_a_loadable_mapper(tmp_path) -> None:
    from stylerig_au.edit.mapper import load_mapper
    from stylerig_au.models import load_generator

    require_asset("mobilestylegan-ffhq-1024")
    require_asset("lpips-vgg16")
    require_asset("openface-2.2-au")
    out = tmp_path / "gpu_train"
    env = {**os.environ, "QUICK": "1", "GEOMETRY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", str(REPO / "experiments" / "run_gpu_train.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (out / "log.txt").read_text()[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["au-mapper-gpu.md", "au-mapper-gpu.pt", "log.txt", "summary.txt"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())  # what the device tool can return
    assert "2 steps of 1" in (out / "summary.txt").read_text()
    mapper = load_mapper(out / "au-mapper-gpu.pt", load_generator("mobilestylegan-ffhq-1024"))
    assert "--identity-net lpips --weight keep=2" in mapper.meta["command"] and mapper.meta["steps_this_run"] == 2
    assert "--weight geometry=1" in mapper.meta["command"] and mapper.meta["settings"]["w_geometry"] == 1.0


@pytest.mark.slow
def test_quick_local_design_run_needs_neither_dlib_nor_lpips(tmp_path) -> None:
    """LOCAL=1: what the GPU machine has (no dlib; the pack without LPIPS) is enough."""
    from stylerig_au.edit.mapper import load_mapper
    from stylerig_au.models import load_generator

    require_asset("mobilestylegan-ffhq-1024")
    require_asset("sface")
    blocked = tmp_path / "no_dlib"
    blocked.mkdir()
    (blocked / "dlib.py").write_text("raise ImportError('dlib is not on the GPU machine')\n")
    out = tmp_path / "gpu_train"
    env = {**os.environ, "QUICK": "1", "LOCAL": "1", "TARGET": "3", "PYTHON": sys.executable, "OMP_NUM_THREADS": "2",
           "PYTHONPATH": str(blocked)}  # the script puts the checkout first, then this: dlib cannot be imported
    done = subprocess.run(["bash", str(REPO / "experiments" / "run_gpu_train.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (out / "log.txt").read_text()[-2000:]
    mapper = load_mapper(out / "au-mapper-gpu.pt", load_generator("mobilestylegan-ffhq-1024"))
    settings = mapper.meta["settings"]
    assert settings["local"] and settings["landmarks"] == "net" and settings["w_colour"] == 20 and settings["w_target"] == 3
    assert settings["w_outside"] == 0 and settings["identity_net"] == "sface" and mapper.meta["steps_this_run"] == 2
