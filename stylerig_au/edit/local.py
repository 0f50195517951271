"""Local edits: keep an edit inside the face region its AUs move, by blending inside the generator.

An edit in W+ changes the whole picture: a lip-corner edit also moves the hair, ages the skin or grows
a beard, because the generator's styles are global. Compositing the edited image over the unedited one
afterwards leaves seams and patches. Here the unedited and the edited latents are rendered together,
and after every synthesis block from ``from_resolution`` up the edited branch's features are pulled
back to the unedited branch's outside the AU's region::

    features_edit <- mask · features_edit + (1 − mask) · features_base

so the layers above each blend re-render the seam, and outside the region the picture is the unedited
one. The region of each AU is built from the 68 dlib landmarks of the unedited face (:data:`AU_REGIONS`:
brows and forehead for AU1/2/4, eyes for AU5/7/45, eyes and cheeks for AU6, nose for AU9, the mouth,
cheeks and chin for the lower-face AUs, with room below the chin for AU26).

Works with any generator that lists its feature layers (``G.feature_layers()``: ``[(module,
resolution)]`` whose outputs carry the whole spatial state after that resolution).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from stylerig_au.errors import StylerigError

MASK_SIDE = 256  # masks are drawn at this size and resized to each feature map (area-averaged)
DEFAULT_FROM_RESOLUTION = 16


@dataclass(frozen=True)
class Region:
    """A face region as the convex hull of some of the 68 landmarks, shifted points included.

    Attributes:
        points: landmark indices (0-based dlib order) whose hull is the region.
        up: extra copies of ``up_points`` moved up the face by this many inter-ocular distances (IOD),
            e.g. the forehead above the brows.
        up_points: which landmarks ``up`` moves (default: ``points``).
        down: copies of ``down_points`` moved down the face by this many IOD (room for a lowered jaw).
        down_points: which landmarks ``down`` moves.
    """

    points: tuple[int, ...]
    up: float = 0.0
    up_points: tuple[int, ...] = ()
    down: float = 0.0
    down_points: tuple[int, ...] = ()


_BROWS = tuple(range(17, 27))
_EYES = tuple(range(36, 48))
_NOSE = tuple(range(27, 36))
_MOUTH = tuple(range(48, 68))
_LOWER_FACE = _MOUTH + (31, 32, 33, 34, 35) + tuple(range(3, 14))
_UPPER_FACE = Region(_BROWS + _EYES + (27, 28), up=0.55, up_points=_BROWS)

AU_REGIONS: dict[int, Region] = {
    1: _UPPER_FACE, 2: _UPPER_FACE, 4: _UPPER_FACE,
    5: Region(_BROWS + _EYES), 7: Region(_BROWS + _EYES), 45: Region(_BROWS + _EYES),
    6: Region(_EYES + _BROWS + (1, 2, 3, 13, 14, 15, 29, 30, 31, 35)),
    9: Region(_NOSE + (20, 21, 22, 23, 39, 42) + tuple(range(48, 55))),
    10: Region(_NOSE[3:] + tuple(range(48, 55)) + tuple(range(60, 65)) + (2, 3, 13, 14)),
    12: Region(_LOWER_FACE), 14: Region(_LOWER_FACE), 15: Region(_LOWER_FACE), 20: Region(_LOWER_FACE),
    23: Region(_LOWER_FACE), 25: Region(_LOWER_FACE), 17: Region(_LOWER_FACE),
    26: Region(_LOWER_FACE, down=0.3, down_points=tuple(range(4, 13))),
}


def _face_axes(landmarks: np.ndarray) -> tuple[float, np.ndarray]:
    """(IOD in pixels, unit vector pointing up the face) of landmarks [68, 2]."""
    right_eye, left_eye = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    iod = float(np.linalg.norm(left_eye - right_eye))
    up = (right_eye + left_eye) / 2 - (landmarks[48] + landmarks[54]) / 2
    return iod, up / max(float(np.linalg.norm(up)), 1e-6)


DETECT_SIDE = 512  # renders are searched for their face at this size (the landmarks are fitted at full size)


@dataclass(frozen=True)
class FaceMarks:
    """A rendered face's dlib box and 68 landmarks, found once and reused for each of its edits.

    Attributes:
        box: (left, top, right, bottom) dlib face box in image pixels.
        landmarks: float64 [68, 2] (x, y), continuous pixel coordinates (pixel centres at +0.5), the frame
            :func:`region_mask` takes.
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray


