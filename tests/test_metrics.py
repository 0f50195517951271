"""Metrics: SSIM against scikit-image, MSE/PSNR identities, LPIPS and identity distance on real faces."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig_au import imageio, metrics
from stylerig_au.errors import StylerigError
from tests.helpers import faces_dir, require_asset

skimage_metrics = pytest.importorskip("skimage.metrics")


def _rand_pair(seed: int = 0, shape=(2, 40, 48, 3)):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    return a, b


def test_mse_psnr():
    a, b = _rand_pair()
    expected = ((a / 255.0 - b / 255.0) ** 2).mean(axis=(1, 2, 3))
    assert np.allclose(metrics.mse(a, b), expected)
    assert np.allclose(metrics.psnr(a, b), 10 * np.log10(1 / expected))
    assert metrics.psnr(a[0], a[0])[0] == math.inf


def test_tensor_and_uint8_inputs_agree():
    a, b = _rand_pair(1)
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert np.allclose(metrics.mse(a, b), metrics.mse(ta, tb), atol=1e-7)
    assert np.allclose(metrics.ssim(a, b), metrics.ssim(ta, tb), atol=1e-6)


def test_ssim_matches_skimage():
    a, b = _rand_pair(2)
    ours = metrics.ssim(a, b)
    for i in range(len(a)):
        ref = skimage_metrics.structural_similarity(
            a[i], b[i], channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert abs(ours[i] - ref) < 1e-9
    assert np.allclose(metrics.ssim(a, a), 1.0)


def test_ssim_is_differentiable():
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    metrics.ssim_torch(x, torch.rand(1, 3, 32, 32)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(StylerigError):
        metrics.mse(np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8))


@pytest.fixture(scope="module")
def celeb() -> list[np.ndarray]:
    files = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))
    assert len(files) >= 4
    return [imageio.resize(imageio.load_image(f), (256, 256)) for f in files]


@pytest.mark.slow
def test_lpips_real_faces(celeb):
    require_asset("lpips-vgg16")
    assert metrics.lpips(celeb[0], celeb[0])[0] == 0
    blurred = imageio.resize(imageio.resize(celeb[0], (64, 64)), (256, 256))
    d_blur = metrics.lpips(celeb[0], blurred)[0]
    d_other = metrics.lpips(celeb[0], celeb[1])[0]
    assert 0 < d_blur < d_other


@pytest.mark.slow
def test_identity_distance_same_and_different_people(celeb):
    require_asset("dlib-face-recognition")
    require_asset("dlib-landmarks-68")
    assert metrics.identity_distance(celeb[0], celeb[0])[0] == 0
    # A mildly degraded copy of a photo stays the same person.
    noisy = np.clip(celeb[2].astype(int) + np.random.default_rng(0).integers(-12, 13, celeb[2].shape), 0, 255).astype(np.uint8)
    assert metrics.identity_distance(celeb[2], noisy)[0] < 0.6
    # Every pair of distinct celebahq-dev people is farther apart than dlib's 0.6 threshold
    # (measured here: smallest of the 45 pairs 0.70, mean 0.88).
    desc = [metrics.face_descriptor(im) for im in celeb]
    dists = [np.linalg.norm(x - y) for x, y in itertools.combinations(desc, 2)]
    assert min(dists) > 0.6


def test_identity_needs_a_face_in_each_image(celeb, tmp_path, monkeypatch, capsys):
    """B without a face: no distance from A's face box; the CLI says which file has no face, exits 1, and in
    a folder pair the other pairs are still measured."""
    from stylerig_au.cli import main

    require_asset("dlib-face-recognition")
    require_asset("dlib-landmarks-68")
    blank = np.full_like(celeb[0], 128)
    with pytest.raises(StylerigError, match="no face found in the second image"):
        metrics.identity_distance(celeb[0], blank)
    with pytest.raises(StylerigError, match="no face found in the first image"):
        metrics.identity_distance(blank, celeb[0])
    assert metrics.identity_distance(celeb[0], blank, shared_frame=True)[0] > 0  # evaluate's same-frame pairs
    monkeypatch.setattr(metrics, "lpips", lambda a, b, **k: np.zeros(1))  # not what this test is about
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for folder in (a, b):
        imageio.save_image(folder / "face.png", celeb[0])
    imageio.save_image(b / "other.png", blank)
    imageio.save_image(a / "other.png", celeb[1])
    assert main(["metrics", str(a / "other.png"), str(b / "other.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no face found in other.png" in err[0], err
    assert main(["metrics", str(a), str(b), "--json"]) == 1
    captured = capsys.readouterr()
    import json

    rows = json.loads(captured.out)
    assert [Path(r["a"]).name for r in rows] == ["face.png"] and rows[0]["identity_dlib"] == 0
    assert "no face found in other.png" in captured.err and "1 of 2 pairs" in captured.err


def test_identity_distances_find_each_face_once_and_match_the_single_distances(celeb, monkeypatch):
    """identity_distances: the same numbers as identity_distance and sface_distance, with one face search per pair."""
    from stylerig_au import align

    require_asset("sface")
    a, b = celeb[0], np.ascontiguousarray(celeb[0][:, ::-1])
    single = {"dlib": metrics.identity_distance(a, b), "sface": metrics.sface_distance(a, b)}
    calls = []
    real = align.detect_faces
    monkeypatch.setattr(align, "detect_faces", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    both = metrics.identity_distances(a, b)
    assert len(calls) == 2  # one search in each image of the pair
    for key in ("dlib", "sface"):
        np.testing.assert_allclose(both[key], single[key], rtol=1e-6)
