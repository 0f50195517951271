"""A geometric judge of AU edits: how far the facial features an AU moves actually moved.

AUs are muscle movements, so an edit that raises AU12 should pull the lip corners up and out, and
one that raises AU26 should lower the chin. This module reads that from the 68 dlib landmarks with
a handful of hand-made distances, independent of any AU detector (OpenFace's SVRs and the student
both read texture too: a beard passes for AU17 there, but it does not move the chin landmark).

Every measure is in units of the inter-ocular distance (IOD, between the eye centres), in a frame
where the eye line is horizontal and y points up, so it does not depend on image size or roll.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOVED_IOD = 0.01  # a feature "moved" when it changed by more than this (about 2.6 px at 1024², where the IOD is ~260 px)


def _frame(landmarks: np.ndarray) -> np.ndarray:
    """[N, 68, 2] landmarks (image pixels, y down) -> same points in IOD units, eye line horizontal, y up."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected landmarks [N, 68, 2], got {lm.shape}")
    right_eye, left_eye = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    centre = (right_eye + left_eye) / 2
    axis = left_eye - right_eye
    iod = np.linalg.norm(axis, axis=1)
    cos, sin = axis[:, 0] / iod, axis[:, 1] / iod
    rel = lm - centre[:, None]
    x = (rel[..., 0] * cos[:, None] + rel[..., 1] * sin[:, None]) / iod[:, None]
    y = -(-rel[..., 0] * sin[:, None] + rel[..., 1] * cos[:, None]) / iod[:, None]
    return np.stack([x, y], -1)


def _dist(p: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(p[:, a] - p[:, b], axis=1)


def _eye_opening(p: np.ndarray) -> np.ndarray:
    upper = p[:, [37, 38, 43, 44], 1].mean(1)
    lower = p[:, [41, 40, 47, 46], 1].mean(1)
    return upper - lower


FEATURES = {
    # name: (what it measures, function of the normalised points [N, 68, 2] -> [N])
    "inner_brow_height": ("height of the inner brow ends above the eye line", lambda p: p[:, [21, 22], 1].mean(1)),
    "outer_brow_height": ("height of the outer brow ends above the eye line", lambda p: p[:, [17, 26], 1].mean(1)),
    "brow_gap": ("distance between the inner brow ends", lambda p: _dist(p, 21, 22)),
    "eye_opening": ("upper lid above lower lid, both eyes", _eye_opening),
    "lower_lid_height": ("height of the lower lids", lambda p: p[:, [40, 41, 46, 47], 1].mean(1)),
    "nose_length": ("nose root to nose tip", lambda p: _dist(p, 27, 33)),
    "nose_to_upper_lip": ("nose base to the top of the upper lip", lambda p: _dist(p, 33, 51)),
    "mouth_width": ("distance between the lip corners", lambda p: _dist(p, 48, 54)),
    "corner_lift": ("lip corners' height above the mouth centre", lambda p: p[:, [48, 54], 1].mean(1) - p[:, [62, 66], 1].mean(1)),
    "lip_gap": ("opening between the inner lips", lambda p: _dist(p, 62, 66)),
    "lip_thickness": ("upper plus lower lip thickness", lambda p: _dist(p, 51, 62) + _dist(p, 66, 57)),
    "lower_lip_to_chin": ("lower lip to chin", lambda p: _dist(p, 57, 8)),
    "nose_to_chin": ("nose base to chin (jaw opening)", lambda p: _dist(p, 33, 8)),
}


@dataclass(frozen=True)
class AUGeometry:
    """The landmark measure an AU moves, and the sign of the move when the AU rises."""

    feature: str
    sign: int


# The measure each AU moves most directly (FACS descriptions of the muscle action). AU14 (dimpler)
# widens the mouth only slightly; AU6 lifts the lower lids with the cheeks.
AU_GEOMETRY = {
    1: AUGeometry("inner_brow_height", +1),
    2: AUGeometry("outer_brow_height", +1),
    4: AUGeometry("brow_gap", -1),
    5: AUGeometry("eye_opening", +1),
    6: AUGeometry("lower_lid_height", +1),
    7: AUGeometry("eye_opening", -1),
    9: AUGeometry("nose_length", -1),
    10: AUGeometry("nose_to_upper_lip", -1),
    12: AUGeometry("corner_lift", +1),
    14: AUGeometry("mouth_width", +1),
    15: AUGeometry("corner_lift", -1),
    17: AUGeometry("lower_lip_to_chin", -1),
    20: AUGeometry("mouth_width", +1),
    23: AUGeometry("lip_thickness", -1),
    25: AUGeometry("lip_gap", +1),
    26: AUGeometry("nose_to_chin", +1),
    45: AUGeometry("eye_opening", -1),
}


def measure(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURES` for [N, 68, 2] landmarks: {name: float64 [N]} in IOD units."""
    p = _frame(landmarks)
    return {name: fn(p) for name, (_, fn) in FEATURES.items()}


def au_motion(before: np.ndarray, after: np.ndarray, au: int) -> np.ndarray:
    """Signed motion of AU ``au``'s feature from ``before`` to ``after`` landmarks [N, 68, 2], float64 [N].

    Positive when the feature moved the way the AU moves it (e.g. lip corners up for AU12), in IOD units.
    """
    spec = AU_GEOMETRY[int(au)]
    return spec.sign * (measure(after)[spec.feature] - measure(before)[spec.feature])
