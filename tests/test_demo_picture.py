"""The demo's labelled before/after picture, and the README's copy of it: made by the current demo command.

The committed ``docs/demo_before_after.jpg`` comes with the record the demo wrote beside it
(``before_after.json``): the captions, the hashed inputs (photo pixels, inversion setting, bundled AU
directions and mapper) and the picture's sha256. The check here fails when the picture was edited
by hand, or when the demo would now make a different one (other edits or captions, another layout,
retrained directions or mapper, another inversion setting): then rerun the demo and copy both files
as the record's ``readme_copy`` says.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylerig_au import demo
from stylerig_au.align import FaceTransform
from stylerig_au.edit import media
from stylerig_au.pretrained import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def _layout(captions: list[str]) -> tuple[int, int]:
    """(width, height) of a before/after picture with these captions."""
    blank = [np.zeros((demo.BEFORE_AFTER_CELL,) * 2 + (3,), np.uint8)] * len(captions)
    grid = media.captioned_grid(blank, captions, ncols=demo.BEFORE_AFTER_COLUMNS, cell=demo.BEFORE_AFTER_CELL)
    return grid.shape[1], grid.shape[0]


def _transform(size=(200, 160)) -> FaceTransform:
    rng = np.random.default_rng(0)
    landmarks = rng.uniform([80, 60], [120, 110], size=(68, 2))  # a face 40 x 50 px
    quad = np.array([[60.0, 40.0], [60.0, 140.0], [160.0, 140.0], [160.0, 40.0]])
    return FaceTransform(quad=quad, source_size=size, output_size=64, landmarks=landmarks)


def test_face_box_is_a_square_around_the_face_inside_the_photo():
    t = _transform()
    left, top, right, bottom = demo.face_box(t, (200, 160))
    (x0, y0), (x1, y1) = t.landmarks.min(0), t.landmarks.max(0)
    assert right - left == bottom - top == int(2.2 * max(x1 - x0, y1 - y0))
    assert 0 <= left and 0 <= top and right <= 200 and bottom <= 160
    assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom
    assert demo.face_box(_transform(), (60, 50)) == (10, 0, 60, 50)  # the box outgrows the photo: the largest square in it


def test_write_before_after_records_captions_inputs_and_hash(tmp_path):
    photo = np.full((160, 200, 3), 200, np.uint8)
    edited = photo.copy()
    edited[90:100, 90:110] = 0  # an "edit" inside the face box
    captions = demo.before_after_captions(["smile", "jaw_drop"])
    tiles = dict(zip(captions, [photo, photo, edited, edited]))
    inputs = {"photo": "astronaut", "steps": 60, "device": "cpu", "photo_pixels_sha256": "x"}
    picture = demo.write_before_after(tmp_path, tiles, _transform(), inputs)
    record = json.loads((tmp_path / demo.BEFORE_AFTER_RECORD).read_text())
    assert record["sha256"] == sha256_file(picture) and record["captions"] == captions and record["inputs"] == inputs
    assert record["command"] == "stylerig-au demo --out DIR" and demo.README_PICTURE in record["readme_copy"]
    image = np.asarray(Image.open(picture))
    assert (image.shape[1], image.shape[0]) == _layout(captions)
    top = media.header_height(demo.BEFORE_AFTER_CELL, 2)
    assert (image[:top, : demo.BEFORE_AFTER_CELL].min(axis=2) < 100).any()  # the 'photo' caption is drawn
    face = image[top + 4: top + 4 + demo.BEFORE_AFTER_CELL]
    third = face[:, 2 * (demo.BEFORE_AFTER_CELL + 4) + 4: 3 * (demo.BEFORE_AFTER_CELL + 4)]
    assert third.min() < 50 and face[:, 4: demo.BEFORE_AFTER_CELL].min() > 150  # the edit shows, the photo has none


def test_edit_captions_name_the_edit_and_its_aus():
    assert demo.before_after_captions(list(demo.demo_edits())) == [
        "photo", "inverted, not edited", "smile\nAU6 +2, AU12 +2", "brow lowerer\nAU4 +2", "jaw drop\nAU26 +2",
        "brow raise\nAU1 +2, AU2 +2", "smile, AU mapper\nAU6 +2, AU12 +2"]
    assert list(demo.demo_edits()) == list(demo.DEMO_EDITS)


def test_readme_picture_was_made_by_the_current_demo_command():
    pytest.importorskip("skimage")
    picture = ROOT / demo.README_PICTURE
    record = json.loads(picture.with_suffix(".json").read_text())
    assert sha256_file(picture) == record["sha256"], "the README's picture was changed after the demo wrote it"
    assert record["command"] == "stylerig-au demo --out DIR" and record["device"] == "cpu"
    assert record["captions"] == demo.before_after_captions(list(demo.demo_edits())), \
        "the demo's edits or captions changed: rerun the demo and copy its picture (see the record's readme_copy)"
    current = demo.picture_inputs(demo.astronaut_photo(), "mobilestylegan-ffhq-1024", demo.QUICK_STEPS, "cpu")
    assert record["inputs"] == current, \
        "the demo photo, inversion setting or bundled directions/mapper changed: rerun the demo and copy its picture"
    with Image.open(picture) as image:
        assert image.size == _layout(record["captions"]) and image.format == "JPEG"
    assert picture.stat().st_size < 1_000_000
    assert demo.README_PICTURE in (ROOT / "README.md").read_text()
