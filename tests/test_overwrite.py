"""The overwrite rule (stylerig_au.outputs), built situation by situation: output == input (any spelling,
symlink, hard link), same-stem inputs, costly or foreign files in the way, reruns into the input folder.
Each shows: no existing user file changed, one ``error:`` line and exit 1, good inputs still processed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from stylerig_au.cli import main
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import check_replaceable, made_with, refuse_inputs_as_outputs, refuse_shared_outputs, same_file
from tests.helpers import require_asset
from tests.test_edit_cli import latent_record, setup  # noqa: F401 - the tiny-generator CLI fixture


def _one_error_line(capsys, *words: str) -> str:
    """The one ``error:`` line of the problem (a batch command adds its 'N of M ... (see above)' summary)."""
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error") and not line.endswith("(see above)")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), errors
    return errors[0]


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def astro(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "photos" / "astro.png"
    photo.parent.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photo)
    return photo


# ----------------------------------------------------------------------------- the rule itself


def test_same_file_sees_through_spellings_symlinks_and_hard_links(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"photo")
    (tmp_path / "sub").mkdir()
    os.symlink(a, tmp_path / "link.png")
    os.link(a, tmp_path / "hard.png")
    for alias in (tmp_path / "sub" / ".." / "a.png", tmp_path / "link.png", tmp_path / "hard.png"):
        assert same_file(alias, a)
        with pytest.raises(StylerigError, match="is an input; writing the output there would destroy it"):
            refuse_inputs_as_outputs([alias], [a])
    assert not same_file(tmp_path / "b.png", a)
    refuse_inputs_as_outputs([tmp_path / "b.png", None], [a, None])
    with pytest.raises(StylerigError, match="two outputs are the same file"):
        refuse_inputs_as_outputs([tmp_path / "b.png", tmp_path / "sub" / ".." / "b.png"], [a])
    with pytest.raises(StylerigError, match="x/me.jpg and .*y/me.png would both write me.pt"):
        refuse_shared_outputs({tmp_path / "x" / "me.jpg": [tmp_path / "me.pt"], tmp_path / "y" / "me.png": [tmp_path / "me.pt"]})


def test_check_replaceable(tmp_path):
    from stylerig_au.imageio import save_image

    check_replaceable(tmp_path / "absent.png", overwrite=False)
    mine = save_image(tmp_path / "mine.png", np.zeros((4, 4, 3), np.uint8), provenance={"tool": "t", "seed": 1})
    check_replaceable(mine, overwrite=False, made_here=made_with({"tool": "t", "seed": 1}))
    with pytest.raises(StylerigError, match="already exists and it was not made.*pass --overwrite"):
        check_replaceable(mine, overwrite=False, made_here=made_with({"tool": "t", "seed": 2}))
    check_replaceable(mine, overwrite=True, made_here=made_with({"tool": "t", "seed": 2}))


# ----------------------------------------------------------------------------- edit, animate, sweep


@pytest.mark.parametrize("command,suffix", [("edit", ".png"), ("animate", ".gif"), ("sweep", ".png"), ("edit", ".jpg")])
@pytest.mark.parametrize("alias", ["same", "dotdot", "symlink", "hardlink"])
def test_edit_commands_never_write_over_their_photo(setup, tmp_path, capsys, command, suffix, alias):  # noqa: F811
    photo = tmp_path / "me" / f"me{suffix}"
    photo.parent.mkdir()
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    out = {"same": photo, "dotdot": photo.parent / ".." / "me" / photo.name, "symlink": tmp_path / f"link{suffix}",
           "hardlink": tmp_path / f"hard{suffix}"}[alias]
    if alias == "symlink":
        os.symlink(photo, out)
    elif alias == "hardlink":
        os.link(photo, out)
    before = photo.read_bytes()
    edit_args = ["--values", "-1,1"] if command == "sweep" else ["--au", "12=+1"]
    assert main([command, str(photo), *edit_args, *setup["args"], "--out", str(out)]) == 1
    _one_error_line(capsys, "is an input")
    assert photo.read_bytes() == before and sorted(p.name for p in photo.parent.iterdir()) == [photo.name]


def test_edit_face_out_and_latent_dir_collisions(setup, tmp_path, capsys):  # noqa: F811
    photo = tmp_path / "me.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    before = photo.read_bytes()
    base = ["edit", str(photo), "--au", "12=+1", *setup["args"]]
    assert main([*base, "--out", str(tmp_path / "a.png"), "--face-out", str(photo)]) == 1
    _one_error_line(capsys, "is an input")
    assert main([*base, "--out", str(tmp_path / "a.png"), "--face-out", str(tmp_path / "a.png")]) == 1
    _one_error_line(capsys, "two outputs are the same file")
    # the photo's latent cache <stem>.pt would be the --directions file
    dirs = tmp_path / "me.pt"
    dirs.write_bytes(setup["dirs"].read_bytes())
    assert main(["edit", str(photo), "--au", "12=+1", "--generator", str(setup["ckpt"]), "--directions", str(dirs),
                 "--out", str(tmp_path / "a.png")]) == 1
    _one_error_line(capsys, "me.pt is an input")
    assert photo.read_bytes() == before and dirs.read_bytes() == setup["dirs"].read_bytes()


def test_edit_never_replaces_a_foreign_or_costlier_latent(setup, tmp_path, astro, capsys):  # noqa: F811
    """A <stem>.pt in the cache folder that is not this photo's latent with these settings: refused before the
    inversion; the same photo's latent (e.g. a 500-step one from `invert`) is reused when --steps is not given."""
    from stylerig_au.invert import load_latent, save_latent, sha256_file

    require_asset("dlib-landmarks-68")
    G, cache = setup["G"], astro.parent
    base = ["edit", str(astro), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "e.png")]
    foreign = cache / "astro.pt"
    foreign.write_bytes(b"the user's own file")
    assert main([*base, "--latent-dir", str(cache)]) == 1
    _one_error_line(capsys, "astro.pt already exists and is not a stylerig-au latent file", "--overwrite")
    assert foreign.read_bytes() == b"the user's own file"
    other = latent_record(G)
    other.update(source="elsewhere/astro.jpg", source_sha256="0" * 64)
    save_latent(foreign, other)
    before = foreign.read_bytes()
    assert main([*base, "--latent-dir", str(cache)]) == 1
    _one_error_line(capsys, "holds the latent of another photo (elsewhere/astro.jpg)")
    assert foreign.read_bytes() == before
    # this photo's latent made with other settings (as `invert --steps 500` would): reused unless --steps is given
    from stylerig_au.align import align_file

    transform = align_file(astro, output_size=G.resolution)[0].transform.to_dict()
    costly = latent_record(G)
    costly.update(source=str(astro), source_sha256=sha256_file(astro), transform=transform,
                  config={"steps": 500, "lr": 0.05}, losses={"lpips": 0.1})
    save_latent(foreign, costly)
    before = foreign.read_bytes()
    assert main([*base, "--latent-dir", str(cache)]) == 0
    assert "reusing the inversion of astro.png" in capsys.readouterr().err and foreign.read_bytes() == before
    assert main([*base, "--latent-dir", str(cache), "--steps", "2"]) == 1
    _one_error_line(capsys, "other settings (500 steps, lr 0.05)", "leave out --steps/--lr to reuse it")
    assert foreign.read_bytes() == before
    require_asset("lpips-vgg16")
    assert main([*base, "--latent-dir", str(cache), "--steps", "1", "--overwrite"]) == 0
    assert load_latent(foreign)["steps"] == 1


