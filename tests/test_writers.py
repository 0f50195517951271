"""Every writer verifies what it wrote before the atomic rename: a full disk (simulated by a writer that
fails or truncates) leaves the old good file untouched, no temporary file, and one ``error:`` line."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au import fileio, imageio
from stylerig_au.cli import main
from stylerig_au.edit import media
from stylerig_au.errors import StylerigError
from stylerig_au.invert import save_latent
from tests.test_edit_cli import latent_record, setup  # noqa: F401 - the tiny-generator CLI fixture

GOOD = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)


def _truncating(save):
    """A writer that stops half-way, silently, as OpenCV's does on a full disk."""
    def wrapper(*args, **kwargs):
        out = save(*args, **kwargs)
        target = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, (str, type(fileio.Path()))))
        data = fileio.Path(target).read_bytes()
        fileio.Path(target).write_bytes(data[: len(data) // 2])
        return out
    return wrapper


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _only_the_old_file(folder, name, before: bytes) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [name]  # no temporary file left behind
    assert (folder / name).read_bytes() == before


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
@pytest.mark.parametrize("failure", ["truncate", "disk-full"])
def test_save_image_never_replaces_a_good_file_with_a_broken_one(tmp_path, monkeypatch, suffix, failure):
    path = imageio.save_image(tmp_path / f"x{suffix}", GOOD)
    before = path.read_bytes()
    save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", _truncating(save) if failure == "truncate" else _disk_full)
    with pytest.raises(StylerigError) as info:
        imageio.save_image(path, 255 - GOOD)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "the existing file is unchanged" in message
    assert ("No space left" in message) if failure == "disk-full" else ("does not read back" in message)
    _only_the_old_file(tmp_path, path.name, before)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_animation_writers_verify_their_files(tmp_path, monkeypatch, suffix):
    if suffix == ".mp4":
        cv2 = pytest.importorskip("cv2")
    frames = [np.full((20, 30, 3), 10 * k, np.uint8) for k in range(6)]
    path = media.write_animation(tmp_path / f"a{suffix}", frames, fps=8)
    before = path.read_bytes()
    if suffix == ".gif":
        monkeypatch.setattr(Image.Image, "save", _truncating(Image.Image.save))
    else:
        real = cv2.VideoWriter

        class FullDiskWriter:  # OpenCV's writer on a full disk: every write 'succeeds', the file stays short
            def __init__(self, file, *args):
                self.file, self.inner = file, real(file, *args)

            def isOpened(self):  # noqa: N802 - OpenCV's name
                return self.inner.isOpened()

            def write(self, frame):
                pass

            def release(self):
                self.inner.release()

        monkeypatch.setattr(cv2, "VideoWriter", FullDiskWriter)
    with pytest.raises(StylerigError, match="does not read back.*the existing file is unchanged"):
        media.write_animation(path, frames, fps=8)
    _only_the_old_file(tmp_path, path.name, before)


def test_a_still_gif_verifies(tmp_path):
    """Pillow merges identical frames into one longer frame: the check counts play time, not frames."""
    still = [np.full((8, 8, 3), 50, np.uint8)] * 5
    path = media.write_animation(tmp_path / "still.gif", still, fps=10)
    imageio.check_image_file(path, (8, 8), duration_ms=500)


def test_cli_animate_on_a_full_disk_exits_1_and_keeps_the_old_mp4(setup, tmp_path, monkeypatch, capsys):  # noqa: F811
    cv2 = pytest.importorskip("cv2")
    out = tmp_path / "x.mp4"
    argv = ["animate", str(setup["latent"]), "--au", "12=+2", "--frames", "3", "--size", "0", *setup["args"], "--out", str(out)]
    assert main(argv) == 0
    before = out.read_bytes()
    real = cv2.VideoWriter
    monkeypatch.setattr(cv2, "VideoWriter", lambda file, *a: real(file, *a[:1], a[1], (a[2][0] * 2, a[2][1])))  # wrong size
    capsys.readouterr()
    assert main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # past tqdm's bar
    assert len(errors) == 1 and errors[0].startswith(f"error: {out}: the written file does not read back"), errors
    assert out.read_bytes() == before


def test_torch_files_and_text_are_verified(tmp_path, monkeypatch):
    path = fileio.atomic_torch_save(tmp_path / "x.pt", {"a": torch.arange(1000)})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _truncating(torch.save))
    with pytest.raises(StylerigError, match="does not read back"):
        fileio.atomic_torch_save(path, {"a": torch.zeros(1000)})
    _only_the_old_file(tmp_path, "x.pt", before)
    text = fileio.atomic_write_text(tmp_path / "t.json", "{}")
    monkeypatch.setattr(fileio.Path, "write_text", _disk_full)
    with pytest.raises(StylerigError, match="t.json: could not be written \\(No space left on device\\)"):
        fileio.atomic_write_text(text, '{"new": 1}')
    assert text.read_text() == "{}"


def test_a_diverged_latent_is_never_written(tiny_stylegan2, tmp_path):
    record = latent_record(tiny_stylegan2)
    record["ws"][0, 0] = float("nan")
    with pytest.raises(StylerigError, match="diverged"):
        save_latent(tmp_path / "face.pt", record)
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_render_is_never_saved(tmp_path):
    bad = torch.zeros(3, 8, 8)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(StylerigError, match="non-finite pixel values"):
        imageio.save_image(tmp_path / "x.png", bad)
    with pytest.raises(StylerigError, match="non-finite pixel values"):
        imageio.batch_to_uint8(bad[None])
    assert list(tmp_path.iterdir()) == []


def test_result_json_puts_each_row_on_one_line_and_round_trips():
    import json

    from stylerig_au.fileio import result_json

    result = {"summary": {"error": 0.5}, "rows": [{"au": 12, "achieved": 1.5, "changes": {"6": 0.1}}, {"au": 4, "achieved": -0.2}]}
    text = result_json(result)
    assert json.loads(text) == result and text.endswith("\n")
    assert '  {"au":12,"achieved":1.5,"changes":{"6":0.1}},\n' in text
    assert json.loads(result_json({"rows": []})) == {"rows": []} and json.loads(result_json({"a": 1})) == {"a": 1}
