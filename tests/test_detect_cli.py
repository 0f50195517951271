"""``stylerig-au detect``: user errors (fast) and a real run on a smiling face (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stylerig_au.au.detect import detect_aus, make_detector
from stylerig_au.cli import main
from stylerig_au.errors import StylerigError
from tests.helpers import require_asset


def test_student_detector_with_a_foreign_file_is_a_clear_error(capsys, tmp_path):
    photo = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(photo)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert main(["detect", "--detector", "student", "--model", str(bad), str(photo)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: not a stylerig-au student AU detector file (UnpicklingError: Unsupported operand 110); "
                   "make one with 'stylerig-au train-detector'"]


def test_unknown_detector_name_is_a_user_error():
    with pytest.raises(StylerigError, match="unknown detector 'x'"):
        make_detector("x")


def test_no_photos_in_folder_is_a_user_error(capsys, tmp_path):
    assert main(["detect", str(tmp_path)]) == 1
    assert "no photos given" in capsys.readouterr().err


class _ConstantDetector:
    """Stands in for OpenFace: the same three intensities for every face."""

    aus = [1, 2, 12]

    def predict_photos(self, photos, landmarks):
        return np.tile(np.array([0.1, 0.2, 1.2], dtype=np.float32), (len(photos), 1))


@pytest.mark.slow
def test_photo_without_face_is_reported(tmp_path):
    require_asset("dlib-landmarks-68")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(blank)
    with pytest.raises(StylerigError, match="blank.png: no face found"):
        detect_aus([blank], _ConstantDetector())


@pytest.mark.slow
def test_detect_json_on_a_smiling_face(capsys, tmp_path):
    from skimage import data

    require_asset("openface-2.2-au")
    require_asset("dlib-landmarks-68")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    assert main(["detect", "--json", str(photo)]) == 0
    (face,) = json.loads(capsys.readouterr().out)
    assert face["photo"].endswith("astronaut.png") and face["face"] == 0
    assert len(face["aus"]) == 17 and face["aus"]["AU12"] > 2.5 and face["aus"]["AU06"] > 1.0

    assert main(["detect", str(photo)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["face", "AU01", "AU02"] and lines[1].startswith("astronaut.png")
    assert len(lines[1].split()) == 18


@pytest.mark.slow
def test_detect_with_the_student_on_a_smiling_face(capsys, tmp_path):
    from skimage import data

    require_asset("dlib-landmarks-68")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    assert main(["detect", "--json", "--detector", "student", str(photo)]) == 0
    (face,) = json.loads(capsys.readouterr().out)
    assert len(face["aus"]) == 17 and face["aus"]["AU12"] > 2.0
