"""The small dlib landmark helper used by the AU estimators."""

from __future__ import annotations

import numpy as np
import pytest

from stylerig_au.au.landmarks import all_landmarks_68, landmarks_68
from stylerig_au.errors import StylerigError
from tests.helpers import require_asset


def test_rejects_non_rgb_uint8_images():
    with pytest.raises(StylerigError, match="uint8"):
        landmarks_68(np.zeros((32, 32, 3), dtype=np.float32), predictor="unused.dat")
    with pytest.raises(StylerigError, match="H×W×3"):
        landmarks_68(np.zeros((32, 32, 5), dtype=np.uint8), predictor="unused.dat")


@pytest.mark.slow
def test_astronaut_landmarks_and_shrunk_detection():
    from skimage import data

    path = require_asset("dlib-landmarks-68")
    img = data.astronaut()
    full = landmarks_68(img, path)
    assert full is not None and full.shape == (68, 2) and full.dtype == np.float64
    # the face is in the upper middle of the 512² photo; mouth corners below the eyes
    assert 150 < full[:, 0].mean() < 300 and 50 < full[:, 1].mean() < 200
    assert full[48, 1] > full[36, 1] and full[54, 1] > full[45, 1]
    shrunk = landmarks_68(img, path, detect_max_side=256)
    assert shrunk is not None and np.abs(shrunk - full).max() < 15
    # every face, left to right (dlib's HOG detector also fires on the suit's patch here)
    every = all_landmarks_68(img, path)
    assert any(np.array_equal(lm, full) for lm in every)
    assert landmarks_68(np.full((64, 64, 3), 90, np.uint8), path) is None
