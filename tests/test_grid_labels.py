"""Labelled grids (stylerig_au.edit.media): captions, AU/value labels, legible text, and the writers that use them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au.edit import LinearDirections, media
from stylerig_au.errors import StylerigError


def _dark_rows(band: np.ndarray) -> np.ndarray:
    """Indices of the rows of an RGB band that hold dark (text) pixels."""
    return np.flatnonzero((band.min(axis=2) < 100).any(axis=1))


def test_label_texts():
    assert media.au_label(12, cell=256) == "AU12\nLip\nCorner Puller"
    assert media.au_label(12, cell=64) == "AU12"
    assert [media.value_label(v) for v in (-2, -0.5, 0, 1.5)] == ["-2", "-0.5", "0", "+1.5"]


@pytest.mark.parametrize("cell", [32, 128, 256])
def test_labels_are_legible_at_every_cell_size(cell):
    """Text is at least MIN_FONT_PX high, and a two-line header is tall enough for both lines."""
    assert media.font_px(cell) >= media.MIN_FONT_PX == 14
    assert media.header_height(cell, 2) >= 2 * media.font_px(cell)
    grid = media.captioned_grid([np.zeros((cell, cell, 3), np.uint8)], ["Ag\nAU12 +2"], cell=cell)
    top = media.header_height(cell, 2)
    rows = _dark_rows(grid[:top])
    assert rows.size and rows[-1] - rows[0] + 1 >= 2 * 10  # two lines of letters ~10+ px high
    assert rows[0] > 0 and rows[-1] < top - 1  # inside the band, not clipped


def test_captioned_grid_layout_and_blank_filler():
    cell, pad = 40, 4
    tiles = [np.full((cell, cell, 3), v, np.uint8) for v in (0, 60, 120)]
    grid = media.captioned_grid(tiles, ["one", "two\nlines", "three"], ncols=2, cell=cell, pad=pad)
    top = media.header_height(cell, 2)  # every row's band fits the tallest caption
    band = top + cell + 2 * pad
    assert grid.shape == (2 * band, 2 * (cell + pad) + pad, 3)
    assert np.array_equal(grid[top + pad:top + pad + cell, pad:pad + cell], tiles[0])
    assert np.array_equal(grid[band + top + pad:band + top + pad + cell, pad:pad + cell], tiles[2])
    right = slice(cell + 2 * pad, 2 * cell + 2 * pad)
    assert _dark_rows(grid[:top, right]).size  # caption "two\nlines" over the second tile
    assert grid[band:, right].min() == 255  # the filler tile and its empty caption stay white
    with pytest.raises(StylerigError, match="captions"):
        media.captioned_grid(tiles, ["a"], cell=cell)


def test_labelled_grid_row_and_column_labels():
    cell = 48
    rows = [[np.zeros((cell, cell, 3), np.uint8)] * 2] * 2
    grid = media.labelled_grid(rows, [media.au_label(4, cell), media.au_label(12, cell)], ["-2", "+2"], cell=cell)
    left, top = media.label_width(cell), media.header_height(cell)
    assert grid.shape == (top + 2 * (cell + 4) + 4, left + 2 * (cell + 4) + 4, 3)
    assert _dark_rows(grid[:top, left:]).size and _dark_rows(grid[top:, :left]).size


def test_learn_directions_preview_is_labelled(tiny_stylegan2, tmp_path):
    from stylerig_au.edit.card import write_preview

    G = tiny_stylegan2
    g = torch.Generator().manual_seed(0)
    directions = LinearDirections({au: torch.randn(G.w_dim, generator=g) for au in (4, 12)}, slots=G.slots, generator=G.name)
    ws = G.mapping(torch.randn(1, G.z_dim, generator=g)).unsqueeze(1).repeat(1, G.num_ws, 1)
    path = write_preview(G, directions, tmp_path / "p.png", ws, values=(-2, 0, 2), cell=32)
    grid = np.asarray(Image.open(path).convert("RGB"))
    left, top = media.label_width(32), media.header_height(32)
    assert grid.shape == (top + 2 * 36 + 4, left + 3 * 36 + 4, 3)  # 2 AUs x 3 values, labelled
    assert _dark_rows(grid[:top, left:]).size and _dark_rows(grid[top:, :left]).size
