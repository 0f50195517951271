"""68-point dlib landmarks for the AU estimators, in OpenFace's pixel convention.

Detection and the shape predictor are those of :mod:`stylerig_au.align` (one copy of each dlib model
per process). The only difference is the coordinate convention: alignment works in continuous
coordinates (pixel centres at +0.5), while OpenFace and its oracle take dlib's integer pixel indices,
which is what these functions return.
"""

from __future__ import annotations

import os

import numpy as np

from stylerig_au.align import detect_faces, landmarks68
from stylerig_au.errors import StylerigError


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise StylerigError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise StylerigError(f"expected a uint8 image, got {image.dtype}; load photos with stylerig_au.imageio.load_image")
    return np.ascontiguousarray(image[..., :3])


def _dlib_points(rgb: np.ndarray, box: tuple[int, int, int, int], predictor: str | os.PathLike | None) -> np.ndarray:
    return landmarks68(rgb, box, predictor) - 0.5  # back from pixel centres to dlib's integer indices


def all_landmarks_68(image: np.ndarray, predictor: str | os.PathLike | None = None, upsample: int = 1,
                     detect_max_side: int | None = None) -> list[np.ndarray]:
    """Landmarks float64 [68, 2] of every face found, left to right (may be empty); see :func:`landmarks_68`."""
    rgb = _as_uint8_rgb(image)
    found = sorted(detect_faces(rgb, upsample, max_side=detect_max_side), key=lambda d: d[0][0])
    return [_dlib_points(rgb, box, predictor) for box, _ in found]


def landmarks_68(image: np.ndarray, predictor: str | os.PathLike | None = None, upsample: int = 1,
                 detect_max_side: int | None = None) -> np.ndarray | None:
    """Landmarks of the most confident face in an RGB photo.

    Args:
        image: uint8 [H, W, 3] RGB (grayscale and RGBA are accepted too).
        predictor: path of ``shape_predictor_68_face_landmarks.dat`` (default: the asset registry).
        upsample: detector upsampling (1 finds faces down to ~40 px).
        detect_max_side: detect on a copy whose longer side is at most this (faster on big photos;
            the landmarks are still fitted at full resolution). None: full resolution.

    Returns:
        float64 [68, 2] (x, y) dlib pixel indices, or None when no face is found.
    """
    rgb = _as_uint8_rgb(image)
    found = detect_faces(rgb, upsample, max_side=detect_max_side)
    if not found:
        return None
    return _dlib_points(rgb, found[0][0], predictor)
