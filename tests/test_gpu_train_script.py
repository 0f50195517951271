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
