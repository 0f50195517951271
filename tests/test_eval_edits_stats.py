"""The statistics of ``experiments/eval_edits.py`` that go into the committed result files."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "eval_edits.py"


@pytest.fixture(scope="module")
def eval_edits():
    spec = importlib.util.spec_from_file_location("eval_edits_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_face_standard_errors_average_each_face_first(eval_edits):
    rows = [
        # face 1: drifts 0.2 and 0.4 (mean 0.3); face 2: 0.5 and 0.7 (mean 0.6); AU 99 is not scored
        {"seed": 1, "au": 12, "drift": 0.2, "identity_distance": 0.3},
        {"seed": 1, "au": 4, "drift": 0.4, "identity_distance": 0.3},
        {"seed": 1, "au": 99, "drift": 9.0, "identity_distance": 9.0},
        {"seed": 2, "au": 12, "drift": 0.5, "identity_distance": 0.5},
        {"seed": 2, "au": 4, "drift": 0.7, "identity_distance": 0.5},
        {"seed": 2, "au": 4, "drift": float("nan"), "identity_distance": 0.5},  # an edit dlib missed
    ]
    se = eval_edits.face_standard_errors(rows, {4, 12})
    # per-face means 0.3 and 0.6: sample sd 0.3 / sqrt(2), standard error 0.15
    assert math.isclose(se["expressed_drift_se_over_faces"], 0.15)
    assert math.isclose(se["expressed_identity_se_over_faces"], 0.1)
    assert eval_edits.face_standard_errors(rows[:2], {4, 12}) == {
        "expressed_drift_se_over_faces": None, "expressed_identity_se_over_faces": None}