def find_face(image: np.ndarray) -> FaceMarks | None:
    """The most confident face of a rendered uint8 [H, W, 3] image (dlib, searched at ≤ 512 px), or None."""
    from stylerig_au.align import detect_faces, landmarks68

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StylerigError(f"find_face takes a uint8 [H, W, 3] image, got {image.dtype} of shape {image.shape}")
    image = np.ascontiguousarray(image)
    found = detect_faces(image, 1, max_side=DETECT_SIDE)
    if not found:
        return None
    box = found[0][0]
    return FaceMarks(box, landmarks68(image, box))


def face_landmarks(image: np.ndarray) -> np.ndarray | None:
    """The landmarks float64 [68, 2] of :func:`find_face` (continuous pixel coordinates), or None: no face."""
    face = find_face(image)
    return None if face is None else face.landmarks


def _checked(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise StylerigError(f"a local edit needs the face's 68 finite landmarks, got an array of shape {lm.shape}")
    return lm


def region_points(landmarks: np.ndarray, au: int) -> np.ndarray:
    """The points [K, 2] (same pixel frame as ``landmarks`` [68, 2]) whose hull is AU ``au``'s region."""
    if au not in AU_REGIONS:
        raise StylerigError(f"no face region is defined for AU{au}; local edits know AUs {sorted(AU_REGIONS)}")
    lm = _checked(landmarks)
    region = AU_REGIONS[au]
    iod, up = _face_axes(lm)
    parts = [lm[list(region.points)]]
    if region.up:
        parts.append(lm[list(region.up_points or region.points)] + region.up * iod * up)
    if region.down:
        parts.append(lm[list(region.down_points or region.points)] - region.down * iod * up)
    return np.concatenate(parts)


def region_mask(landmarks: np.ndarray, aus: Iterable[int], size: int, image_size: int, grow: float = 0.15,
                feather: float = 0.35) -> np.ndarray:
    """Soft mask float32 [size, size] in [0, 1] of the union of the AUs' regions.

    Args:
        landmarks: float [68, 2] (x, y) of the unedited face, in pixels of an ``image_size``² image.
        aus: AU numbers (each in :data:`AU_REGIONS`).
        size: side of the mask.
        image_size: side of the image the landmarks were found in.
        grow: the hull is grown by this many inter-ocular distances (IOD) at full strength ...
        feather: ... then fades to 0 over this many IOD (smoothstep).
    """
    aus = list(aus)
    if not aus:
        raise StylerigError("a local edit needs at least one AU to take its region from")
    scale = size / float(image_size)
    lm = _checked(landmarks)
    iod, _ = _face_axes(lm)
    inside = np.zeros((size, size), bool)
    for au in aus:
        pts = region_points(lm, au) * scale
        hull = pts[ConvexHull(pts).vertices]
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=255)
        inside |= np.asarray(canvas) > 0
    dist = ndimage.distance_transform_edt(~inside) / max(iod * scale, 1e-6)  # in IOD
    t = np.clip(1.0 - (dist - grow) / max(feather, 1e-6), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def _blend(base: torch.Tensor, edit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask if mask.shape[-2:] == edit.shape[-2:] else F.interpolate(mask, size=edit.shape[-2:], mode="area")
    return torch.lerp(base, edit, m.to(edit.dtype))


def _blend_output(output, mask: torch.Tensor, n: int):
    """Blend the second half of a [2n, ...] output (a tensor, or a tuple of tensors/None) towards the first."""
    if isinstance(output, torch.Tensor):
        if output.ndim != 4 or output.shape[0] != 2 * n:
            return output
        return torch.cat([output[:n], _blend(output[:n], output[n:], mask)])
    if isinstance(output, tuple):
        return tuple(_blend_output(o, mask, n) for o in output)
    return output


def feature_layers(G) -> list[tuple[torch.nn.Module, int]]:
    """``G.feature_layers()``, or a one-line error for a generator that does not list them."""
    layers = getattr(G, "feature_layers", None)
    if layers is None:
        raise StylerigError(f"generator {getattr(G, 'name', type(G).__name__)!r} does not list its feature layers; "
                            "local edits need G.feature_layers()")
    return list(layers())


@contextmanager
def blended_synthesis(G, masks: torch.Tensor, from_resolution: int = DEFAULT_FROM_RESOLUTION) -> Iterator[None]:
    """While active, ``G.synthesis`` of a batch [base (n); edit (n)] returns the edits blended into the bases.

    Args:
        G: a generator with ``feature_layers()``.
        masks: float [n, 1, H, W] in [0, 1]; 1 = the edit's region (resized to each feature map).
        from_resolution: blend after every feature layer at this resolution and above.
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise StylerigError(f"masks must be [n, 1, H, W], got {list(masks.shape)}")
    n = masks.shape[0]
    handles = []
    try:
        for module, resolution in feature_layers(G):
            if resolution >= from_resolution:
                handles.append(module.register_forward_hook(
                    lambda _m, _i, out: _blend_output(out, masks, n)))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class BaseRender:
    """The unedited faces rendered once, with what every blended layer output (no gradient): several
    edits of the same faces can then be rendered locally without rendering the faces again.

    Attributes:
        ws: W+ [n, num_ws, w_dim] of the unedited faces; ``images``: their renders [n, 3, R, R];
        outputs: each feature layer's output at ``from_resolution`` and above, in layer order;
        from_resolution: the resolution the blending starts at.
    """

    ws: torch.Tensor
    images: torch.Tensor
    outputs: tuple
    from_resolution: int


def render_base(G, ws_base: torch.Tensor, noise=None, from_resolution: int = DEFAULT_FROM_RESOLUTION) -> BaseRender:
    """Render the unedited latents ``ws_base`` [n, num_ws, w_dim] without gradients and keep the outputs
    :func:`render_local` blends with (:class:`BaseRender`); ``noise`` as in :func:`stylerig_au.invert.render`."""
    from stylerig_au.invert import render

    outputs: list = []
    handles = [module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for module, resolution in feature_layers(G) if resolution >= from_resolution]
    try:
        with torch.no_grad():
            images = render(G, ws_base, noise)
    finally:
        for h in handles:
            h.remove()
    return BaseRender(ws_base.detach(), images, tuple(outputs), from_resolution)


def _blend_with(base, edit, mask: torch.Tensor):
    """``edit`` (a tensor, or a tuple of tensors/None) blended towards the matching ``base`` output."""
    if isinstance(edit, torch.Tensor):
        return _blend(base, edit, mask) if edit.ndim == 4 else edit
    if isinstance(edit, tuple):
        return tuple(_blend_with(b, e, mask) for b, e in zip(base, edit))
    return edit


def render_local(G, ws_base: torch.Tensor | BaseRender, ws_edit: torch.Tensor, masks: torch.Tensor, noise=None,
                 from_resolution: int = DEFAULT_FROM_RESOLUTION) -> torch.Tensor:
    """Edited images [n, 3, R, R] (float32, nominally [-1, 1]) kept to ``masks``' regions.

    Args:
        ws_base, ws_edit: W+ [n, num_ws, w_dim], the unedited and the edited latents. ``ws_base`` may be
            the faces' :func:`render_base` (its ``from_resolution`` then wins; one face may serve n edits):
            only the edits are rendered, with the same result, several times faster than rendering both
            together (which the hooks slow down on a CPU).
        masks: float [n, 1, H, W] in [0, 1] (e.g. :func:`region_mask`), on the generator's device.
        noise: optional noise maps of the latent (:func:`stylerig_au.invert.render`).
    """
    from stylerig_au.invert import render

    base = ws_base if isinstance(ws_base, BaseRender) else None
    base_ws = base.ws if base is not None else ws_base
    if base is not None and base_ws.shape[0] == 1 and base_ws.shape[1:] == ws_edit.shape[1:]:
        base_ws = base_ws.expand_as(ws_edit)  # one face, several edits (frames): its outputs broadcast
    if base_ws.shape != ws_edit.shape:
        raise StylerigError(f"base and edited latents differ in shape: {list(base_ws.shape)} vs {list(ws_edit.shape)}")
    n = base_ws.shape[0]
    if base is None:
        with blended_synthesis(G, masks.to(ws_base.device), from_resolution):
            images = render(G, torch.cat([ws_base, ws_edit]), noise)
        return images[n:]
    layers = [module for module, resolution in feature_layers(G) if resolution >= base.from_resolution]
    if len(layers) != len(base.outputs):
        raise StylerigError("the base render does not match this generator's feature layers; render it with render_base(G, ...)")
    masks = masks.to(ws_edit.device)
    handles = [module.register_forward_hook(lambda _m, _i, out, kept=kept: _blend_with(kept, out, masks))
               for module, kept in zip(layers, base.outputs)]
    try:
        return render(G, ws_edit, noise)
    finally:
        for h in handles:
            h.remove()
