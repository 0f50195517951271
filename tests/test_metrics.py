"""Metrics: SSIM against scikit-image, MSE/PSNR identities, LPIPS and identity distance on real faces."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from stylerig_au import imageio, metrics
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
    from stylerig_au.errors import StylerigError

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
