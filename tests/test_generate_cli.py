"""``stylerig-au generate`` with a tiny StyleGAN2 checkpoint: files, determinism, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stylerig_au.cli import main
from stylerig_au.commands.generate import parse_seeds, seed_grid
from stylerig_au.edit import media
from stylerig_au.errors import StylerigError
from stylerig_au.models.checkpoints import save_stylegan2

from .helpers import require_asset


@pytest.fixture
def tiny_ckpt(tiny_stylegan2, tmp_path):
    return save_stylegan2(tiny_stylegan2, tmp_path / "tiny.pt")


def test_generate_writes_images_and_grid(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["generate", "--seeds", "0-4", "--psi", "0.7", "--out", str(out), "--generator", str(tiny_ckpt),
            "--device", "cpu", "--batch", "2"]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png"] + [f"seed{s:04d}.png" for s in range(5)]
    first = np.asarray(Image.open(out / "seed0000.png"))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8 and first.std() > 0
    grid = np.asarray(Image.open(out / "grid.png"))
    top = media.header_height(32)  # each row of faces under a band of 'seed N' labels
    assert grid.shape == (2 * (top + 40), 3 * 36 + 4, 3)  # 5 images -> 3 columns, 2 rows of 32 px + 4 px pads
    assert np.array_equal(grid[top + 4:top + 36, 4:36], first)
    assert grid[:top].min() < 100  # label text
    assert "wrote 5 image(s)" in capsys.readouterr().out

    # same seed, same image (also across batch sizes); another seed differs
    again = tmp_path / "again"
    assert main(["generate", "--seeds", "0,3", "--out", str(again), "--generator", str(tiny_ckpt), "--no-grid",
                 "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(again / "seed0000.png")), first)
    assert not np.array_equal(np.asarray(Image.open(again / "seed0003.png")), first)
    assert not (again / "grid.png").exists()


@pytest.mark.parametrize("seeds, message", [("7-3", "end is below the start"), ("a-b", "bad seed list"),
                                            ("0-4294967296", "too large")])
def test_bad_seeds_exit_1_with_one_line(seeds, message, tiny_ckpt, tmp_path, capsys):
    assert main(["generate", "--seeds", seeds, "--out", str(tmp_path / "o"), "--generator", str(tiny_ckpt)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_missing_generator_path_exits_1(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "o"), "--generator", str(tmp_path / "nope.pkl")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_parse_seeds_and_grid():
    assert parse_seeds("0-3,10, 2") == [0, 1, 2, 3, 10]
    assert parse_seeds("5") == [5]
    with pytest.raises(StylerigError):
        parse_seeds("")
    grid = seed_grid(np.zeros((3, 4, 4, 3), dtype=np.uint8), [7, 8, 9])
    cell, top = 4, media.header_height(4)
    assert grid.shape == (2 * (top + cell + 8), 2 * (cell + 4) + 4, 3)  # 3 images -> 2 columns, 2 rows
    second_row = top + cell + 8 + top + 4
    assert grid[second_row:second_row + cell, cell + 8:].min() == 255  # the missing fourth tile stays white
    assert grid[second_row:second_row + cell, 4:4 + cell].max() == 0


@pytest.mark.slow
def test_generate_with_the_default_generator(tmp_path):
    require_asset("mobilestylegan-ffhq-1024")
    assert main(["generate", "--seeds", "1", "--out", str(tmp_path), "--device", "cpu"]) == 0
    img = np.asarray(Image.open(tmp_path / "seed0001.png"))
    assert img.shape == (1024, 1024, 3) and 40 < img.mean() < 220 and img.std() > 20
