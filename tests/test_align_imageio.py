"""Image loading for alignment: EXIF orientation, RGBA, grayscale, 16-bit; saving and grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au import imageio
from stylerig_au.errors import StylerigError


def _pattern(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    img = _pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.png"
    Image.fromarray(img).save(path, exif=exif)
    loaded = imageio.load_image(path)
    assert loaded.shape == (30, 20, 3)
    assert np.array_equal(loaded, np.rot90(img, k=-1))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = imageio.load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()


def test_grayscale_and_16_bit(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = imageio.load_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    g16 = (gray.astype(np.uint16) * 257)
    Image.frombytes("I;16", (8, 8), g16.astype("<u2").tobytes()).save(tmp_path / "g16.png")
    out16 = imageio.load_image(tmp_path / "g16.png")
    assert out16.dtype == np.uint8 and np.array_equal(out16[..., 1], gray)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(StylerigError, match="missing.png"):
        imageio.load_image(tmp_path / "missing.png")
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(StylerigError, match="x.png"):
        imageio.load_image(tmp_path / "x.png")


def test_save_image_from_tensor_and_atomic(tmp_path):
    t = torch.linspace(-1, 1, 3 * 4 * 5).view(1, 3, 4, 5)
    path = imageio.save_image(tmp_path / "t.png", t)
    back = imageio.load_image(path)
    assert back.shape == (4, 5, 3) and back.min() == 0 and back.max() == 255
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temp file left
    with pytest.raises(StylerigError):
        imageio.save_image(tmp_path / "t.xyz", t)
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]


def test_atomic_path_removes_partial_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with imageio.atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_make_grid_layout():
    grid = imageio.make_grid([_pattern(), _pattern(40, 10), _pattern()], ncols=2, cell=16, pad=2)
    assert grid.shape == (2 * 18 + 2, 2 * 18 + 2, 3) and grid.dtype == np.uint8


def test_batch_to_uint8_clips_and_rounds():
    batch = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).repeat(2, 3, 1, 1)
    out = imageio.batch_to_uint8(batch)
    assert out.dtype == np.uint8 and out.shape == (2, 1, 5, 3)
    assert out[1, 0, :, 0].tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds half to even
    with pytest.raises(StylerigError, match=r"\[N, 3, H, W\]"):
        imageio.batch_to_uint8(torch.zeros(3, 4, 4))
