"""``stylerig-au edit / animate / sweep`` and the photo-editing library on a tiny StyleGAN2 (fast), plus the
photo path on the real default generator (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au.cli import main
from stylerig_au.edit import AU, Editor, LinearDirections, media
from stylerig_au.edit.photo import check_latent, compose, load_subject, quick_config, render_face
from stylerig_au.edit.syntax import parse_edit_options, parse_number_list
from stylerig_au.errors import StylerigError
from stylerig_au.invert import LATENT_FORMAT, LATENT_FORMAT_VERSION, load_latent, save_latent
from stylerig_au.models.checkpoints import save_stylegan2

from .helpers import require_asset

EDIT_AUS = (1, 2, 4, 6, 12, 26)


def random_directions(G, aus=EDIT_AUS, seed: int = 3) -> LinearDirections:
    g = torch.Generator().manual_seed(seed)
    return LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in aus},
                                          scales={a: 3.0 for a in aus}, meta={"note": "random, for tests"})


def latent_record(G, seed: int = 5) -> dict:
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed)))[0]
    return {"format": LATENT_FORMAT, "format_version": LATENT_FORMAT_VERSION, "ws": w[None].repeat(G.num_ws, 1).float(),
            "noise": {}, "generator": G.name, "resolution": G.resolution, "num_ws": G.num_ws, "w_dim": G.w_dim,
            "source": "<sampled>", "source_sha256": None, "face_index": 0, "transform": None}


@pytest.fixture
def setup(tiny_stylegan2, tmp_path):
    """(generator checkpoint, directions file, latent file, common CLI args) for the tiny generator."""
    G = tiny_stylegan2
    ckpt = save_stylegan2(G, tmp_path / "tiny.pt")
    dirs = random_directions(G).save(tmp_path / "dirs.pt")
    latent = save_latent(tmp_path / "face.pt", latent_record(G))
    return {"G": G, "ckpt": ckpt, "dirs": dirs, "latent": latent,
            "args": ["--generator", str(ckpt), "--directions", str(dirs), "--device", "cpu"]}


def one_line_error(capsys, message: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and message in err[-1], err
    return err[-1]


# ----------------------------------------------------------------------------- syntax


def test_edit_syntax():
    assert parse_edit_options(["12=+2", "6=+1"]) == AU(12, 2) + AU(6, 1)
    assert parse_edit_options(["AU12:2, 6"]) == AU(12, 2) + AU(6, 1)
    assert parse_edit_options(["4=@3"]) == AU(4, to=3.0)
    assert parse_edit_options(["4 = @ 2.5", "12=-1"]) == AU(4, to=2.5) + AU(12, -1)
    assert parse_edit_options(["-4"]) == AU(4, -1)
    assert parse_edit_options([], ["smile=0.5"]) == 0.5 * (AU(6) + AU(12))
    assert parse_edit_options(["12=+1"], ["smile"]) == AU(12, 2) + AU(6, 1)
    assert parse_number_list("-2, -1,0 1,2", "--values") == [-2, -1, 0, 1, 2]
    for bad, message in [(["13=+1"], "unknown AU '13'"), (["12=+x"], "cannot read"), (["4=@x"], "AU=@VALUE"),
                         (["4=@9"], "outside the intensity range"), (["smile=@1"], "per AU"),
                         (["4=@3", "4=+1"], "relative change to an absolute target")]:
        with pytest.raises(StylerigError, match=message):
            parse_edit_options(bad)
    with pytest.raises(StylerigError, match="nothing to edit"):
        parse_edit_options([], [])
    with pytest.raises(StylerigError, match="no preset 'grin'"):
        parse_edit_options([], ["grin"])
    with pytest.raises(StylerigError, match="not a number"):
        parse_number_list("1,a", "--values")


# ----------------------------------------------------------------------------- edit


def test_edit_latent_writes_the_edited_aligned_face(setup, tmp_path, capsys):
    G = setup["G"]
    out, zero = tmp_path / "out" / "edited.png", tmp_path / "zero.png"
    assert main(["edit", str(setup["latent"]), "--au", "12=+2", "--au", "6=+1", *setup["args"], "--out", str(out)]) == 0
    assert "wrote the edited aligned face 32x32" in capsys.readouterr().out
    edited = np.asarray(Image.open(out))
    editor = Editor(G, random_directions(G))
    record = load_latent(setup["latent"])
    assert np.array_equal(edited, render_face(editor, _subject(record), AU(12, 2) + AU(6, 1)))
    assert main(["edit", str(setup["latent"]), "--au", "12=0", *setup["args"], "--out", str(zero)]) == 0
    recon = np.asarray(Image.open(zero))
    assert np.array_equal(recon, render_face(editor, _subject(record)))
    assert np.abs(edited.astype(int) - recon).max() > 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edited.png"]  # nothing else, no temp files


def test_edit_latent_with_the_mapper(setup, tmp_path, capsys):
    from stylerig_au.edit.mapper import load_mapper, new_mapper, save_mapper

    G = setup["G"]
    mapper = new_mapper(G, random_directions(G), num_samples=256)
    with torch.no_grad():
        mapper.out.weight.normal_(0, 0.05)
    file = save_mapper(mapper, tmp_path / "mapper.pt", G.name)
    out, linear_out = tmp_path / "mapper.png", tmp_path / "linear.png"
    args = ["--generator", str(setup["ckpt"]), "--device", "cpu"]
    assert main(["edit", str(setup["latent"]), "--au", "12=+2", "--method", "mapper", "--mapper", str(file), *args,
                 "--out", str(out)]) == 0
    editor = Editor(G, method="mapper", mapper=load_mapper(file, G))
    record = load_latent(setup["latent"])
    assert np.array_equal(np.asarray(Image.open(out)), render_face(editor, _subject(record), AU(12, 2)))
    assert main(["edit", str(setup["latent"]), "--au", "12=+2", *setup["args"], "--out", str(linear_out)]) == 0
    assert not np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(linear_out)))
    assert main(["sweep", str(setup["latent"]), "--aus", "12,6", "--values", "-1,0,1", "--method", "mapper", "--mapper", str(file),
                 *args, "--out", str(tmp_path / "sweep.png")]) == 0


def _subject(record):
    from pathlib import Path

    from stylerig_au.edit.photo import Subject

    return Subject(Path("face.pt"), record, Path("face.pt"))


def test_absolute_target_is_measured(setup, tmp_path, monkeypatch):
    """AU=@N measures the current intensity (here a stand-in for OpenFace) and moves by the difference."""
    from stylerig_au.au import detect
    from stylerig_au.edit import photo

    monkeypatch.setattr(detect, "make_detector", lambda name: "stand-in")  # loaded up front for targets
    monkeypatch.setattr(photo.OpenFaceMeasure, "__call__", lambda self, images: {4: torch.full((images.shape[0],), 1.0)})
    out_target, out_rel = tmp_path / "t.png", tmp_path / "r.png"
    assert main(["edit", str(setup["latent"]), "--au", "4=@3", *setup["args"], "--out", str(out_target)]) == 0
    assert main(["edit", str(setup["latent"]), "--au", "4=+2", *setup["args"], "--out", str(out_rel)]) == 0
    assert np.array_equal(np.asarray(Image.open(out_target)), np.asarray(Image.open(out_rel)))


@pytest.mark.parametrize("argv, message", [
    (["--au", "13=+1"], "unknown AU '13'"),
    (["--au", "12=plus"], "cannot read"),
    (["--au", "4=@"], "AU=@VALUE"),
    ([], "nothing to edit"),
    (["--au", "9=+1"], "no direction for AU9"),
    (["--au", "12", "--method", "mapper"], "no AU mapper is bundled for generator"),
    (["--au", "12", "--mapper", "m.pt"], "--mapper is only used with --method mapper"),
    (["--au", "12", "--method", "mapper", "--mapper", "missing.pt"], "no such AU mapper file"),
    (["--au", "12", "--preset", "grin"], "no preset 'grin'"),
])
def test_edit_bad_arguments(setup, tmp_path, capsys, argv, message):
    out = tmp_path / "o.png"
    assert main(["edit", str(setup["latent"]), *argv, *setup["args"], "--out", str(out)]) == 1
    one_line_error(capsys, message)
    assert not out.exists()


def test_edit_bad_inputs(setup, tmp_path, capsys):
    G, out = setup["G"], tmp_path / "o.png"
    args = setup["args"]

    def run(source, *extra, out=out):
        return main(["edit", str(source), "--au", "12=+1", *extra, "--out", str(out)])

    assert run(tmp_path / "missing.jpg", *args) == 1
    one_line_error(capsys, "missing.jpg: no such photo")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    assert run(corrupt, *args) == 1
    one_line_error(capsys, "not a readable image")
    not_latent = tmp_path / "junk.pt"
    not_latent.write_bytes(b"junk")
    assert run(not_latent, *args) == 1
    one_line_error(capsys, "not a stylerig-au latent file")
    wrong_shape = save_latent(tmp_path / "shape.pt", {**latent_record(G), "ws": torch.zeros(G.num_ws - 1, G.w_dim)})
    assert run(wrong_shape, *args) == 1
    one_line_error(capsys, f"needs W+ [{G.num_ws}, {G.w_dim}]")
    other_gen = save_latent(tmp_path / "other.pt", {**latent_record(G), "generator": "stylegan2:ffhq"})
    assert run(other_gen, *args) == 1
    one_line_error(capsys, "latent was made with generator 'stylegan2:ffhq'")
    other_dirs = LinearDirections({12: torch.ones(G.w_dim)}, slots=G.slots, generator="another").save(tmp_path / "od.pt")
    assert run(setup["latent"], "--generator", str(setup["ckpt"]), "--directions", str(other_dirs)) == 1
    one_line_error(capsys, "are for 'another'")
    assert run(setup["latent"], "--generator", str(setup["ckpt"]), "--directions", str(tmp_path / "none.pt")) == 1
    one_line_error(capsys, "no such directions file")
    assert run(setup["latent"], *args, out=tmp_path / "o.txt") == 1
    one_line_error(capsys, "unsupported output suffix '.txt'")
    assert run(setup["latent"], "--generator", str(setup["ckpt"])) == 1  # tiny generator: nothing bundled
    one_line_error(capsys, "no AU directions are bundled")
    assert not out.exists() and not list(tmp_path.glob("*.partial*"))


def test_no_face_is_a_clear_error(setup, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (96, 96), (90, 90, 90)).save(blank)
    out = tmp_path / "o.png"
    assert main(["edit", str(blank), "--au", "12=+1", *setup["args"], "--steps", "2", "--out", str(out)]) == 1
    one_line_error(capsys, "blank.png: no face found")
    assert not out.exists() and not (tmp_path / "blank.pt").exists()


# ----------------------------------------------------------------------------- animate and sweep


def test_animate_gif_frames(setup, tmp_path, capsys):
    out = tmp_path / "a.gif"
    args = ["animate", str(setup["latent"]), "--preset", "smile=2", *setup["args"], "--frames", "5", "--fps", "10", "--out"]
    assert main([*args, str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (32, 32) and gif.info["duration"] == 100
    bounce = tmp_path / "b.gif"
    assert main([*args, str(bounce), "--boomerang"]) == 0
    with Image.open(bounce) as gif:
        assert gif.n_frames == 8
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert np.array_equal(frames[3], frames[5]) and not np.array_equal(frames[0], frames[4])
    assert "wrote 8 frames 32x32" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "a.avi")]) == 1
    one_line_error(capsys, "unsupported animation suffix '.avi'")
    assert not (tmp_path / "a.avi").exists()


def test_animate_mp4_or_clear_error(setup, tmp_path, capsys, monkeypatch):
    out = tmp_path / "a.mp4"
    args = ["animate", str(setup["latent"]), "--au", "12=+2", *setup["args"], "--frames", "4", "--out", str(out)]
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        assert main(args) == 0
        assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == 4
        out.unlink()
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # as if OpenCV were not installed
    assert main(args) == 1
    one_line_error(capsys, "pip install opencv-python-headless")
    assert not out.exists()


def test_sweep_grid_size(setup, tmp_path, capsys):
    out = tmp_path / "s.png"
    cell, pad = 32, 4
    assert main(["sweep", str(setup["latent"]), "--aus", "4,12,26", "--values", "-2,0,2", "--cell", str(cell),
                 *setup["args"], "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out))
    body_h, body_w = 3 * (cell + pad) + pad, 3 * (cell + pad) + pad
    assert grid.shape == (body_h + media.header_height(cell), body_w + media.label_width(cell), 3)
    label_band = grid[: media.header_height(cell), media.label_width(cell):]
    assert (label_band < 128).any()  # the column labels are drawn
    plain = tmp_path / "p.png"
    assert main(["sweep", str(setup["latent"]), "--aus", "4,12", "--values", "-1,0,1,2", "--cell", str(cell),
                 "--no-labels", *setup["args"], "--out", str(plain)]) == 0
    assert np.asarray(Image.open(plain)).shape == (2 * (cell + pad) + pad, 4 * (cell + pad) + pad, 3)
    assert main(["sweep", str(setup["latent"]), "--aus", "4,99", *setup["args"], "--out", str(plain)]) == 1
    one_line_error(capsys, "unknown AU '99'")


# ----------------------------------------------------------------------------- the photo path


def test_photo_latent_is_cached_by_hash(tiny_stylegan2, tmp_path):
    """A photo is inverted once; the same bytes reuse the latent, changed bytes or settings invert again."""
    from skimage import data

    require_asset("dlib-landmarks-68")
    G = tiny_stylegan2
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    cheap = _CheapPerceptual()
    config = quick_config(2)
    first = load_subject(G, photo, config, cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False)
    assert first.inverted and first.latent_path == tmp_path / "cache" / "astronaut.pt"
    check_latent(G, load_latent(first.latent_path))
    again = load_subject(G, photo, config, cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False, log=lambda m: None)
    assert not again.inverted and torch.equal(again.record["ws"], first.record["ws"])
    # other settings: refused (the cached latent may have cost minutes), reused when no settings were chosen,
    # replaced only with overwrite
    with pytest.raises(StylerigError, match="other settings \\(2 steps, lr 0.08\\); leave out --steps/--lr"):
        load_subject(G, photo, quick_config(3), cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False)
    assert not load_subject(G, photo, quick_config(3), cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False,
                            any_settings=True, log=lambda m: None).inverted
    assert load_subject(G, photo, quick_config(3), cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False,
                        overwrite=True).inverted
    Image.fromarray(data.astronaut()[:, ::-1]).save(photo)
    with pytest.raises(StylerigError, match="holds the latent of another photo"):
        load_subject(G, photo, config, cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False, any_settings=True)
    assert load_subject(G, photo, config, cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False, overwrite=True).inverted

    editor = Editor(G, random_directions(G))
    pasted = compose(again, render_face(editor, again, AU(12, 2)))
    assert pasted.shape == (512, 512, 3)
    # far from the face the photo is untouched
    assert np.array_equal(pasted[:40, :40], again.photo[:40, :40]) and not np.array_equal(pasted, again.photo)

    (tmp_path / "cache" / "astronaut.pt").write_bytes(b"someone else's file")
    with pytest.raises(StylerigError, match="is not a stylerig-au latent file"):
        load_subject(G, photo, config, cache_dir=tmp_path / "cache", lpips_model=cheap, progress=False)


def test_group_photo_needs_a_face_choice(tiny_stylegan2, tmp_path):
    """A photo with two people: without ``face`` a clear error; ``face=K`` picks one (left to right), cached per face."""
    from .helpers import faces_dir

    require_asset("dlib-landmarks-68")
    photo = faces_dir() / "unaligned" / "06.png"
    G, cheap, config = tiny_stylegan2, _CheapPerceptual(), quick_config(2)
    with pytest.raises(StylerigError, match="2 faces found; choose one \\(--face K"):
        load_subject(G, photo, config, cache_dir=tmp_path, lpips_model=cheap, progress=False)
    left, right = (load_subject(G, photo, config, cache_dir=tmp_path, lpips_model=cheap, progress=False, face=k) for k in (0, 1))
    assert left.latent_path.name == "06_face0.pt" and right.latent_path.name == "06_face1.pt"
    assert left.record["face_index"] == 0 and right.record["face_index"] == 1
    assert left.transform.quad[:, 0].mean() < right.transform.quad[:, 0].mean()  # numbered from the left
    again = load_subject(G, photo, config, cache_dir=tmp_path, lpips_model=cheap, progress=False, face=1, log=lambda m: None)
    assert not again.inverted
    with pytest.raises(StylerigError, match="there is no face 2; 2 found"):
        load_subject(G, photo, config, cache_dir=tmp_path, lpips_model=cheap, progress=False, face=2)
    with pytest.raises(StylerigError, match="--face chooses a face of a photo"):
        load_subject(G, left.latent_path, face=0)


class _CheapPerceptual(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3))


@pytest.mark.slow
def test_edit_photo_with_the_default_generator(tmp_path, capsys):
    """The astronaut through `edit` on MobileStyleGAN with a 2-step inversion; the second edit reuses the latent."""
    from skimage import data

    from stylerig_au import pretrained
    from stylerig_au.models import load_generator

    require_asset("mobilestylegan-ffhq-1024")
    require_asset("dlib-landmarks-68")
    require_asset("lpips-vgg16")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    try:
        dirs_args = ["--directions", str(pretrained.own_path("au-directions-mobilestylegan-ffhq-1024"))]
    except StylerigError:  # not learned yet: random directions for the same generator
        G = load_generator()
        dirs_args = ["--directions", str(random_directions(G, seed=1).save(tmp_path / "dirs.pt"))]
    out = tmp_path / "out" / "smile.png"
    assert main(["edit", str(photo), "--preset", "smile=2", "--steps", "2", *dirs_args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "inverted astronaut.png (2 steps" in captured.err
    latent = tmp_path / "out" / "astronaut.pt"
    assert load_latent(latent)["steps"] == 2
    edited = np.asarray(Image.open(out))
    original = np.asarray(Image.open(photo))
    assert edited.shape == original.shape
    assert np.array_equal(edited[:40, :40], original[:40, :40])  # far from the face: untouched
    assert np.abs(edited.astype(int) - original).mean() > 1.0  # the face was replaced
    mtime = latent.stat().st_mtime_ns
    assert main(["edit", str(photo), "--au", "26=+2", "--steps", "2", *dirs_args, "--out", str(tmp_path / "out" / "jaw.jpg")]) == 0
    assert "reusing the inversion of astronaut.png" in capsys.readouterr().err
    assert latent.stat().st_mtime_ns == mtime
