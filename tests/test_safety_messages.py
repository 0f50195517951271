"""Issue 27 §3-4 and its memory item: one ``error:`` line (never a traceback) for each class of bad input or
environment, messages that tell the truth, what a pasted-back photo keeps, and bounded detection memory.

Each test builds its situation: huge image *headers* (not huge files), a path whose parent is a file, a
read-only or full disk (faked: tests run as root, where chmod does not stop writes), a truncated model
in a temporary cache, crafted latent files.
"""

from __future__ import annotations

import errno
import shutil
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from stylerig_au import align, fileio, imageio, pretrained
from stylerig_au.cli import COMMANDS, main
from stylerig_au.errors import AssetError, StylerigError, StylerigWarning

from .helpers import faces_dir, require_asset
from .test_edit_cli import latent_record, setup  # noqa: F401 - `setup` is a fixture used below


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit RGB) with almost no pixel data: a huge image
    on paper, a few bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG start (SOI + baseline SOF0 of one component) claiming ``width`` x ``height``."""
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00" + b"\xff\xd9"


def last_error(capsys) -> str:
    """The command's stderr must end in exactly one ``error:`` line and hold no traceback; returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def no_model_loads(monkeypatch) -> None:
    """Fail the test if a command gets as far as loading a generator (the slow work)."""
    import stylerig_au.models as models

    monkeypatch.setattr(models, "load_generator", lambda *a, **k: pytest.fail("checked too late: the generator loaded"))


# ----------------------------------------------------------------------------- very large images


@pytest.mark.parametrize("name, data", [("huge.png", png_header(20000, 20000)), ("huge.jpg", jpeg_header(65000, 60000))])
def test_huge_header_is_one_line_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(StylerigError) as info:
        imageio.load_image(path)
    message = str(info.value)
    assert "megapixels, over the limit of 200" in message and name in message
    assert "DecompressionBomb" not in message and "DOS" not in message
    with pytest.raises(StylerigError, match="over the limit"):
        imageio.image_size(path)


def test_pixel_limit_follows_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setenv(imageio.ENV_MAX_MEGAPIXELS, "0.05")
    with pytest.raises(StylerigError, match="300x200 is 0 megapixels, over the limit of 0.05"):
        imageio.load_image(path)
    monkeypatch.setenv(imageio.ENV_MAX_MEGAPIXELS, "lots")
    with pytest.raises(StylerigError, match="not a positive number of megapixels"):
        imageio.load_image(path)
    monkeypatch.setenv(imageio.ENV_MAX_MEGAPIXELS, "400")  # above Pillow's own error level: ours decides
    assert imageio.image_size(tmp_path / "p.png") == (300, 200)


