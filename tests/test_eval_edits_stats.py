"""The statistics of the edit-evaluation scripts (``eval_edits.py``, ``compare_runs.py``, ``edit_ceiling.py``) that go into the committed result files."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_script(name: str):
    if str(EXPERIMENTS) not in sys.path:  # as when the script runs from experiments/: its siblings import
        sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"{name}_script", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def eval_edits():
    return load_script("eval_edits")


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


def fake_result(drifts: dict[int, list[float]], achieved: float = 1.5) -> dict:
    rows = [{"seed": seed, "au": au, "achieved": achieved, "drift": d, "identity_distance": 0.4}
            for seed, ds in drifts.items() for au, d in zip((4, 12), ds)]
    return {"amount": 2.0, "summary": {"expressed_aus": [4, 12]}, "rows": rows}


def test_compare_edit_evals_pairs_faces(tmp_path, capsys):
    compare = load_script("compare_runs")
    a = fake_result({1: [0.4, 0.4], 2: [0.2, 0.2], 3: [0.3, 0.3]})
    b = fake_result({1: [0.3, 0.3], 2: [0.1, 0.1], 3: [0.1, 0.3], 4: [9.0, 9.0]}, achieved=2.5)  # face 4: only in B
    table = compare.compare_edit_evals(a, b)
    drift = table["drift"]
    assert drift["faces"] == 3 and math.isclose(drift["a"], 0.3) and math.isclose(drift["b_minus_a"], -0.1)
    assert math.isclose(drift["paired_se"], 0.0, abs_tol=1e-12)  # every face dropped by exactly 0.1
    assert math.isclose(table["abs_error"]["a"], 0.5) and math.isclose(table["abs_error"]["b"], 0.5)
    assert table["identity_distance"]["b_minus_a"] == 0

    pa, pb, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert compare.main([str(pa), str(pb), "--out", str(out)]) == 0
    assert "drift" in capsys.readouterr().out
    assert json.loads(out.read_text())["metrics"]["drift"]["faces"] == 3
    pb.write_text(json.dumps({"rows": []}))
    assert compare.main([str(pa), str(pb)]) == 1
    assert "not two eval_edits.py or edit_ceiling.py results" in capsys.readouterr().err
    pb.write_text(json.dumps(fake_result({9: [0.1, 0.1], 8: [0.1, 0.1]})))
    assert compare.main([str(pa), str(pb)]) == 1
    assert "fewer than 2 measured faces" in capsys.readouterr().err


def test_top_drift_ranks_other_aus_by_mean_absolute_change(eval_edits):
    rows = [  # two AU6 edits: AU12 rises both times (coupling), AU4 scatters around zero, AU6 is the target
        {"au": 6, "changes": {"6": 2.0, "12": 1.0, "4": 0.9, "26": 0.1}},
        {"au": 6, "changes": {"6": 1.8, "12": 0.6, "4": -0.9, "26": -0.1}},
    ]
    top = eval_edits.top_drift(rows, 6, n=2)
    assert list(top) == ["4", "12"]  # mean |change| 0.9, then 0.8; AU26 (0.1) cut by n=2; AU6 itself left out
    assert top["12"] == {"abs": 0.8, "mean": 0.8}
    assert top["4"] == {"abs": 0.9, "mean": 0.0}
    assert eval_edits.top_drift([{"au": 6, "drift": 0.3}], 6) == {}  # results written before changes were kept


def test_edit_ceiling_summary_reads_drift_over_every_measured_au():
    ceiling = load_script("edit_ceiling")
    measured = [1, 4, 12]
    # two faces, edits of AU 12 and AU 4 (in that order); rows are changes of AU 1, 4, 12
    changes = np.array([
        [[0.2, -0.4, 2.0], [0.0, 1.0, 0.6]],
        [[0.4, 0.0, 1.0], [0.2, 2.0, -0.2]],
    ])
    ident = np.array([[0.3, 0.5], [0.5, 0.7]])
    s = ceiling.summarise(changes, ident, [12, 4], measured, amount=2.0)
    assert math.isclose(s["per_au"]["12"]["achieved"], 1.5) and math.isclose(s["per_au"]["4"]["achieved"], 1.5)
    # AU 12's drift: mean |change| of AU 1 and AU 4 over both faces = (0.2 + 0.4 + 0.4 + 0.0) / 4
    assert math.isclose(s["per_au"]["12"]["drift"], 0.25)
    assert math.isclose(s["per_au"]["4"]["drift"], (0.0 + 0.6 + 0.2 + 0.2) / 4)
    assert s["within_0.5"] == 2 and math.isclose(s["mean_abs_error"], 0.5)
    assert math.isclose(s["drift_per_unit"], (0.25 + 0.25) / 2 / 1.5)
    assert math.isclose(s["mean_identity"], 0.5) and math.isclose(s["per_au"]["4"]["identity"], 0.6)


def test_student_change_agreement_signs_the_asked_direction():
    script = load_script("eval_student_edits")
    delta = np.array([[2.0, 0.0], [0.0, -1.0]])
    openface = np.array([[1.0, 0.5], [0.2, -1.0]])
    student = np.array([[2.0, 0.0], [0.0, -3.0]])
    res = script.change_agreement(student, openface, delta)
    # asked entries, signed: student (2, 3), OpenFace (1, 1)
    assert res["asked"]["n"] == 2 and res["asked"]["ratio"] == pytest.approx(2.5)
    assert res["asked"]["mae"] == pytest.approx(1.5) and math.isnan(res["asked"]["r"])  # OpenFace's two values are equal
    assert res["other"]["n"] == 2 and res["other"]["mae"] == pytest.approx((0.5 + 0.2) / 2)


def test_compare_ceilings_restricts_to_shared_faces_and_pairs_them():
    script = load_script("compare_runs")
    measured = [1, 2, 12]

    def run(seeds, aus, bump):
        faces = {}
        for s in seeds:
            rows = [[(2.0 - bump - 0.1 * (s - 10) if a == m else 0.1) for m in measured] for a in aus]
            faces[str(s)] = {v: {"openface": rows, "student": rows, "identity": [0.2 + bump] * len(aus)} for v in ("mapper", "optimised")}
        return {"measured": measured, "amount": 2.0, "aus": aus, "faces": faces}

    a = run([10, 11, 12], [1, 12], 0.5)
    b = run([11, 12, 13], [12, 2, 1], 0.0)
    res = script.compare_ceilings(a, b)
    assert res["seeds"] == [11, 12] and res["aus"] == [1, 12]
    assert res["paired_b_minus_a"]["achieved"]["mean"] == pytest.approx(0.5)
    assert res["paired_b_minus_a"]["identity"]["mean"] == pytest.approx(-0.5)
    assert res["paired_b_minus_a"]["drift"]["mean"] == pytest.approx(0.0)
    assert res["runs"]["b"]["optimised"]["openface"]["within_0.5"] == 2
    with pytest.raises(ValueError, match="share no face"):
        script.compare_ceilings(a, run([99], [1], 0.0))


@pytest.fixture(scope="module")
def expressible():
    return load_script("expressible_aus")


def test_reach_fractions_counts_samples_amount_above_each_face(expressible):
    samples = np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 4.5], [1.0, 2.9]])
    faces = np.array([[0.0, 1.0], [1.5, 0.0]])
    frac = expressible.reach_fractions(samples, faces, 2.0)
    # face 0 needs AU-a >= 2 (2 samples of 4) and AU-b >= 3 (1 of 4); face 1 needs >= 3.5 and >= 2
    np.testing.assert_allclose(frac, [[0.5, 0.25], [0.0, 0.5]])


def test_score_edits_restricts_reach_drift_identity_to_given_aus(expressible):
    result = {"amount": 2.0, "per_au": {
        "1": {"achieved_mean": 1.8, "drift_mean": 0.2, "identity_mean": 0.3},
        "12": {"achieved_mean": 1.0, "drift_mean": 0.4, "identity_mean": 0.5},
        "23": {"achieved_mean": 0.5, "drift_mean": 0.6, "identity_mean": 0.7}}}
    table = expressible.edit_tables(result)["edit"]
    every = expressible.score_edits(table, 2.0, [1, 12, 23])
    assert every["count"] == 3 and every["within_0.5"] == 1 and every["missed"] == [12, 23]
    assert math.isclose(every["mean_abs_error"], (0.2 + 1.0 + 1.5) / 3)
    sub = expressible.score_edits(table, 2.0, [1, 12, 45])  # AU45 not in the result: ignored
    assert sub["aus"] == [1, 12] and math.isclose(sub["mean_drift"], 0.3) and math.isclose(sub["mean_identity"], 0.4)
    assert expressible.score_edits(table, 2.0, [45]) == {"aus": [], "count": 0}


def test_edit_tables_reads_both_stages_of_an_edit_ceiling_result(expressible):
    stage = {"openface": {"per_au": {"12": {"achieved": 1.5, "drift": 0.2, "identity": 0.1}}}, "student": {}}
    tables = expressible.edit_tables({"amount": 2.0, "summary": {"mapper": stage, "optimised": stage}})
    assert set(tables) == {"mapper", "optimised"} and tables["optimised"][12]["achieved"] == 1.5
    with pytest.raises(ValueError):
        expressible.edit_tables({"rows": []})


def test_natural_coupling_is_the_regression_slope_of_each_au_on_each_other(expressible):
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    samples = np.stack([a, 0.5 * a + 0.01 * rng.normal(size=2000), rng.normal(size=2000)], axis=1)
    slopes = expressible.natural_coupling(samples)
    np.testing.assert_allclose(np.diag(slopes), 1.0)
    assert abs(slopes[0, 1] - 0.5) < 0.01 and abs(slopes[1, 0] - 2.0) < 0.05 and abs(slopes[0, 2]) < 0.1


def test_expressible_aus_refuses_a_file_that_is_no_edit_result_before_any_work(expressible, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    assert expressible.main(["--data", str(tmp_path / "data"), "--edits", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "edit_ceiling.py" in err and not (tmp_path / "data").exists()


def test_eval_edits_refuses_an_expressible_file_that_is_not_one(eval_edits, tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"per_au": {}}')
    assert eval_edits.main(["--expressible", str(bad), "--out", str(tmp_path / "out.json")]) == 2
    assert "expressible_aus.py" in capsys.readouterr().err and not (tmp_path / "out.json").exists()


def test_edit_grids_label_their_au_columns(eval_edits):
    from stylerig_au.edit import media

    tiles = [np.full((16, 16, 3), v, np.uint8) for v in range(6)]  # 2 faces x (unedited, AU1, AU12)
    grid = eval_edits.au_columns_grid(tiles, [1, 12], 2.0, cell=16)
    top = media.header_height(16)
    assert grid.shape == (top + 2 * 20 + 4, 3 * 20 + 4, 3)
    assert (grid[:top].min(axis=2) < 100).any()  # 'face', 'AU1 +2', 'AU12 +2'
    assert np.array_equal(grid[top + 24:top + 40, 44:60], tiles[5])  # second face's AU12 edit, bottom right


def test_compare_runs_reads_the_kind_of_run_from_the_files(tmp_path, capsys):
    script = load_script("compare_runs")
    ceiling = json.loads((EXPERIMENTS / "results" / "edit_ceiling_cpu_student_adv.json").read_text())
    edits = fake_result({1: [0.4, 0.4], 2: [0.2, 0.2]})
    assert script.is_ceiling_run(ceiling) and not script.is_ceiling_run(edits)
    pa, pb, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    pa.write_text(json.dumps(ceiling))
    pb.write_text(json.dumps(ceiling))
    assert script.main([str(pa), str(pb), "--out", str(out)]) == 0  # a run against itself: no difference
    assert json.loads(out.read_text())["paired_b_minus_a"]["achieved"]["mean"] == 0
    assert "OpenFace achieved: +0.000" in capsys.readouterr().out
    pb.write_text(json.dumps(edits))
    assert script.main([str(pa), str(pb)]) == 1
    assert "one file is an edit_ceiling.py result" in capsys.readouterr().err


def test_geometry_summary_counts_faces_whose_feature_moved_the_au_way(eval_edits):
    from stylerig_au.au.geometry import MOVED_IOD

    rows = [{"geometry_motion": 3 * MOVED_IOD}, {"geometry_motion": 0.5 * MOVED_IOD}, {"geometry_motion": -2 * MOVED_IOD},
            {"geometry_motion": math.nan}, {}]  # NaN: no face found in the edit; {}: a row written before the judge
    out = eval_edits.geometry_summary(rows)
    assert out["geometry_moved_share"] == pytest.approx(1 / 3)
    assert out["geometry_motion_mean"] == pytest.approx(1.5 * MOVED_IOD / 3)
    assert math.isnan(eval_edits.geometry_summary([{}])["geometry_moved_share"])
    # a decrease is asked to move the feature the other way
    assert eval_edits.geometry_summary(rows, amount=-1.0)["geometry_moved_share"] == pytest.approx(1 / 3)
    assert eval_edits.geometry_summary([{"geometry_motion": -3 * MOVED_IOD}], amount=-1.0)["geometry_moved_share"] == 1.0


def test_rescore_summarises_stored_results_over_the_given_aus(eval_edits, tmp_path, capsys):
    rows = [{"seed": s, "au": au, "achieved": a, "drift": 0.2, "identity_distance": 0.3, "identity_sface": 0.1,
             "geometry_motion": 0.05, "age_base": 30.0, "age_change": age, "male_prob_base": 0.9, "male_prob_change": male}
            for s in (1, 2) for au, a, age, male in ((12, 2.0, 1.0, 0.0), (26, 1.0, 9.0, -0.6))]
    per_au = {str(au): {"expressed": True, "achieved_mean": a, "drift_mean": 0.2, "identity_mean": 0.3,
                        "identity_sface_mean": 0.1, "geometry_moved_share": 1.0} for au, a in ((12, 2.0), (26, 1.0))}
    file = tmp_path / "r.json"
    file.write_text(json.dumps({"amount": 2.0, "rows": rows, "per_au": per_au}))
    assert eval_edits.rescore([file], {12}) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[:4] == ["r.json", "0.00", "1", "of"] and line[-3:] == ["0.00", "0.00", "+1.0"]
    assert eval_edits.rescore([file], None) == 0  # both AUs: half the edits age > 5 years and flip P(male)
    assert capsys.readouterr().out.splitlines()[1].split()[-3:] == ["0.50", "0.50", "+5.0"]
    (tmp_path / "bad.json").write_text("{}")
    assert eval_edits.rescore([tmp_path / "bad.json"], None) == 2
    assert "not an eval_edits.py result" in capsys.readouterr().err


def test_distil_report_reads_the_teacher_from_the_stored_labels():
    """Rows per seed: the face, the mapper's edit (0 steps), the refined edit (20 steps); a face dlib missed is skipped."""
    from types import SimpleNamespace

    import torch

    report = load_script("distil_report")
    nan = float("nan")
    # 3 AUs; seed 1 asks AU0 +2 (mapper reaches +1, refined +2), seed 2 asks AU1 -1 (mapper -1, refined -0.5),
    # seed 3's edit was not found by dlib
    aus = [[0, 0, 1], [1, 0, 1.4], [2, 0, 1],
           [0, 2, 0], [0, 1, 0], [0, 1.5, 0.2],
           [0, 0, 0], [nan, nan, nan], [nan, nan, nan]]
    data = SimpleNamespace(
        seeds=torch.tensor([1, 1, 1, 2, 2, 2, 3, 3, 3]), aus=torch.tensor(aus),
        face_found=torch.tensor([True] * 7 + [False] * 2),
        extra={"refine_steps": torch.tensor([-1, 0, 20] * 3),
               "delta": torch.tensor([[0, 0, 0], [2, 0, 0], [2, 0, 0], [0, 0, 0], [0, -1, 0], [0, -1, 0],
                                      [0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float32)})
    out = report.teacher_summary(data)
    mapper, refined = out["0"], out["20"]
    assert mapper["edits"] == refined["edits"] == 2
    assert mapper["slope"] == pytest.approx((2 * 1 + -1 * -1) / 5) and refined["slope"] == pytest.approx((2 * 2 + -1 * -0.5) / 5)
    assert mapper["slope_raise"] == pytest.approx(0.5) and refined["slope_lower"] == pytest.approx(0.5)
    assert mapper["error"] == pytest.approx(0.5) and refined["error"] == pytest.approx(0.25)
    assert mapper["error_big_raise"] == pytest.approx(1.0) and refined["error_big_raise"] == pytest.approx(0.0)
    assert mapper["within_0.5"] == pytest.approx(0.5) and refined["within_0.5"] == pytest.approx(1.0)
    assert mapper["drift"] == pytest.approx((0.2 + 0.0) / 2) and refined["drift"] == pytest.approx((0.0 + 0.1) / 2)


def test_distil_report_correction_cosines():
    """Corrections shared by the faces of an AU have pairwise cosine 1; a lowered AU's is sign-aligned first."""
    from types import SimpleNamespace

    import torch

    report = load_script("distil_report")

    class Step(torch.nn.Module):
        w_std = torch.full((4,), 2.0)

        def forward(self, ws, delta):
            return torch.zeros_like(ws)

    shared = torch.tensor([1.0, 0, 0, 0])
    dw = torch.stack([shared, -shared, torch.tensor([0, 1.0, 0, 0]), torch.tensor([0, 0, 1.0, 0])])[:, None]  # [4, 1, 4]
    targets = SimpleNamespace(ws=torch.zeros(4, 1, 4), dw=dw, aus=[12, 26],
                              delta=torch.tensor([[2.0, 0], [-1.0, 0], [0, 2.0], [0, 1.0]]))
    out = report.correction_summary(targets, Step())
    assert out["per_au"]["12"] == {"edits": 2, "mean_pairwise_cosine": pytest.approx(1.0)}
    assert out["per_au"]["26"]["mean_pairwise_cosine"] == pytest.approx(0.0)
    assert out["step_rms"] == 0.0 and out["correction_rms"] == pytest.approx(0.25)  # |0.5| in one of 4 entries per row