# ----------------------------------------------------------------------------- align


def test_align_into_the_photos_folder(tmp_path, astro, capsys):
    require_asset("dlib-landmarks-68")
    photos = astro.parent
    before = _snapshot(photos)
    assert main(["align", str(astro), "--out", str(photos), "--size", "64"]) == 1  # astro.png would be its own crop
    _one_error_line(capsys, "astro.png is an input")
    assert _snapshot(photos) == before
    # a .jpg in the same folder is fine: its crop is a new astro2.png; a rerun replaces align's own files only
    jpg = photos / "astro2.jpg"
    Image.open(astro).convert("RGB").save(jpg)
    before = _snapshot(photos)
    assert main(["align", str(jpg), "--out", str(photos), "--size", "64"]) == 0
    assert main(["align", str(jpg), "--out", str(photos), "--size", "64"]) == 0  # same photo, same settings
    assert {**before, **{k: v for k, v in _snapshot(photos).items() if k not in before}} == _snapshot(photos)
    assert main(["align", str(jpg), "--out", str(photos), "--size", "32"]) == 1  # other settings: asks first
    _one_error_line(capsys, "astro2.png already exists and align did not make it from this photo with these settings")
    assert main(["align", str(jpg), "--out", str(photos), "--size", "32", "--overwrite"]) == 0
    assert Image.open(photos / "astro2.png").size == (32, 32)


