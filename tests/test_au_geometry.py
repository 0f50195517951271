"""The geometric judge of AU edits (landmark distances in inter-ocular units)."""

from __future__ import annotations

import numpy as np
import pytest

from stylerig_au.au.geometry import AU_GEOMETRY, FEATURES, au_motion, measure


def _face(seed: int = 0) -> np.ndarray:
    """A plausible frontal 68-point face in image pixels (y down): eyes at y=400, mouth at y=700."""
    rng = np.random.default_rng(seed)
    p = np.zeros((68, 2))
    p[0:17] = np.stack([np.linspace(300, 724, 17), 450 + 250 * np.sin(np.linspace(0, np.pi, 17))], 1)  # jaw, chin at 8
    p[17:22] = np.stack([np.linspace(330, 480, 5), np.full(5, 330.0)], 1)  # right brow
    p[22:27] = np.stack([np.linspace(544, 694, 5), np.full(5, 330.0)], 1)  # left brow
    p[27:31] = np.stack([np.full(4, 512.0), np.linspace(400, 560, 4)], 1)  # nose bridge
    p[31:36] = np.stack([np.linspace(470, 554, 5), np.full(5, 590.0)], 1)  # nose base, 33 in the middle
    for start, cx in ((36, 382.0), (42, 642.0)):  # eyes: corners, upper lid (2), corner, lower lid (2)
        p[start:start + 6] = [[cx - 40, 400], [cx - 15, 385], [cx + 15, 385], [cx + 40, 400], [cx + 15, 415], [cx - 15, 415]]
    outer = [[440, 700], [465, 680], [495, 672], [512, 675], [529, 672], [559, 680], [584, 700],
             [559, 720], [529, 730], [512, 732], [495, 730], [465, 720]]
    inner = [[450, 700], [495, 690], [512, 691], [529, 690], [574, 700], [529, 706], [512, 708], [495, 706]]
    p[48:60], p[60:68] = outer, inner
    return p + rng.normal(0, 0.01, p.shape)


def test_measures_are_in_interocular_units_and_ignore_scale_and_roll():
    face = _face()
    base = measure(face[None])
    assert base["mouth_width"][0] == pytest.approx(144 / 260, abs=1e-3)  # corners 144 px apart, eyes 260 px
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (face - 512) @ rot.T * 1.7 + 100
    for name, value in measure(moved[None]).items():
        assert value[0] == pytest.approx(base[name][0], abs=1e-9), name


@pytest.mark.parametrize("au, points, shift, expect", [
    (12, [48, 54], (0, -10), +1),   # lip corners up: AU12 positive, AU15 negative
    (15, [48, 54], (0, -10), -1),
    (26, [5, 6, 7, 8, 9, 10, 11], (0, 25), +1),  # chin down: jaw drop
    (1, [21, 22], (0, -12), +1),    # inner brows up
    (4, [21], (12, 0), +1),         # inner brows together
])
def test_au_motion_has_the_au_sign(au, points, shift, expect):
    before = _face()
    after = before.copy()
    after[points] += shift
    motion = au_motion(before[None], after[None], au)[0]
    assert np.sign(motion) == expect and abs(motion) > 0.01


def test_every_au_names_a_known_feature_and_bad_shapes_are_refused():
    assert set(AU_GEOMETRY) == {1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45}
    assert all(spec.feature in FEATURES and spec.sign in (-1, 1) for spec in AU_GEOMETRY.values())
    with pytest.raises(ValueError, match="68, 2"):
        measure(np.zeros((2, 5, 2)))