def test_large_photo_warns_in_plain_words(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setattr(imageio, "LARGE_PIXELS", 50_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert imageio.load_image(path).shape == (200, 300, 3)
    (warning,) = [w for w in caught if issubclass(w.category, StylerigWarning)]
    assert "large photo (300x200" in str(warning.message) and "GB of memory" in str(warning.message)


def test_align_batch_skips_a_huge_photo_and_aligns_the_good_one(tmp_path, capsys):
    require_asset("dlib-landmarks-68")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_huge.png").write_bytes(png_header(30000, 30000))
    shutil.copy(faces_dir() / "unaligned" / "03.jpg", folder / "b_good.jpg")
    assert main(["align", str(folder), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a_huge.png: 30000x30000 is 900 megapixels" in err
    assert (tmp_path / "out" / "b_good.png").is_file() and not (tmp_path / "out" / "a_huge.png").exists()


# ----------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_usage_errors_are_one_line_with_exit_2(command, capsys):
    words = command.split() + (["fetch"] if command == "pretrained" else [])
    assert main([*words, "--no-such-option"]) == 2
    line = last_error(capsys)
    assert "No such option" in line and f"stylerig-au {' '.join(words)} --help" in line


def test_bad_option_value_and_missing_argument_are_one_line(capsys):
    assert main(["animate", "x.pt", "--au", "12=+1", "--out", "a.gif", "--fps", "0.01"]) == 2
    assert "'--fps': 0.01 is not in the range 0.1<=x<=100" in last_error(capsys)
    assert main(["edit"]) == 2
    assert "Missing argument" in last_error(capsys)
    assert main(["no-such-command"]) == 2
    assert "No such command" in last_error(capsys)
    assert main(["pretrained", "fetch", "--accept-license"]) == 2
    assert "'--accept-license' requires an argument" in last_error(capsys)
    for bare in ([], ["pretrained"]):  # a group without its command shows its help, as click does
        assert main(bare) == 2
        assert "Commands:" in capsys.readouterr().err


def test_environment_oserror_is_one_line(monkeypatch, capsys):
    import click

    import stylerig_au.commands.doctor as doctor_module

    @click.command()
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.png")

    monkeypatch.setattr(doctor_module, COMMANDS["doctor"][1], full)
    assert main(["doctor"]) == 1
    assert last_error(capsys).startswith("error: /data/out.png: No space left on device")


# ----------------------------------------------------------------------------- unwritable outputs


def test_file_in_the_output_path_fails_before_any_work(setup, tmp_path, monkeypatch, capsys):  # noqa: F811
    no_model_loads(monkeypatch)
    blocker = tmp_path / "afile"
    blocker.write_text("I am a file")
    for argv in (["edit", str(setup["latent"]), "--au", "12=+1", "--out", str(blocker / "sub" / "o.png")],
                 ["edit", str(setup["latent"]), "--au", "12=+1", "--out", str(tmp_path / "o.png"), "--face-out", str(blocker / "f.png")],
                 ["animate", str(setup["latent"]), "--au", "12=+1", "--out", str(blocker / "a.gif")],
                 ["sweep", str(setup["latent"]), "--out", str(blocker / "s.png")],
                 ["invert", str(setup["latent"]), "--out", str(blocker)],
                 ["align", str(setup["latent"]), "--out", str(blocker / "x")],
                 ["generate", "--out", str(blocker / "g")],
                 ["train-mapper", "--out", str(blocker / "m.pt")]):
        assert main([*argv, *(setup["args"] if argv[0] in ("edit", "animate", "sweep") else [])]) == 2, argv
        line = last_error(capsys)
        assert "afile" in line and ("is a file" in line), line
    assert blocker.read_text() == "I am a file" and not (tmp_path / "o.png").exists()


def test_read_only_and_full_disk_fail_before_any_work(setup, tmp_path, monkeypatch, capsys):  # noqa: F811
    no_model_loads(monkeypatch)
    argv = ["edit", str(setup["latent"]), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "o.png")]

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", read_only)
        assert main(argv) == 2
        line = last_error(capsys)
        assert "cannot write in" in line and "(Read-only file system); choose a writable folder" in line
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
        assert main(argv) == 2
        assert "is full (0.0 MB free)" in last_error(capsys)
    assert not (tmp_path / "o.png").exists()


def test_disk_full_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"the good old result")
    with pytest.raises(StylerigError, match="could not be written \\(No space left on device\\); the existing file is unchanged"):
        with fileio.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"the good old result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


# ----------------------------------------------------------------------------- output format limits, fps


def test_output_format_limits_are_checked_before_the_inversion(setup, tmp_path, monkeypatch, capsys):  # noqa: F811
    no_model_loads(monkeypatch)
    wide = tmp_path / "wide.png"
    wide.write_bytes(png_header(17000, 100))  # only the header is read before the check
    assert main(["edit", str(wide), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "o.webp")]) == 1
    assert "a WEBP image can be at most 16383 px a side but this one would be 17000x100" in last_error(capsys)
    assert main(["animate", str(wide), "--au", "12=+1", *setup["args"], "--size", "0", "--out", str(tmp_path / "a.mp4")]) == 1
    assert ".mp4 frames can be at most 8190 px" in last_error(capsys)
    big = tmp_path / "big.png"
    big.write_bytes(png_header(8000, 6000))
    assert main(["animate", str(big), "--au", "12=+1", *setup["args"], "--size", "0", "--frames", "500",
                 "--out", str(tmp_path / "a.gif")]) == 1
    assert "500 frames of 8000x6000 would need 72 GB of memory" in last_error(capsys)
    values = ",".join(f"{-3.9 + 0.1 * k:.1f}" for k in range(79))  # 79 columns of 260 px: wider than WebP allows
    assert main(["sweep", str(setup["latent"]), "--values", values, *setup["args"], "--out", str(tmp_path / "s.webp")]) == 1
    assert "a WEBP image can be at most 16383 px" in last_error(capsys)
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob("s.*"))


