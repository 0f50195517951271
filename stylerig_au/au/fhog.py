"""Felzenszwalb HOG (FHOG) in PyTorch, laid out exactly like dlib's ``extract_fhog_features``.

OpenFace 2.2 computes its AU appearance features with dlib's FHOG (cell size 8) on the 112×112
aligned face; this is our own batched implementation of the same arithmetic, differentiable with
respect to the image almost everywhere (the orientation bin and the chosen colour channel are
piecewise constant; the magnitudes, normalisation and clipping carry the gradient).

Per cell, 31 features: 18 contrast-sensitive orientations, 9 contrast-insensitive orientations
and 4 texture (gradient energy) features. The one-cell border of the grid is dropped, as dlib
does, so a 112×112 image gives 12×12 cells.
"""

from __future__ import annotations

import torch

NUM_FEATURES = 31
_EPS = 1e-4
_CLIP = 0.2
_TEXTURE = 0.2357
# Unit vectors of the 9 orientations (0°, 20°, ... 160°) rounded to 4 decimals, as in Felzenszwalb's
# reference code and dlib; the rounding decides near-boundary gradients, so keep it.
_UU = (1.0, 0.9397, 0.7660, 0.5, 0.1736, -0.1736, -0.5, -0.7660, -0.9397)
_VV = (0.0, 0.3420, 0.6428, 0.8660, 0.9848, 0.9848, 0.8660, 0.6428, 0.3420)


def fhog_grid(height: int, width: int, cell_size: int = 8) -> tuple[int, int]:
    """Number of (rows, cols) of FHOG cells dlib returns for an image of this size."""
    cells_r = int(height / cell_size + 0.5)
    cells_c = int(width / cell_size + 0.5)
    return max(cells_r - 2, 0), max(cells_c - 2, 0)


