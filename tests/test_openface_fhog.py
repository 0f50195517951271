"""Our PyTorch FHOG: layout, invariants, gradients, and agreement with dlib's (through pyfhog, if installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.au.fhog import NUM_FEATURES, fhog, fhog_grid
from tests.helpers import skip_or_fail


def _smooth_image(seed: int, size: int = 112) -> np.ndarray:
    """uint8 [size, size, 3] with natural-image-like structure: smooth blobs plus many channel ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 1, 3)
        img += rng.uniform(-80, 80, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.05 + 0.1 * r))[..., None]
    img += 128 + rng.normal(0, 3, (size, size, 1))
    return np.clip(img, 0, 255).round().astype(np.uint8)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].double()


@pytest.mark.parametrize("size,grid", [((112, 112), (12, 12)), ((96, 64), (10, 6)), ((20, 20), (1, 1)), ((8, 8), (0, 0))])
def test_grid_size_follows_dlib(size, grid):
    assert fhog_grid(*size) == grid
    assert fhog(torch.zeros(2, 3, *size)).shape == (2, *grid, NUM_FEATURES)


def test_constant_image_has_no_features():
    assert fhog(torch.full((1, 3, 112, 112), 77.0)).abs().max() == 0


def test_features_are_bounded_and_nonnegative():
    f = fhog(_to_tensor(_smooth_image(0)))
    assert f.min() >= 0
    assert f[..., :27].max() <= 0.4 + 1e-9  # 4 clipped terms × 0.2 × 0.5
    assert f[..., :27].max() > 0.05


def test_grey_channels_equal_single_channel():
    img = _smooth_image(1)[..., :1]
    grey = fhog(_to_tensor(img))
    rgb = fhog(_to_tensor(np.repeat(img, 3, axis=2)))
    torch.testing.assert_close(grey, rgb)


def test_batch_equals_single():
    imgs = [_to_tensor(_smooth_image(s)) for s in range(3)]
    batched = fhog(torch.cat(imgs))
    for k, img in enumerate(imgs):
        torch.testing.assert_close(batched[k : k + 1], fhog(img))


def test_gradient_wrt_image_is_finite_and_nonzero():
    x = _to_tensor(_smooth_image(2)).requires_grad_(True)
    fhog(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradient_matches_finite_differences_on_a_smooth_direction():
    # a float image with independent channel noise: no ties, so no bin or channel flips nearby
    torch.manual_seed(0)
    x = _to_tensor(_smooth_image(3)) + torch.rand(1, 3, 112, 112, dtype=torch.float64) * 4
    w = torch.randn(1, 12, 12, NUM_FEATURES, dtype=torch.float64)
    direction = torch.randn_like(x) * 1e-6  # bins are piecewise constant: keep the step far below any flip
    x.requires_grad_(True)
    (fhog(x) * w).sum().backward()
    analytic = (x.grad * direction).sum()
    with torch.no_grad():
        numeric = ((fhog(x + direction) * w).sum() - (fhog(x - direction) * w).sum()) / 2
    assert float(numeric) == pytest.approx(float(analytic), rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dlib_fhog_via_pyfhog(seed):
    try:
        import pyfhog
    except ImportError:
        skip_or_fail("pyfhog not installed (make env installs it)")
    rng = np.random.default_rng(seed)
    images = [_smooth_image(seed), rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (rng.integers(0, 4, (112, 112, 3)) * 64).astype(np.uint8)]
    for img in images:
        ref = pyfhog.extract_fhog_features(np.ascontiguousarray(img[..., ::-1]), cell_size=8)  # pyfhog takes BGR
        ours = fhog(_to_tensor(img)).reshape(-1).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)
