"""Every numeric option has a range and refuses nan/inf; relative AU changes are bounded like targets (0–5 scale)."""

from __future__ import annotations

import pytest

from stylerig_au.cli import main
from stylerig_au.edit import AU
from stylerig_au.edit.spec import check_scale
from stylerig_au.edit.syntax import parse_edit_options
from stylerig_au.errors import StylerigError

# every command's numeric options, each with values it must refuse before doing any work
BAD_OPTIONS = [
    ("invert", ["--w-reg", "nan"]), ("invert", ["--w-reg", "-1"]), ("invert", ["--w-reg", "inf"]),
    ("invert", ["--lr", "nan"]), ("invert", ["--lr", "-0.1"]), ("invert", ["--lr", "0"]), ("invert", ["--lr", "1e9"]),
    ("invert", ["--seed", "-1"]), ("invert", ["--seed", str(2**64)]), ("invert", ["--loss-size", "100000000"]),
    ("invert", ["--batch-size", "0"]), ("invert", ["--steps", "0"]),
    ("edit", ["--lr", "nan"]), ("edit", ["--refine-colour", "nan"]), ("edit", ["--refine-colour", "inf"]), ("edit", ["--refine-geometry", "nan"]),
    ("animate", ["--fps", "nan"]), ("animate", ["--frames", "1"]), ("sweep", ["--lr", "inf"]),
    ("generate", ["--psi", "nan"]), ("generate", ["--psi", "inf"]), ("generate", ["--psi", "-3"]),
    ("metrics", ["--size", "1000000"]), ("evaluate", ["--psi", "nan"]),
    ("train-detector", ["--lr", "nan"]), ("train-detector", ["--holdout", "nan"]), ("train-detector", ["--seed", "-5"]),
    ("train-detector", ["--threads", "100000"]), ("train-detector", ["--input-size", "100000"]),
    ("train-mapper", ["--lr", "nan"]), ("train-mapper", ["--psi", "nan"]), ("train-mapper", ["--hidden", "10000000"]),
    ("calibrate-mapper", ["--step", "nan"]), ("calibrate-mapper", ["--step", "50"]), ("calibrate-mapper", ["--max-gain", "inf"]),
    ("calibrate-mapper", ["--psi", "nan"]), ("learn-directions", ["--psi", "nan"]), ("learn-directions", ["--build-workers", "100000"]),
    ("edited-samples", ["--workers", "100000"]), ("learn-directions", ["--target", "beard"]), ("learn-directions", ["--keep", "age"]), ("learn-directions", ["--max-step-sigmas", "nan"]),
]

POSITIONAL = {"invert": ["x.png", "--out", "o"], "edit": ["x.pt", "--au", "12=+1", "--out", "o.png"],
              "animate": ["x.pt", "--au", "12=+1", "--out", "o.gif"], "sweep": ["x.pt", "--out", "o.png"],
              "generate": ["--out", "o"], "metrics": ["A", "B"], "evaluate": ["--out", "o"],
              "train-detector": ["--out", "s.pt"], "train-mapper": ["--out", "m.pt"], "calibrate-mapper": ["--out", "m.pt"],
              "learn-directions": ["--out", "d.pt"], "edited-samples": ["folder", "--num", "1"]}


@pytest.mark.parametrize("command,option", BAD_OPTIONS, ids=lambda x: x if isinstance(x, str) else "=".join(x))
def test_numeric_options_refuse_out_of_range_values(command, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("A", "B"):  # metrics checks that its arguments exist first
        (tmp_path / name).write_bytes(b"")
    rc = main([command, *POSITIONAL[command], *option])
    err = capsys.readouterr().err
    assert rc != 0 and option[0] in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]  # refused before any work: nothing written


@pytest.mark.parametrize("aus,presets", [(["12=+50"], []), (["12=-6"], []), ([], ["smile=100"]), ([], ["smile=-7"]),
                                         (["12=+3", "12=+3"], []), (["12=+3"], ["smile=3"]), (["smile=9"], [])])
def test_relative_changes_are_bounded_like_targets(aus, presets):
    with pytest.raises(StylerigError, match="outside ±5"):
        parse_edit_options(aus, presets)


def test_changes_within_the_scale_pass():
    assert parse_edit_options(["12=+5", "4=-5"]) == AU(12, 5) + AU(4, -5)
    assert parse_edit_options([], ["smile=2.5"]) == 2.5 * (AU(6) + AU(12))
    assert check_scale(AU(4, to=5.0)) == AU(4, to=5.0)


@pytest.mark.parametrize("argv", [["edit", "face.pt", "--au", "12=+50", "--out", "o.png"],
                                  ["edit", "face.pt", "--preset", "smile=100", "--out", "o.png"],
                                  ["animate", "face.pt", "--au", "26=+6", "--out", "o.gif"],
                                  ["sweep", "face.pt", "--values", "1e9", "--out", "o.png"],
                                  ["sweep", "face.pt", "--values", "-2,0,-5.5", "--out", "o.png"]])
def test_cli_refuses_huge_changes_in_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "outside ±5" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_edits_are_bounded_too():
    from stylerig_au.evaluate import parse_edits

    with pytest.raises(StylerigError, match="--edits item '12=\\+50'.*outside ±5"):
        parse_edits("4=+2;12=+50")
    assert len(parse_edits("4=+2;12=+5")) == 2


@pytest.mark.parametrize("command,option", [("edited-samples", ["--seed-start", str(2**40)]), ("edited-samples", ["--refine-at", "100000"]),
                                            ("evaluate", ["--seed-start", "-1"]), ("train-detector", ["--batch", "10000000"]),
                                            ("train-mapper", ["--batch", "10000000"])])
def test_seeds_and_batches_are_bounded(command, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([command, *POSITIONAL[command], *option]) != 0
    assert option[0] in capsys.readouterr().err and list(tmp_path.iterdir()) == []