def test_align_keeps_unrelated_files_and_refuses_same_stems(tmp_path, astro, capsys):
    require_asset("dlib-landmarks-68")
    out = tmp_path / "out"
    out.mkdir()
    (out / "astro.png").write_bytes(b"someone's picture")
    other = tmp_path / "b" / "face.png"
    other.parent.mkdir()
    other.write_bytes(astro.read_bytes())
    assert main(["align", str(astro), str(other), "--out", str(out), "--size", "64"]) == 1
    _one_error_line(capsys, "astro.png already exists")
    assert (out / "astro.png").read_bytes() == b"someone's picture"  # kept ...
    assert sorted(p.name for p in out.iterdir()) == ["astro.png", "face.json", "face.png"]  # ... and the good photo done
    twin = tmp_path / "c" / "astro.jpg"
    twin.parent.mkdir()
    Image.open(astro).convert("RGB").save(twin)
    assert main(["align", str(astro), str(twin), "--out", str(tmp_path / "new"), "--size", "64"]) == 1
    _one_error_line(capsys, "would both write astro.png")
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- invert


@pytest.fixture
def tiny_ckpt(tiny_stylegan2, tmp_path):
    from stylerig_au.models.checkpoints import save_stylegan2

    return save_stylegan2(tiny_stylegan2, tmp_path / "tiny.pt")


def _invert(inputs, out, ckpt, *extra) -> int:
    return main(["invert", *map(str, inputs), "--out", str(out), "--steps", "1", "--generator", str(ckpt),
                 "--loss-size", "32", *extra])


def test_invert_refuses_same_stems_before_any_work(tmp_path, astro, tiny_ckpt, capsys):
    twin = tmp_path / "b" / "astro.jpg"
    twin.parent.mkdir()
    Image.open(astro).convert("RGB").save(twin)
    assert _invert([astro, twin], tmp_path / "out", tiny_ckpt) == 1
    _one_error_line(capsys, "would both write astro.pt")
    assert not (tmp_path / "out").exists()


def test_invert_keeps_foreign_and_costlier_files(tmp_path, astro, tiny_ckpt, capsys):
    require_asset("dlib-landmarks-68")
    require_asset("lpips-vgg16")
    out = tmp_path / "out"
    out.mkdir()
    (out / "astro.pt").write_bytes(b"an unrelated file")
    good = tmp_path / "b" / "good.png"
    good.parent.mkdir()
    good.write_bytes(astro.read_bytes())
    assert _invert([astro, good], out, tiny_ckpt) == 1
    err = capsys.readouterr().err
    assert "astro.pt already exists and is not a stylerig-au latent file; pass --overwrite" in err
    assert (out / "astro.pt").read_bytes() == b"an unrelated file"
    assert {"good.pt", "good_recon.png", "grid.png"} <= {p.name for p in out.iterdir()}  # the good photo still done
    before = (out / "good.pt").read_bytes()
    assert _invert([good], out, tiny_ckpt, "--lr", "0.01") == 1  # other settings: the latent is kept
    assert "good.pt already exists and holds this photo's latent made with other settings" in capsys.readouterr().err
    assert (out / "good.pt").read_bytes() == before
    assert _invert([good], out, tiny_ckpt, "--lr", "0.01", "--overwrite") == 0
    assert (out / "good.pt").read_bytes() != before


