"""``stylerig-au evaluate`` and :mod:`stylerig_au.evaluate`: a tiny StyleGAN2, random directions and a fake
measure (fast), plus the real default generator with OpenFace and dlib (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stylerig_au import evaluate as ev
from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.cli import main
from stylerig_au.edit import LinearDirections
from stylerig_au.errors import StylerigError
from stylerig_au.models.checkpoints import save_stylegan2

from .helpers import require_asset

EDIT_AUS = (4, 6, 12)


def random_directions(G, aus=EDIT_AUS, seed: int = 3) -> LinearDirections:
    g = torch.Generator().manual_seed(seed)
    middle = torch.tensor([s.group == "middle" for s in G.slots])
    return LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in aus},
                                          masks={a: middle for a in aus}, scales={a: 3.0 for a in aus},
                                          created="2026-01-01T00:00:00+00:00", meta={"note": "random, for tests"})


def fake_instruments(calls: list | None = None, no_face: set[int] | None = None) -> ev.Instruments:
    """AUs, pose and landmarks as deterministic functions of the pixels (no dlib, no OpenFace).

    ``no_face``: call numbers (0-based) that find no face.
    """
    calls = calls if calls is not None else []

    def measure(images: np.ndarray) -> dict[str, np.ndarray]:
        k, r = images.shape[0], images.shape[1]
        x = images.astype(np.float64) / 255.0
        aus = np.stack([np.clip(5 * x[:, i % r].mean(axis=(1, 2)) + 0.1 * i, 0, 5) for i in range(len(AU_NUMBERS))], 1)
        pose = np.stack([x[..., c].mean(axis=(1, 2)) - 0.5 for c in range(3)], 1) * 0.2
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        lm = np.stack([r / 2 + r / 4 * np.cos(t), r / 2 + r / 4 * np.sin(t)], 1)
        found = np.ones(k, bool)
        out = {"aus": aus.astype(np.float32), "pose": pose.astype(np.float32),
               "landmarks": np.repeat(lm[None], k, 0).astype(np.float32), "face_found": found}
        for j in range(k):
            if len(calls) + j in (no_face or set()):
                found[j] = False
                for key in ("aus", "pose", "landmarks"):
                    out[key][j] = np.nan
        calls.extend(range(k))
        return out

    def identity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.float64) - b).mean() / 255.0)

    def identity_sface(a: np.ndarray, b: np.ndarray) -> float:  # a second, different distance
        return 2 * identity(a, b)

    return ev.Instruments(measure, tuple(AU_NUMBERS), identity, identity, {"aus": "fake"}, identity_sface=identity_sface)


def run(G, tmp_path, faces=None, edits="12=+2;4=+2,6=-1;6=@3", methods=("linear", "naive"), **kwargs):
    linear = random_directions(G)
    dirs = {m: linear if m == "linear" else ev.naive_directions(linear) for m in methods}
    faces = faces if faces is not None else ev.generated_faces(G, 3, seed_start=2_000_000)
    return ev.evaluate(G, faces, ev.parse_edits(edits), dirs, tmp_path / "out", progress=False,
                       instruments=kwargs.pop("instruments", None) or fake_instruments(), **kwargs)


def test_report_keys_ranges_and_files(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    result = run(G, tmp_path)
    report = result.report
    out = tmp_path / "out"
    assert result.made == 3 * 3 * 2 and result.skipped == 0
    for name in ("rows.jsonl", "run.json", "report.json", "report.md", "au_target_vs_achieved.png",
                 "identity_vs_strength.png", "grid.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["overall"] == report["overall"]
    assert {"settings", "rows", "per_au", "per_edit", "per_method", "overall", "edits", "methods"} <= set(report)
    assert set(report["per_method"]) == {"linear", "naive"}
    assert set(report["per_au"]["linear"]) == {"4", "6", "12"}
    assert set(report["per_edit"]["naive"]) == {"12=+2", "4=+2,6=-1", "6=@3"}
    assert len(report["rows"]) == 18
    for row in report["rows"]:
        assert row["status"] == "ok"
        assert 0 <= row["drift"] <= 5 and row["identity_distance"] >= 0 and row["seconds"] > 0
        assert row["identity_sface"] == pytest.approx(2 * row["identity_distance"])
        assert 0 <= row["background_rmse"] <= 1 and row["background_lpips"] >= 0
        assert set(row["pose_change_deg"]) == {"pitch", "yaw", "roll"}
        assert 0 <= row["pose_change_max_deg"] <= 180
        for term in row["aus"]:
            assert abs(term["achieved_change"] - (term["after"] - term["before"])) < 1e-5
            assert abs(term["error"] - (term["achieved_change"] - term["target_change"])) < 1e-5
            if term["absolute"]:
                assert term["target"] == 3 and abs(term["target_change"] - (3 - term["before"])) < 1e-5
            else:
                assert term["target_change"] in (2.0, -1.0)
    two = [r for r in report["rows"] if r["edit"] == "4=+2,6=-1"]
    assert all(len(r["aus"]) == 2 and abs(r["strength"] - math.sqrt(5)) < 1e-9 for r in two)
    assert all(r["strength"] is None for r in report["rows"] if r["edit"] == "6=@3")
    overall = report["overall"]
    assert overall["rows"] == overall["measured"] == 18 and overall["no_face"] == 0
    assert overall["abs_error"] >= 0 and 0 <= overall["drift"] <= 5
    errors = [t["error"] for r in report["rows"] for t in r["aus"]]
    assert abs(overall["au_mse"] - sum(e * e for e in errors) / len(errors)) < 1e-9
    for p in report["per_au"]["linear"].values():
        assert p["terms"] > 0 and 0 <= p["within_0.5"] <= 1
    md = (out / "report.md").read_text()
    assert "## Per AU" in md and "| linear | AU12 |" in md
    assert "| ID dlib | ID SFace |" in md
    assert overall["identity_sface"] == pytest.approx(2 * overall["identity_distance"])


def test_edits_move_only_through_directions(tiny_stylegan2, tmp_path):
    """The naive baseline: unconditioned, every used slot, uncalibrated; the linear method keeps its mask."""
    G = tiny_stylegan2
    linear = random_directions(G)
    naive = ev.naive_directions(linear)
    assert naive.aus == linear.aus and "naive" in naive.method
    assert torch.equal(naive.slot_masks, torch.stack([naive.used.float()] * len(naive.aus)))
    # pinv of unit directions x scales: read-out rows a with a . (d_j s_j) = delta_ij
    m = torch.stack([linear.direction(a) * linear.scale(a) for a in linear.aus], 1).double()
    readouts = torch.stack([naive.direction(a) / naive.scale(a) for a in naive.aus]).double()
    assert torch.allclose(readouts @ m, torch.eye(len(linear.aus), dtype=torch.float64), atol=1e-4)
    # a single direction: the naive baseline is that direction on every slot, same scale
    one = ev.naive_directions(random_directions(G, aus=(12,)))
    assert torch.allclose(one.direction(12), random_directions(G, aus=(12,)).direction(12), atol=1e-6)
    assert abs(one.scale(12) - 3.0) < 1e-5


def test_naive_from_sample_readouts(tiny_stylegan2):
    """With an AU sample dataset, the naive direction is the normalised ridge read-out row, scale 1/|row|."""
    from stylerig_au.edit.learn import regress
    from stylerig_au.samples import Samples

    G = tiny_stylegan2
    n = 120
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.standard_normal((n, G.w_dim))).float()
    true = rng.standard_normal((len(AU_NUMBERS), G.w_dim)) * 0.3
    aus = torch.from_numpy(np.clip(w.double().numpy() @ true.T + 2.5, 0, 5)).float()
    samples = Samples({"aus": list(AU_NUMBERS), "generator": G.name}, torch.arange(n), w, aus,
                      torch.from_numpy(rng.standard_normal((n, 3)) * 0.1).float(), torch.zeros(n, 68, 2),
                      torch.ones(n, dtype=torch.bool), None)
    readouts = regress(samples)
    naive = ev.naive_directions(random_directions(G), readouts)
    assert set(naive.aus) == set(AU_NUMBERS) and "sample dataset" in naive.method
    k = readouts.aus.index(12)
    row = torch.from_numpy(readouts.au_rows[k]).float()
    assert torch.allclose(naive.direction(12), row / row.norm(), atol=1e-5)
    assert abs(naive.scale(12) - 1 / float(row.norm())) < 1e-5


def test_resume_skips_rows(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    first = run(G, tmp_path, edits="12=+2;6=+1")
    rows_before = (tmp_path / "out" / "rows.jsonl").read_text()
    calls: list = []
    again = run(G, tmp_path, edits="12=+2;6=+1", instruments=fake_instruments(calls))
    assert again.made == 0 and again.skipped == first.made and calls == []
    assert (tmp_path / "out" / "rows.jsonl").read_text() == rows_before
    assert again.report["overall"] == {**first.report["overall"]}
    # a new edit only measures the new rows (3 faces x 2 methods), reusing the others
    calls = []
    more = run(G, tmp_path, edits="12=+2;6=+1;4=-1", instruments=fake_instruments(calls))
    assert more.made == 6 and more.skipped == 12 and len(more.report["rows"]) == 18
    assert len(calls) == 3 + 6  # one unedited render per face + the new rows
    # another psi into the same folder is refused
    with pytest.raises(StylerigError, match="other settings"):
        run(G, tmp_path, edits="12=+2", settings={"psi": 0.5})


def test_no_face_rows_are_kept_out_of_means(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    # call 0: face 1 unedited (no face); face 2: call 1 unedited, call 2 its first edited render (no face)
    result = run(G, tmp_path, faces=ev.generated_faces(G, 2), edits="12=+2", methods=("linear",),
                 instruments=fake_instruments(no_face={0, 2}))
    rows = result.report["rows"]
    assert [r["status"] for r in rows] == ["no_face", "edited_no_face"]
    assert rows[1]["aus"][0]["achieved_change"] is None and rows[1]["drift"] is None
    assert result.report["overall"]["measured"] == 0 and result.report["overall"]["no_face"] == 2
    assert result.report["overall"]["abs_error"] is None


def test_faces_that_fail_are_skipped(tiny_stylegan2, tmp_path):
    """A face that cannot be made (e.g. a photo with several faces) is skipped and noted; a rerun retries it."""
    G = tiny_stylegan2
    good = ev.generated_faces(G, 1)[0]

    def bad() -> ev.Face:
        raise StylerigError("photo.jpg: 3 faces found")

    notes: list[str] = []
    result = run(G, tmp_path, faces=[lambda: good, bad], face_names=["good", "bad"], edits="12=+2", methods=("linear",),
                 log=notes.append)
    assert result.made == 1 and result.failed == [{"face": "bad", "error": "photo.jpg: 3 faces found"}]
    assert result.report["skipped_faces"] == result.failed and any("skipped bad" in n for n in notes)
    with pytest.raises(StylerigError, match="no face could be evaluated"):
        run(G, tmp_path / "other", faces=[bad], face_names=["bad"], edits="12=+2", methods=("linear",))


def test_bad_inputs(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    with pytest.raises(StylerigError, match="unknown AU"):
        ev.parse_edits("12=+2;99=+1")
    with pytest.raises(StylerigError, match="empty"):
        ev.parse_edits(" ; ")
    with pytest.raises(StylerigError, match="unknown method 'magic'"):
        ev.parse_methods("linear,magic")
    assert ev.parse_methods("mapper, linear,mapper") == ["mapper", "linear"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(StylerigError, match="no photos"):
        ev.photo_paths(tmp_path / "empty")
    with pytest.raises(StylerigError, match="no direction for AU1"):
        run(G, tmp_path, edits="1=+1")


@pytest.fixture
def cli_setup(tiny_stylegan2, tmp_path):
    ckpt = save_stylegan2(tiny_stylegan2, tmp_path / "tiny.pt")
    dirs = random_directions(tiny_stylegan2).save(tmp_path / "dirs.pt")
    return ["--generator", str(ckpt), "--directions", str(dirs), "--device", "cpu"]


def one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize("args, message", [
    (["--generated", "2", "--edits", "12=+2;77=+1"], "unknown AU"),
    (["--generated", "2", "--edits", "12=+2", "--methods", "linear,mapper"], "no AU mapper is bundled for generator"),
    (["--generated", "2", "--edits", "12=+2", "--methods", "fancy"], "unknown method 'fancy'"),
    (["--photos", "EMPTY", "--edits", "12=+2"], "no photos"),
    (["--edits", "12=+2"], "either --photos DIR or --generated N"),
    (["--generated", "2", "--edits", "1=+1"], "no direction for AU1"),
])
def test_cli_errors_are_one_line(cli_setup, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    assert main(["evaluate", *args, "--out", str(tmp_path / "out"), *cli_setup]) == 1
    one_line_error(capsys, message)


def test_cli_runs_with_injected_instruments(cli_setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ev, "default_instruments", lambda device="cpu": fake_instruments())
    out = tmp_path / "out"
    assert main(["evaluate", "--generated", "2", "--edits", "12=+2;6=+1", "--out", str(out), *cli_setup]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["rows"] == 8 and set(report["methods"]) == {"linear", "naive"}
    assert main(["evaluate", "--generated", "2", "--edits", "12=+2;6=+1", "--out", str(out), *cli_setup]) == 0
    assert "0 rows measured, 8 reused" in capsys.readouterr().out


def test_cli_mapper_method_side_by_side(cli_setup, tiny_stylegan2, tmp_path, capsys, monkeypatch):
    from stylerig_au.edit.mapper import new_mapper, save_mapper

    monkeypatch.setattr(ev, "default_instruments", lambda device="cpu": fake_instruments())
    G = tiny_stylegan2
    mapper = new_mapper(G, random_directions(G), num_samples=256)
    with torch.no_grad():
        mapper.out.weight.normal_(0, 0.05)
    file = save_mapper(mapper, tmp_path / "mapper.pt", G.name)
    out = tmp_path / "out"
    assert main(["evaluate", "--generated", "2", "--edits", "12=+2", "--methods", "linear,mapper,naive",
                 "--mapper", str(file), "--out", str(out), *cli_setup]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["methods"] == ["linear", "mapper", "naive"] and report["overall"]["rows"] == 6
    assert {"abs_error", "drift", "identity_distance"} <= set(report["per_method"]["mapper"])
    assert report["per_method"]["mapper"]["abs_error"] != report["per_method"]["linear"]["abs_error"]


@pytest.mark.slow
def test_real_generator_generated_faces(tmp_path):
    """The default generator, OpenFace, dlib and LPIPS-VGG on 2 held-out faces x 2 edits x 3 methods (linear, mapper, naive)."""
    from stylerig_au.models import load_generator

    for name in ("mobilestylegan-ffhq-1024", "openface-2.2-au", "dlib-landmarks-68", "dlib-face-recognition", "lpips-vgg16"):
        require_asset(name)
    G = load_generator()
    try:
        from stylerig_au.edit.directions import load_default_directions

        linear = load_default_directions(G)
        note = "bundled"
    except Exception:  # noqa: BLE001 - the bundled file is not made yet: random directions, noted in the report
        g = torch.Generator().manual_seed(0)
        linear = LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in (12, 26)},
                                                scales={12: 1.5, 26: 1.5}, meta={"note": "random (no bundled file yet)"})
        note = "random"
    from stylerig_au.edit.mapper import load_default_mapper

    dirs = {"linear": linear, "mapper": load_default_mapper(G), "naive": ev.naive_directions(linear)}
    result = ev.evaluate(G, ev.generated_faces(G, 2), ev.parse_edits("12=+2;26=+2"), dirs, tmp_path / "out",
                         progress=False, settings={"directions_note": note})
    report = result.report
    assert report["overall"]["rows"] == 12 and report["overall"]["measured"] >= 6
    assert report["methods"] == ["linear", "mapper", "naive"]
    for stats in report["per_method"].values():
        assert stats["au_mse"] is None or 0 <= stats["au_mse"] <= 25
    for row in report["rows"]:
        if row["status"] != "ok":
            continue
        assert 0 <= row["drift"] <= 5
        assert 0 <= row["identity_distance"] < 2
        assert 0 <= row["identity_sface"] < 2
        assert 0 <= row["background_lpips"] < 1 and 0 <= row["background_rmse"] < 0.5
        assert 0 <= row["pose_change_max_deg"] < 90
        assert 0 < row["seconds"] < 120
        for term in row["aus"]:
            assert term["target_change"] == 2.0 and -5 <= term["achieved_change"] <= 5
    for name in ("report.md", "au_target_vs_achieved.png", "identity_vs_strength.png", "grid.png"):
        assert (tmp_path / "out" / name).is_file()


def test_cli_motion_renders_are_their_own_run(cli_setup, tiny_stylegan2, tmp_path, capsys, monkeypatch):
    """`evaluate --motion` measures motion-transfer renders; its folder refuses rows of another render."""
    from stylerig_au.edit import local, motion
    from tests.test_local_edit import mean_face

    R = tiny_stylegan2.resolution
    face = local.FaceMarks((0, 0, R, R), mean_face(R))
    calls = []
    monkeypatch.setattr(local, "find_face", lambda image: face)  # a random generator draws no face for dlib
    monkeypatch.setattr(motion, "marks_in_box", lambda image, f: calls.append(1) or f.landmarks + np.array([0.0, -0.5]))
    monkeypatch.setattr(ev, "default_instruments", lambda device="cpu": fake_instruments())
    out = tmp_path / "out"
    args = ["evaluate", "--generated", "2", "--edits", "12=+2", "--methods", "linear", "--out", str(out), *cli_setup]
    assert main([*args, "--motion"]) == 0
    assert json.loads((out / "report.json").read_text())["overall"]["rows"] == 2 and len(calls) == 2
    capsys.readouterr()
    assert main(args) == 1  # the same folder, another render: refused, not mixed
    assert "error: " in capsys.readouterr().err