def test_save_image_and_animation_limits(tmp_path):
    with pytest.raises(StylerigError, match="at most 16383 px"):
        imageio.check_image_output(tmp_path / "x.webp", (16384, 10))
    assert imageio.check_image_output(tmp_path / "x.png", (16384, 10)) == "PNG"
    from stylerig_au.edit import media

    frames = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    for fps in (0.01, 1e-300, 1000.0, float("nan")):
        with pytest.raises(StylerigError, match="fps must be between 0.1 and 100"):
            media.write_animation(tmp_path / "a.gif", frames, fps)
    assert not (tmp_path / "a.gif").exists()
    media.write_animation(tmp_path / "a.gif", frames, 0.1)
    assert Image.open(tmp_path / "a.gif").info["duration"] == 10000


# ----------------------------------------------------------------------------- damaged assets, foreign files


@pytest.fixture
def damaged_cache(tmp_path, monkeypatch):
    """A temporary cache holding a truncated copy of dlib's landmark model (with its sidecar)."""
    good = require_asset("dlib-landmarks-68")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / good.name).write_bytes(good.read_bytes()[:100_000])
    sidecar = good.with_name(good.name + ".json")
    if sidecar.is_file():
        shutil.copy(sidecar, cache / sidecar.name)
    monkeypatch.setenv(pretrained.ENV_CACHE, str(cache))
    monkeypatch.delenv(pretrained.ENV_SEARCH_PATH, raising=False)
    monkeypatch.setattr(align, "_MODELS", {})
    return cache


def test_truncated_dlib_model_is_one_line_naming_the_fix(damaged_cache, tmp_path, capsys):
    photo = faces_dir() / "unaligned" / "03.jpg"
    assert main(["align", str(photo), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("error: dlib-landmarks-68: cannot read" in err
            and "it is damaged or truncated: run 'stylerig-au pretrained fetch dlib-landmarks-68 --force'" in err)
    assert not list((tmp_path / "out").glob("*.png"))


def test_every_asset_loader_reports_damage_in_one_line(tmp_path):
    from stylerig_au import identity_net, metrics, perceptual

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage" * 100)
    for load, name in ((lambda: align._shape_predictor(junk), "dlib-landmarks-68"),
                       (lambda: metrics._face_rec(junk), "dlib-face-recognition"),
                       (lambda: identity_net.load_face_resnet(junk), "dlib-face-recognition"),
                       (lambda: perceptual.load_lpips(junk), "lpips-vgg16")):
        with pytest.raises(AssetError) as info:
            load()
        assert str(info.value).startswith(f"{name}: cannot read") and "\n" not in str(info.value)


class _Code:
    def __reduce__(self):
        return (print, ("this ran",))


def test_torch_advice_to_load_unsafely_is_never_shown(tmp_path, capsys):
    from stylerig_au.models import load_generator

    evil = tmp_path / "evil.pt"
    torch.save({"format": "stylerig-au/latent", "x": _Code()}, evil)
    reason = fileio.load_error_reason(_weights_only_error(evil))
    assert "weights_only" not in reason and "Python objects besides tensors" in reason
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")  # not a pickle of objects: said as it is
    reason = fileio.load_error_reason(_weights_only_error(garbage))
    assert reason.startswith("UnpicklingError: ") and "weights_only" not in reason and "Python objects" not in reason
    for load in (lambda: fileio.load_record(evil, "stylerig-au/latent", 1, "latent file"), lambda: load_generator(evil)):
        with pytest.raises(StylerigError) as info:
            load()
        assert "weights_only" not in str(info.value) and "could run code" in str(info.value)
    assert main(["edit", str(evil), "--au", "12=+1", "--out", str(tmp_path / "o.png")]) == 1
    assert "weights_only" not in last_error(capsys)


def _weights_only_error(path: Path) -> Exception:
    try:
        torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("torch loaded a file holding code")


@pytest.mark.parametrize("change, message", [
    ({"noise": {"no.such.layer": torch.zeros(1, 4, 4)}}, "noise map for 'no.such.layer'"),
    ({"noise": [1, 2]}, "'noise' is a list"),
    ({"ws": None}, "no floating-point 'ws' tensor"),
    ({"ws": "zeros"}, "no floating-point 'ws' tensor"),
    ({"generator": ["x"]}, "no generator name"),
    ({"format_version": "1"}, "format_version is not a number"),
])
def test_crafted_latents_are_one_line(setup, tmp_path, capsys, change, message):  # noqa: F811
    from stylerig_au.invert import save_latent

    G = setup["G"]
    crafted = save_latent(tmp_path / "crafted.pt", {**latent_record(G), **change})
    assert main(["edit", str(crafted), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "o.png")]) == 1
    assert message in last_error(capsys)
    assert not (tmp_path / "o.png").exists()


def test_crafted_latent_with_wrong_noise_shape_and_int_ws(setup, tmp_path, capsys):  # noqa: F811
    from stylerig_au.invert import noise_modules, save_latent

    G = setup["G"]
    layer = next(iter(noise_modules(G)))
    for change, message in (({"noise": {layer: torch.zeros(1, 3, 3)}}, f"noise map '{layer}' is not a float map"),
                            ({"ws": torch.zeros(G.num_ws, G.w_dim, dtype=torch.int64)}, "no floating-point 'ws'")):
        crafted = save_latent(tmp_path / "crafted.pt", {**latent_record(G), **change})
        assert main(["edit", str(crafted), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "o.png")]) == 1
        assert message in last_error(capsys)
    extra = save_latent(tmp_path / "extra.pt", {**latent_record(G), "unknown_key": torch.zeros(2), "noise": None})
    assert main(["edit", str(extra), "--au", "12=+1", *setup["args"], "--out", str(tmp_path / "o.png")]) == 0