def _vote_weights(n_pixels: int, cell_size: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """For interior pixels 1..n_pixels: index of the lower padded cell, and the (lower, upper) weights."""
    pos = torch.arange(1, 1 + n_pixels, dtype=torch.float64)
    p = (pos + 0.5) / cell_size - 0.5
    lo = torch.floor(p)
    frac = p - lo
    return (lo.long() + 1).to(device), ((1.0 - frac).to(device, dtype), frac.to(device, dtype))


def _strongest_channel(mag2: torch.Tensor, vis_c: int) -> torch.Tensor:
    """Index [B, 1, Y, X] of the RGB channel with the largest squared gradient, with dlib's tie rules.

    dlib's vectorised loop (4 columns at a time) prefers blue, then green, then red on ties; the
    scalar loop that finishes the last columns prefers red, then green, then blue.
    """
    x = 1
    while x < vis_c - 7:  # matches dlib's vectorised loop bound (checked against dlib, sizes 8k × 8k)
        x += 4
    n_simd = x - 1  # interior columns 1..x-1 go through the vectorised loop
    r, g, bl = mag2[:, 0], mag2[:, 1], mag2[:, 2]
    red_first = torch.where(bl > torch.maximum(r, g), 2, torch.where(g > r, 1, 0))
    blue_first = torch.where(r > torch.maximum(g, bl), 0, torch.where(g > bl, 1, 2))
    col = torch.arange(mag2.shape[-1], device=mag2.device)
    return torch.where(col < n_simd, blue_first, red_first).unsqueeze(1)


def fhog(image: torch.Tensor, cell_size: int = 8) -> torch.Tensor:
    """FHOG features of a batch of images.

    Args:
        image: float [B, C, H, W] with C = 1 or 3 (RGB), values on the 0–255 scale (dlib reads
            uint8 pixels; feed rounded values for bit-level agreement).
        cell_size: pixels per cell side.

    Returns:
        float [B, R, Cc, 31] (same dtype as ``image``), R, Cc = :func:`fhog_grid` (H, W).
    """
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f"fhog expects [B, 1|3, H, W], got {tuple(image.shape)}")
    b, _, h, w = image.shape
    cells_r = int(h / cell_size + 0.5)
    cells_c = int(w / cell_size + 0.5)
    hog_r, hog_c = max(cells_r - 2, 0), max(cells_c - 2, 0)
    if hog_r == 0 or hog_c == 0:
        return image.new_zeros(b, hog_r, hog_c, NUM_FEATURES)
    vis_r = min(cells_r * cell_size, h) - 1
    vis_c = min(cells_c * cell_size, w) - 1

    # central differences on interior pixels 1..vis-1
    gx = image[:, :, 1:vis_r, 2 : vis_c + 1] - image[:, :, 1:vis_r, 0 : vis_c - 1]
    gy = image[:, :, 2 : vis_r + 1, 1:vis_c] - image[:, :, 0 : vis_r - 1, 1:vis_c]
    mag2 = gx * gx + gy * gy
    if image.shape[1] == 3:
        best = _strongest_channel(mag2.detach(), vis_c)
    else:
        best = torch.zeros_like(mag2, dtype=torch.long)
    gx = gx.gather(1, best)[:, 0]
    gy = gy.gather(1, best)[:, 0]
    mag2 = mag2.gather(1, best)[:, 0]
    mag = torch.where(mag2 > 0, mag2.clamp_min(1e-12).sqrt(), torch.zeros_like(mag2))

    # snap to one of 18 signed orientations; candidate order d0, -d0, d1, -d1, ... with first-max wins
    with torch.no_grad():  # dlib's loop: best starts at 0, then d_o and -d_o in turn, strictly greater wins
        gxd, gyd = gx.detach(), gy.detach()
        best = torch.zeros_like(gxd)
        bins = torch.zeros(gxd.shape, dtype=torch.long, device=gxd.device)
        for o in range(9):
            dot = gxd * _UU[o] + gyd * _VV[o]
            for value, label in ((dot, o), (-dot, o + 9)):
                better = value > best
                best = torch.where(better, value, best)
                bins.masked_fill_(better, label)

    # each pixel votes its magnitude into its bin of the 4 nearest cells (bilinear in position)
    r2, c2 = cells_r + 2, cells_c + 2
    iy, wy = _vote_weights(vis_r - 1, cell_size, image.dtype, image.device)
    ix, wx = _vote_weights(vis_c - 1, cell_size, image.dtype, image.device)
    hist = image.new_zeros(b, 18 * r2 * c2)
    base = bins * (r2 * c2)
    for dy in (0, 1):
        for dx in (0, 1):
            idx = base + (iy + dy)[:, None] * c2 + (ix + dx)[None, :]
            val = mag * (wy[dy][:, None] * wx[dx][None, :])
            hist = hist.scatter_add(1, idx.flatten(1), val.flatten(1))
    hist = hist.view(b, 18, r2, c2)[:, :, 1:-1, 1:-1]  # [B, 18, cells_r, cells_c]

    energy = ((hist[:, :9] + hist[:, 9:]) ** 2).sum(1)  # [B, cells_r, cells_c]
    blocks = energy[:, :-1, :-1] + energy[:, 1:, :-1] + energy[:, :-1, 1:] + energy[:, 1:, 1:]
    inv = (blocks + _EPS).rsqrt()
    # the four 2×2 blocks that contain each kept cell (cell (y+1, x+1) of the full grid)
    norms = torch.stack(
        [inv[:, 1 : hog_r + 1, 1 : hog_c + 1], inv[:, 0:hog_r, 1 : hog_c + 1], inv[:, 1 : hog_r + 1, 0:hog_c], inv[:, 0:hog_r, 0:hog_c]],
        dim=1,
    )  # [B, 4, R, C]
    centre = hist[:, :, 1 : hog_r + 1, 1 : hog_c + 1]  # [B, 18, R, C]

    h_sens = torch.clamp_max(centre.unsqueeze(1) * norms.unsqueeze(2), _CLIP)  # [B, 4, 18, R, C]
    sens = 0.5 * h_sens.sum(1)
    texture = _TEXTURE * h_sens.sum(2)  # [B, 4, R, C]
    unsigned = centre[:, :9] + centre[:, 9:]
    insens = 0.5 * torch.clamp_max(unsigned.unsqueeze(1) * norms.unsqueeze(2), _CLIP).sum(1)
    feats = torch.cat([sens, insens, texture], dim=1)  # [B, 31, R, C]
    return feats.permute(0, 2, 3, 1).contiguous()
