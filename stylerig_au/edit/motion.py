"""Motion-transfer rendering: show an edit as the unedited face, moved the way the edit moves it.

Every edit of the generator's latent that reaches +2 also changes texture: OpenFace (and the student
distilled from it) reads a beard as lip and chin action, ageing skin as AU10, glasses as AU4, so
detector-supervised edits grow them. Locality (:mod:`stylerig_au.edit.local`) keeps that texture out
of the rest of the picture, not out of the AU's own region.

Here the edit is used for its geometry only. The 68 landmarks of the unedited render and of the
edited render (found in the same face box, so their difference is motion, not detector jitter from a
new box) give a displacement at each landmark; a thin-plate spline spreads it over the face, the AUs'
region mask (:func:`stylerig_au.edit.local.region_mask`) fades it to zero outside, and the unedited
image is resampled along it. Skin, beard, glasses, age and make-up are those of the unedited face by
construction. What a warp cannot make (the inside of a mouth that opens, eyes that open wider) is
taken from the edited render inside the edited face's inner-lip and eye outlines.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.interpolate import RBFInterpolator

from stylerig_au.edit.local import FaceMarks  # found by stylerig_au.edit.local.find_face
from stylerig_au.errors import StylerigError

FLOW_SIDE = 128  # the spline is evaluated on this grid and upsampled (it is smooth at this scale)
# What a warp of the unedited face cannot show, as landmark outlines taken from the edited render
INTERIORS = {"mouth": (tuple(range(60, 68)),), "eyes": (tuple(range(36, 42)), tuple(range(42, 48)))}
# the spline's smoothing, in squared IOD: absorbs the landmark predictor's sub-pixel jitter
SMOOTHING_IOD2 = 1e-4
MIN_JACOBIAN = 0.3  # the motion may squash area to 30 %, no further (see limit_folding)


def marks_in_box(image: np.ndarray, face: FaceMarks) -> np.ndarray:
    """Landmarks float64 [68, 2] of uint8 [H, W, 3] ``image`` fitted in ``face``'s box (no new detection)."""
    from stylerig_au.align import landmarks68

    return landmarks68(np.ascontiguousarray(image), face.box)


def _iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))