# ----------------------------------------------------------------------------- messages that tell the truth


def test_licence_message_gives_the_working_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(pretrained.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(pretrained.ENV_SEARCH_PATH, raising=False)
    monkeypatch.delenv(pretrained.ENV_ACCEPT, raising=False)
    with pytest.raises(AssetError) as info:
        pretrained.path("openface-2.2-au")
    assert "'stylerig-au pretrained fetch openface-2.2-au --accept-license openface-2.2-au'" in str(info.value)
    # ... and the shorter form some users type fetches the accepted asset too, not only the free ones
    fetched = []
    monkeypatch.setattr(pretrained, "fetch", lambda name, accept_license=False, force=False: fetched.append((name, accept_license)) or Path(name))
    assert main(["pretrained", "fetch", "--accept-license", "openface-2.2-au"]) == 0
    assert ("openface-2.2-au", True) in fetched
    assert main(["pretrained", "fetch", "--accept-license", "no-such-asset"]) == 1
    assert "unknown asset 'no-such-asset'" in last_error(capsys)


def test_face_count_agrees_with_all_faces():
    # two faces of similar size and score, two smaller or weaker ones that --all-faces still keeps
    dets = [((100, 100, 200, 200), 2.0), ((300, 100, 400, 200), 1.9), ((10, 10, 40, 40), 1.5), ((500, 90, 540, 130), 0.5)]
    found = len(align.select_faces(dets, all_faces=True))
    with pytest.raises(StylerigError, match=f"{found} faces found; choose one \\(--face K, 0-{found - 1} from the left"):
        align.select_faces(dets, all_faces=False)


def test_group_photo_message_counts_what_all_faces_finds():
    require_asset("dlib-landmarks-68")
    photo = faces_dir() / "unaligned" / "00.jpg"
    n = len(align.align_file(photo, output_size=64, all_faces=True))
    with pytest.raises(StylerigError, match=f": {n} faces found"):
        align.align_file(photo, output_size=64)


def test_no_face_hint_suggests_only_what_can_help():
    assert "--upsample 2" in align.no_face_hint(1, (640, 480))
    assert "--upsample" not in align.no_face_hint(4, (640, 480)).split("(")[0] and "crop the photo" in align.no_face_hint(4, (640, 480))
    big = (12000, 9000)  # already searched as large as the memory bound allows from --upsample 3 on
    assert align.detection_plan(big, 4) == align.detection_plan(big, 3) != align.detection_plan(big, 2)
    assert "--upsample 3" in align.no_face_hint(2, big)
    assert "--upsample 4" not in align.no_face_hint(3, big) and "crop the photo" in align.no_face_hint(3, big)
    with pytest.raises(StylerigError) as info:
        align.select_faces([], all_faces=False, name="p.jpg", upsample=2, size=(640, 480))
    assert "--upsample 3" in str(info.value) and "--upsample 2 " not in str(info.value)


def test_interrupted_inversion_says_from_the_last_checkpoint():
    from stylerig_au.commands.invert import resume_note

    note = resume_note(Path("out"), 50)
    assert "last checkpoint (saved every 50 steps" in note and "where it stopped" not in note
    assert "from step 0" in resume_note(Path("out"), 0)


# ----------------------------------------------------------------------------- what a pasted-back photo keeps


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_save_photo_keeps_profile_and_alpha_and_names_what_it_drops(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    alpha = np.full((12, 10), 255, np.uint8)
    alpha[:3] = 0
    icc = _srgb_profile()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "in.png", icc_profile=icc)
    extras = imageio.load_extras(tmp_path / "in.png")
    assert extras.icc_profile == icc and np.array_equal(extras.alpha, alpha) and extras.deep is None
    assert imageio.save_photo(tmp_path / "out.png", rgb, extras) == []
    out = Image.open(tmp_path / "out.png")
    assert out.mode == "RGBA" and out.info["icc_profile"] == icc and np.array_equal(np.asarray(out)[..., 3], alpha)
    assert imageio.save_photo(tmp_path / "out.jpg", rgb, extras) == ["transparency"]
    assert Image.open(tmp_path / "out.jpg").info["icc_profile"] == icc
    assert imageio.save_photo(tmp_path / "out.bmp", rgb, extras) == ["colour profile", "transparency"]


def test_sixteen_bit_photo_round_trips(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "in16.png"), deep[..., ::-1])
    extras = imageio.load_extras(tmp_path / "in16.png")
    assert extras.deep is not None and np.array_equal(extras.deep, deep)
    icc = _srgb_profile()
    extras.icc_profile = icc
    assert imageio.save_photo(tmp_path / "out16.png", deep, extras) == []
    back = cv2.imread(str(tmp_path / "out16.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[..., ::-1], deep)
    assert Image.open(tmp_path / "out16.png").info["icc_profile"] == icc
    assert imageio.save_photo(tmp_path / "out16.jpg", deep, extras) == ["16-bit depth"]


def test_paste_back_into_sixteen_bits_leaves_the_rest_exact():
    rng = np.random.default_rng(2)
    photo16 = rng.integers(0, 65536, (80, 80, 3), dtype=np.uint16)
    quad = np.array([[20.0, 20.0], [20.0, 60.0], [60.0, 60.0], [60.0, 20.0]])
    t = align.FaceTransform(quad=quad, source_size=(80, 80), output_size=32)
    face = np.full((32, 32, 3), 255, np.uint8)
    out = align.paste_back(photo16, face, t)
    assert out.dtype == np.uint16 and np.array_equal(out[:15], photo16[:15])
    assert out[40, 40].min() > 60000  # the white face, at 16 bits


def test_edit_keeps_the_photo_profile_and_alpha(setup, tmp_path, capsys):  # noqa: F811
    """End to end on the tiny generator: the pasted-back PNG keeps the ICC profile and transparency; a .jpg
    keeps the profile and says in one warning line that the transparency is gone."""
    from skimage import data

    require_asset("dlib-landmarks-68")
    rgb = data.astronaut()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:40, :40] = 0
    icc = _srgb_profile()
    photo = tmp_path / "me.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(photo, icc_profile=icc)
    common = ["--au", "12=+1", *setup["args"], "--steps", "1", "--latent-dir", str(tmp_path / "latents")]
    assert main(["edit", str(photo), *common, "--out", str(tmp_path / "e.png")]) == 0
    out = Image.open(tmp_path / "e.png")
    assert out.mode == "RGBA" and out.info["icc_profile"] == icc and np.array_equal(np.asarray(out)[..., 3], alpha)
    capsys.readouterr()
    assert main(["edit", str(photo), *common, "--out", str(tmp_path / "e.jpg")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "does not keep the photo's transparency; write a .png to keep it" in err
    assert Image.open(tmp_path / "e.jpg").info["icc_profile"] == icc


# ----------------------------------------------------------------------------- detection memory


@pytest.mark.parametrize("size", [(12000, 9000), (4000, 3000), (640, 480), (100, 60000)])
def test_detection_plan_bounds_the_detector_image(size):
    w, h = size
    for upsample in range(5):
        scale, doublings = align.detection_plan(size, upsample)
        assert (w * scale * 2**doublings) * (h * scale * 2**doublings) <= align.DETECT_MAX_PIXELS * 1.0001
    assert align.detection_plan((640, 480), 1) == (1.0, 1)  # ordinary photos are searched as before


def test_detection_on_a_downscaled_copy_maps_boxes_back(monkeypatch):
    """With a tiny pixel bound the detector sees a small copy; boxes come back in full-resolution pixels."""
    seen = {}

    class Rect:
        def __init__(self, l, t, r, b):
            self.l, self.t, self.r, self.b = l, t, r, b

        def left(self): return self.l
        def top(self): return self.t
        def right(self): return self.r
        def bottom(self): return self.b

    class FakeDetector:
        def run(self, image, upsample, threshold):
            seen["shape"], seen["upsample"] = image.shape, upsample
            h, w = image.shape[:2]
            return [Rect(w // 4, h // 4, w // 2, h // 2)], [1.0], [0]

    monkeypatch.setattr(align, "_detector", lambda: FakeDetector())
    monkeypatch.setattr(align, "DETECT_MAX_PIXELS", 200 * 150)
    image = np.zeros((1500, 2000, 3), np.uint8)
    ((box, score),) = align.detect_faces(image, upsample=4)
    h, w = seen["shape"][:2]
    assert seen["upsample"] == 0 and (h * w) <= 200 * 150
    assert box == pytest.approx((500, 375, 1000, 750), abs=8)


# ----------------------------------------------------------------------------- more members of the classes


def test_outputs_that_are_devices_or_too_long_are_refused_up_front(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(StylerigError, match="is not a regular file"):
        fileio.check_writable(fifo)
    with pytest.raises(StylerigError, match="the file name is too long"):
        fileio.check_writable(tmp_path / ("x" * 240 + ".png"))
    fileio.check_writable(tmp_path / ("x" * 200 + ".png"))  # long but fine, temporary name included


def test_an_output_over_the_pixel_limit_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv(imageio.ENV_MAX_MEGAPIXELS, "0.0001")  # 100 pixels
    with pytest.raises(StylerigError, match="the result would be 20x20, 0 megapixels, over the limit"):
        imageio.save_image(tmp_path / "o.png", np.zeros((20, 20, 3), np.uint8))
    assert not (tmp_path / "o.png").exists()


def test_reading_back_a_large_output_needs_no_pillow_bomb_check(tmp_path, monkeypatch):
    """Our own outputs are read back whatever Pillow's bomb limit (here lowered so a 20x20 image trips it)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        imageio.save_image(tmp_path / "o.png", np.zeros((20, 20, 3), np.uint8), value_range=(0, 255))
        from stylerig_au.outputs import read_provenance

        assert read_provenance(tmp_path / "o.png") is None
    assert Image.MAX_IMAGE_PIXELS == 100  # put back


def test_damaged_json_caches_and_dataset_descriptions_are_one_line(tmp_path):
    from stylerig_au.samples import load_samples

    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "meta.json").write_text('{"format": "stylerig-au/au-samples", "chunk')  # cut short by a crash
    with pytest.raises(StylerigError) as info:
        load_samples(folder)
    assert str(info.value).startswith(f"{folder / 'meta.json'}: damaged dataset description (JSONDecodeError")
    (folder / "meta.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(StylerigError, match="damaged dataset description \\(UnicodeDecodeError"):
        load_samples(folder)
    (tmp_path / "cache.json").write_text("{not json")
    with pytest.raises(StylerigError, match="cache.json: damaged calibration cache .*; delete it to start over"):
        fileio.read_json(tmp_path / "cache.json", "calibration cache")
