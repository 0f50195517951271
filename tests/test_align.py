"""Alignment on real photos: FFHQ eye positions, transforms, paste-back, error paths, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stylerig_au import align, imageio
from stylerig_au.cli import main
from stylerig_au.errors import StylerigError
from tests.helpers import faces_dir, require_asset

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module", autouse=True)
def _landmark_model():
    require_asset("dlib-landmarks-68")


def _eyes(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Eye centres [2, 2] found by dlib on ``image`` and its eye-to-mouth / eye-to-eye ratio."""
    box, _ = align.detect_faces(image, 1)[0]
    lm = align.landmarks68(image, box)
    eyes = np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)])
    mouth = (lm[48] + lm[54]) / 2
    ratio = np.hypot(*(mouth - eyes.mean(axis=0))) / np.hypot(*(eyes[1] - eyes[0]))
    return eyes, float(ratio)


def test_canonical_eye_positions_follow_the_recipe():
    # A synthetic upright face: eyes 100 px apart, mouth 100 px below: the crop's half side is 200 px.
    lm = np.zeros((68, 2))
    lm[36:42] = [300, 400]
    lm[42:48] = [400, 400]
    lm[48], lm[54] = [330, 500], [370, 500]
    quad = align.ffhq_quad(lm)
    t = align.FaceTransform(quad=quad, source_size=(800, 800), output_size=1024)
    got = t.to_aligned(np.array([[300, 400], [400, 400]]))
    assert np.allclose(got, align.canonical_eye_positions(1024, 1.0), atol=1e-9)
    assert np.allclose(got[:, 0], [384, 640])  # 0.375 S and 0.625 S


@pytest.mark.parametrize("size", [256, 1024])
def test_astronaut_eyes_land_on_ffhq_positions(astronaut, size):
    face = align.align_image(astronaut, output_size=size)[0]
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    eyes, ratio = _eyes(face.image)
    # canonical positions computed from the FFHQ recipe for this face's own proportions
    err = np.abs(eyes - align.canonical_eye_positions(size, ratio))
    assert err.max() <= 3.0 * size / 1024 + 1.0, err


def test_real_unaligned_photos_align(tmp_path):
    photos = sorted((faces_dir() / "unaligned").glob("0[345].*"))
    assert photos
    for photo in photos:
        face = align.align_file(photo, output_size=256)[0]
        eyes, ratio = _eyes(face.image)
        assert np.abs(eyes - align.canonical_eye_positions(256, ratio)).max() <= 2.5, photo


def test_transform_roundtrips_through_dict(astronaut):
    t = align.align_image(astronaut, output_size=256)[0].transform
    d = json.loads(json.dumps(t.to_dict()))
    t2 = align.FaceTransform.from_dict(d)
    assert np.allclose(t2.affine(), t.affine())
    pts = np.array([[10.0, 20.0], [100.0, 50.0]])
    back = t2.to_aligned(pts) @ t2.affine()[:, :2].T + t2.affine()[:, 2]
    assert np.allclose(back, pts)


def test_paste_back_unedited_changes_nothing_outside_mask(astronaut):
    face = align.align_image(astronaut, output_size=256)[0]
    # an "unedited reconstruction": the aligned face itself, slightly perturbed so something changes
    recon = np.clip(face.image.astype(int) + 7, 0, 255).astype(np.uint8)
    out = align.paste_back(astronaut, recon, face.transform)
    t = face.transform
    mask = align.face_mask(t.to_aligned(t.landmarks), t.output_size)
    # photo pixels whose centre maps outside the (support of the) mask must be identical
    h, w = astronaut.shape[:2]
    yy, xx = np.mgrid[:h, :w] + 0.5
    uv = t.to_aligned(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(h, w, 2)
    support = np.asarray(
        Image.fromarray((mask > 0).astype(np.uint8) * 255).filter(__import__("PIL.ImageFilter").ImageFilter.MaxFilter(5))
    ) > 0
    u = np.clip(np.floor(uv[..., 0]).astype(int), 0, t.output_size - 1)
    v = np.clip(np.floor(uv[..., 1]).astype(int), 0, t.output_size - 1)
    inside_quad = (uv >= 0).all(-1) & (uv < t.output_size).all(-1)
    outside = ~(inside_quad & support[v, u])
    assert np.array_equal(out[outside], astronaut[outside])
    changed = (out != astronaut).any(-1)
    assert changed.sum() > 1000  # the face itself was replaced
    # and the face region follows the reconstruction
    assert np.abs(out[changed].astype(int) - astronaut[changed]).mean() > 3


def test_paste_back_rejects_wrong_photo_size(astronaut):
    face = align.align_image(astronaut, output_size=64)[0]
    with pytest.raises(StylerigError):
        align.paste_back(astronaut[:100], face.image, face.transform)


def test_no_face_in_blank_image():
    with pytest.raises(StylerigError, match="no face"):
        align.align_image(np.full((300, 300, 3), 128, np.uint8), name="blank.png")


def test_several_faces_need_all_faces(astronaut):
    two = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1).copy()
    with pytest.raises(StylerigError, match="faces found"):
        align.align_image(two, output_size=64)
    faces = align.align_image(two, output_size=64, all_faces=True)
    assert len(faces) == 2 and faces[0].box[0] < faces[1].box[0]


def test_false_positive_is_ignored(astronaut):
    # dlib's HOG finds a weak second "face" in the astronaut photo; the best one is kept silently
    dets = align.detect_faces(astronaut, 1)
    assert len(dets) >= 2
    assert len(align.align_image(astronaut, output_size=64)) == 1


def test_face_too_small(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.LANCZOS))
    with pytest.raises(StylerigError, match="too small"):
        align.align_image(small, output_size=256, upsample=2)


def test_unreadable_and_non_image_files(tmp_path):
    with pytest.raises(StylerigError, match="no such file"):
        imageio.load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(StylerigError, match="not a readable image"):
        align.align_file(bad)


def test_cli_align_processes_good_photos_and_reports_bad(tmp_path, astronaut, capsys):
    good = tmp_path / "astro.png"
    Image.fromarray(astronaut).save(good)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(blank)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01garbage")
    out = tmp_path / "out"
    rc = main(["align", str(blank), str(good), str(junk), "--out", str(out), "--size", "128"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "blank.png" in err and "junk.jpg" in err
    assert sorted(p.name for p in out.iterdir()) == ["astro.json", "astro.png"]
    meta = json.loads((out / "astro.json").read_text())
    assert meta["transform"]["output_size"] == 128
