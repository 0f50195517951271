"""The age/gender judge: its asset (fake wheel, by hash), chips, networks on tiny fake graphs, errors, and the real models."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig_au import attributes, pretrained
from stylerig_au.errors import AssetError, StylerigError
from tests.helpers import faces_dir, require_asset


def dev_photos() -> list[Path]:
    photos = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos in {faces_dir() / 'celebahq-dev'}")
    return photos


# ----------------------------------------------------------------------------- chips


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from stylerig_au.imageio import load_image

    require_asset("dlib-landmarks-5")
    return load_image(dev_photos()[0])


def test_face_chips_shapes_and_box(photo):
    chips = attributes.face_chips(photo)
    assert chips.age.shape == (64, 64, 3) and chips.age.dtype == np.uint8
    assert chips.gender.shape == (32, 32, 3) and chips.gender.dtype == np.uint8
    left, top, right, bottom = chips.box
    assert 0 <= left < right <= photo.shape[1] and 0 <= top < bottom <= photo.shape[0]
    # the same face at half the size gives nearly the same chips (they are aligned, not cropped)
    from stylerig_au.imageio import resize

    half = attributes.face_chips(resize(photo, (512, 512)))
    assert np.abs(half.age.astype(float) - chips.age).mean() < 12


def test_no_face_is_a_one_line_error():
    require_asset("dlib-landmarks-5")
    flat = np.full((256, 256, 3), 128, np.uint8)
    with pytest.raises(StylerigError, match=r"^blank\.png: no face found for the age/gender judge; use an image") as info:
        attributes.face_chips(flat, "blank.png")
    assert "\n" not in str(info.value)


def test_bad_image_type_is_an_error():
    with pytest.raises(StylerigError, match=r"expected a uint8 RGB image \[H, W, 3\], got float32 \[8, 8\]"):
        attributes.face_chips(np.zeros((8, 8), np.float32))


def test_chip_batch_is_bytes_minus_means_over_256():
    chips = np.zeros((2, 4, 4, 3), np.uint8)
    chips[1, ..., 0] = 255
    x = attributes.chip_batch(chips)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    means = torch.tensor(attributes.CHANNEL_MEANS, dtype=torch.float32)
    torch.testing.assert_close(x[0, :, 0, 0], -means / 256)
    assert x[1, 0, 0, 0].item() == pytest.approx((255 - 122.781998) / 256, abs=1e-6)
