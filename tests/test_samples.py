"""Building AU sample datasets: chunked, resumable, and the same with several worker processes."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.errors import StylerigError
from stylerig_au.samples import build_samples, load_samples


class NoFaceDetector:
    """Stands in for the OpenFace estimator: a tiny generator's 32² images hold no face dlib can find."""

    aus = list(AU_NUMBERS)


def _build(G, folder, workers: int, num: int = 6):
    return build_samples(G, folder, num, detector=NoFaceDetector(), chunk_size=2, image_size=16,
                         workers=workers, progress=False)


def test_workers_make_the_same_chunks_and_resume(tiny_stylegan2, tmp_path):
    one = load_samples(_build(tiny_stylegan2, tmp_path / "one", workers=1), with_images=True)
    two_dir = _build(tiny_stylegan2, tmp_path / "two", workers=2)
    two = load_samples(two_dir, with_images=True)
    assert one.seeds.tolist() == two.seeds.tolist() == list(range(6))
    torch.testing.assert_close(one.w, two.w, rtol=1e-5, atol=1e-5)  # thread counts differ: rounding only
    assert (one.images.int() - two.images.int()).abs().max() <= 1
    assert one.images.shape == (6, 3, 16, 16) and not two.face_found.any() and two.aus.isnan().all()

    kept = {p.name: p.stat().st_mtime_ns for p in two_dir.glob("chunk_*.pt")}
    (two_dir / "chunk_00001.pt").unlink()
    _build(tiny_stylegan2, two_dir, workers=2, num=8)  # resumes: remakes chunk 1, adds chunk 3
    after = {p.name: p.stat().st_mtime_ns for p in two_dir.glob("chunk_*.pt")}
    assert sorted(after) == [f"chunk_0000{i}.pt" for i in range(4)]
    assert after["chunk_00000.pt"] == kept["chunk_00000.pt"] and after["chunk_00002.pt"] == kept["chunk_00002.pt"]
    again = load_samples(two_dir, with_images=True)
    assert again.seeds.tolist() == list(range(8))
    torch.testing.assert_close(again.w[:6], one.w, rtol=1e-5, atol=1e-5)
    assert not list(two_dir.glob("*partial*"))  # atomic_path's temporary files


def test_build_rejects_bad_worker_settings(tiny_stylegan2, tmp_path):
    with pytest.raises(StylerigError, match="at least one worker"):
        _build(tiny_stylegan2, tmp_path / "d", workers=0)
    with pytest.raises(StylerigError, match="CPU only"):
        build_samples(tiny_stylegan2, tmp_path / "d", 4, detector=NoFaceDetector(), device="cuda", workers=2, progress=False)