def backward_flow(base: np.ndarray, edited: np.ndarray, size: int, image_size: int) -> np.ndarray:
    """Where each pixel of the edited picture comes from in the unedited one.

    Args:
        base, edited: float [68, 2] landmarks of the unedited and the edited face, pixels of an
            ``image_size``² image.
        size: side of the returned grid.

    Returns:
        float32 [size, size, 2]: displacement (x, y) in image pixels, to add to each grid point's
        position (the centre of its cell in image pixels) to find its source in the unedited image.
        The corners and edge midpoints of the image are pinned (no displacement there).
    """
    base, edited = np.asarray(base, np.float64), np.asarray(edited, np.float64)
    if base.shape != (68, 2) or edited.shape != (68, 2):
        raise StylerigError(f"motion transfer needs two sets of 68 landmarks, got {base.shape} and {edited.shape}")
    r = float(image_size)
    pins = np.array([[0, 0], [r, 0], [0, r], [r, r], [r / 2, 0], [r / 2, r], [0, r / 2], [r, r / 2]])
    points = np.concatenate([edited, pins])
    values = np.concatenate([base - edited, np.zeros_like(pins)])
    smoothing = SMOOTHING_IOD2 * _iod(base) ** 2
    spline = RBFInterpolator(points, values, kernel="thin_plate_spline", smoothing=smoothing)
    centres = (np.arange(size) + 0.5) * (r / size)
    gx, gy = np.meshgrid(centres, centres)
    return spline(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(size, size, 2).astype(np.float32)


def jacobian_determinant(flow: np.ndarray, image_size: int) -> np.ndarray:
    """det(I + ∇u) float [S, S] of the backward map x -> x + u(x) of a flow [S, S, 2] (pixels of an
    ``image_size``² image): below 0 the map folds (content doubles back), near 0 it squashes."""
    step = image_size / flow.shape[0]
    dux_dy, dux_dx = np.gradient(flow[..., 0], step)
    duy_dy, duy_dx = np.gradient(flow[..., 1], step)
    return (1 + dux_dx) * (1 + duy_dy) - dux_dy * duy_dx


def limit_folding(flow: np.ndarray, image_size: int, min_det: float = MIN_JACOBIAN) -> tuple[np.ndarray, float]:
    """The flow scaled down (as a whole) until its map nowhere squashes area below ``min_det``.

    Returns (flow [S, S, 2], the scale kept in [0, 1]). A landmark motion that would cross the lids of an
    eye or the lips swirls the picture; shortening the motion keeps it a plain deformation."""
    if jacobian_determinant(flow, image_size).min() >= min_det:
        return flow, 1.0
    low, high = 0.0, 1.0
    for _ in range(12):  # bisection: the determinant at scale 0 is 1
        mid = (low + high) / 2
        if jacobian_determinant(flow * mid, image_size).min() >= min_det:
            low = mid
        else:
            high = mid
    return flow * low, low


def interior_mask(edited: np.ndarray, size: int, image_size: int, feather: float = 0.03,
                  interiors: Iterable[str] = tuple(INTERIORS)) -> np.ndarray:
    """Soft mask float32 [size, size] in [0, 1] of the edited face's ``interiors`` (names of :data:`INTERIORS`:
    the inner mouth, the eyes), feathered by ``feather`` inter-ocular distances."""
    edited = np.asarray(edited, np.float64)
    outlines = []
    for name in interiors:
        if name not in INTERIORS:
            raise StylerigError(f"unknown interior {name!r}; choose from: {', '.join(INTERIORS)}")
        outlines.extend(INTERIORS[name])
    scale = size / float(image_size)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for outline in outlines:
        draw.polygon([tuple(p) for p in edited[list(outline)] * scale], fill=255)
    inside = np.asarray(canvas) > 0
    if not inside.any():
        return np.zeros((size, size), np.float32)
    dist = ndimage.distance_transform_edt(~inside) / max(_iod(edited) * scale * feather, 1e-6)
    return np.clip(1.0 - dist, 0.0, 1.0).astype(np.float32)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample images [N, C, R, R] along a backward flow [N, R', R', 2] (pixels; upsampled to R).

    Returns [N, C, R, R] of the same dtype; points that fall outside take the border pixel."""
    n, _, h, w = image.shape
    if flow.shape[1:3] != (h, w):
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
        flow = flow.permute(0, 2, 3, 1)  # values are image pixels already: only the grid is resized
    ys = (torch.arange(h, dtype=flow.dtype, device=flow.device) + 0.5)
    xs = (torch.arange(w, dtype=flow.dtype, device=flow.device) + 0.5)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    sx = (gx[None] + flow[..., 0]) / w * 2 - 1
    sy = (gy[None] + flow[..., 1]) / h * 2 - 1
    grid = torch.stack([sx, sy], -1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def transfer_motion(base_image: torch.Tensor, edited_image: torch.Tensor, base_marks: np.ndarray,
                    edited_marks: np.ndarray, aus: Iterable[int], gain: float = 1.0,
                    interiors: Iterable[str] = tuple(INTERIORS)) -> torch.Tensor:
    """The unedited face moved as the edit moves it, inside the AUs' region.

    Args:
        base_image, edited_image: float [1, 3, R, R] in [-1, 1], the unedited and the edited render.
        base_marks, edited_marks: float [68, 2] landmarks of each (continuous pixels of the R² image,
            fitted in the same face box: :func:`marks_in_box`).
        aus: the edit's AUs; their region (:func:`~stylerig_au.edit.local.region_mask`) bounds the motion.
        gain: scales the landmark motion (1: as the edit moved them).
        interiors: which parts (:data:`INTERIORS`) are taken from the edited render.

    Returns:
        float [1, 3, R, R]: the warped unedited image, with the edited render inside the edited face's
        inner mouth and eyes (within the region).
    """
    from stylerig_au.edit.local import region_mask

    if base_image.shape != edited_image.shape or base_image.ndim != 4 or base_image.shape[0] != 1:
        raise StylerigError(f"motion transfer takes two [1, 3, R, R] images, got {list(base_image.shape)} "
                            f"and {list(edited_image.shape)}")
    if not np.isfinite(gain) or gain < 0:
        raise StylerigError(f"the motion gain must be a finite number ≥ 0, got {gain}")
    size = base_image.shape[-1]
    base_marks = np.asarray(base_marks, np.float64)
    target = base_marks + gain * (np.asarray(edited_marks, np.float64) - base_marks)
    region = region_mask(base_marks, aus, FLOW_SIDE, size)
    flow, _ = limit_folding(backward_flow(base_marks, target, FLOW_SIDE, size) * region[..., None], size)
    device = base_image.device
    moved = warp(base_image.float(), torch.from_numpy(flow)[None].to(device))
    region_full = torch.from_numpy(region_mask(base_marks, aus, 256, size))[None, None].to(device)
    interior = torch.from_numpy(interior_mask(target, 256, size, interiors=tuple(interiors)))[None, None].to(device)
    take_edit = F.interpolate(interior * region_full, size=(size, size), mode="bilinear", align_corners=False)
    edited = edited_image.float()
    if gain != 1.0:  # the edited render's interiors, moved on to the scaled landmarks
        follow, _ = limit_folding(backward_flow(np.asarray(edited_marks, np.float64), target, FLOW_SIDE, size)
                                  * region[..., None], size)
        edited = warp(edited, torch.from_numpy(follow)[None].to(device))
    return torch.lerp(moved, edited, take_edit)