def test_invert_dir_into_itself_twice_skips_its_own_outputs(tmp_path, astro, tiny_ckpt, capsys):
    require_asset("dlib-landmarks-68")
    require_asset("lpips-vgg16")
    photos = astro.parent
    assert _invert([photos], photos, tiny_ckpt) == 0
    first = _snapshot(photos)
    assert sorted(first) == ["astro.png", "astro.pt", "astro_recon.png", "grid.png"]
    capsys.readouterr()
    assert _invert([photos], photos, tiny_ckpt) == 0
    captured = capsys.readouterr()
    assert "not inverting 2 file(s) invert wrote itself" in captured.err and "astro: already inverted" in captured.out
    assert sorted(_snapshot(photos)) == sorted(first)  # no astro_recon_recon.png, no grid.pt
    assert _snapshot(photos)["astro.pt"] == first["astro.pt"]


def test_invert_never_writes_over_a_foreign_grid_or_an_input(tmp_path, astro, tiny_ckpt, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.png").write_bytes(b"my grid")
    assert _invert([astro], out, tiny_ckpt) == 1
    _one_error_line(capsys, "grid.png already exists and invert did not make it")
    assert _snapshot(out) == {"grid.png": b"my grid"}
    recon_named = astro.parent / "astro_recon.png"  # a user photo that is astro's reconstruction name
    recon_named.write_bytes(astro.read_bytes())
    before = _snapshot(astro.parent)
    assert _invert([astro, recon_named], astro.parent, tiny_ckpt) == 1
    _one_error_line(capsys, "astro_recon.png is an input")
    assert _snapshot(astro.parent) == before


# ----------------------------------------------------------------------------- generate


def test_generate_replaces_only_its_own_images(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "seed0001.png").write_bytes(b"not generated")
    base = ["generate", "--seeds", "0-1", "--generator", str(tiny_ckpt), "--device", "cpu", "--out", str(out)]
    assert main(base) == 1
    _one_error_line(capsys, "seed0001.png already exists and generate did not make it")
    assert _snapshot(out) == {"seed0001.png": b"not generated"}
    assert main([*base, "--overwrite"]) == 0
    assert main(base) == 0  # its own files, same settings
    assert main([*base, "--psi", "0.5"]) == 1
    _one_error_line(capsys, "seed0000.png already exists and generate did not make it with these settings")


def test_a_photo_named_twice_is_one_input(tmp_path):
    from stylerig_au.imageio import list_images

    photo = tmp_path / "me.png"
    photo.write_bytes(b"x")
    os.symlink(photo, tmp_path / "alias.jpg")
    listed = list_images([photo, tmp_path / "." / "me.png", tmp_path])
    assert listed == [photo]  # the symlink resolves to the same file too


def test_align_all_faces_checks_each_face_name_against_the_inputs(astro, capsys):
    require_asset("dlib-landmarks-68")
    photos = astro.parent
    named_like_a_face = photos / "astro_face0.png"  # what --all-faces would call astro.png's first face
    named_like_a_face.write_bytes(astro.read_bytes())
    before = _snapshot(photos)
    assert main(["align", str(photos), "--all-faces", "--out", str(photos), "--size", "32"]) == 1
    _one_error_line(capsys, "astro_face0.png is an input")
    after = _snapshot(photos)
    assert {k: after[k] for k in before} == before  # both photos untouched ...
    assert sorted(set(after) - set(before)) == ["astro_face0_face0.json", "astro_face0_face0.png"]  # ... the other aligned
