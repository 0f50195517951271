"""Face alignment for real photos: dlib detection, 68 landmarks, the FFHQ crop, and paste-back.

The FFHQ crop (the recipe NVIDIA used to build FFHQ, so StyleGAN faces sit where the
generator expects them) is computed from the landmarks:

* ``e`` = midpoint of the two eye centres, ``ee`` = right eye - left eye,
  ``m`` = midpoint of the mouth corners, ``em`` = m - e;
* the crop's x axis is ``ee`` plus ``em`` turned by -90°, normalised, and scaled to
  ``max(2 |ee|, 1.8 |em|)`` (half the side); the y axis is x turned by 90°;
* the crop centre is ``e + 0.1 em``; the crop is the square (quad) ``centre ± x ± y``.

So for a frontal face with ``|em| <= 1.11 |ee|`` the eyes land at (0.375 S, (0.5 - 0.025 r) S) and
(0.625 S, same), S the output size and r = |em| / |ee| (see :func:`canonical_eye_positions`).
Regions of the quad outside the photo are filled with a reflection of the photo, blurred and
faded towards its mean colour with the distance from the border, as in FFHQ.

:class:`FaceTransform` records the quad in photo coordinates (continuous pixel coordinates:
pixel (i, j) covers [j, j+1) x [i, i+1)), the photo size and the output size, so that
:func:`paste_back` can warp an (edited) aligned face back into the photo through a feathered
face mask; pixels where the mask is 0 are left exactly as they were.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from stylerig_au.errors import StylerigError
from stylerig_au.imageio import load_image

# A detection counts as a second face (not a false positive) when its score is at least this
# fraction of the best score and its box at least this fraction of the best box's area.
SECOND_FACE_SCORE_FRAC = 0.5
SECOND_FACE_AREA_FRAC = 0.25
# With all_faces, detections scoring below this are dropped as HOG false positives.
ALL_FACES_MIN_SCORE = 0.3
DETECT_MAX_SIDE = 2048
# The largest image (in pixels, after upsampling) the HOG detector is run on: dlib needs about 11 bytes a
# pixel, so this bounds detection to about 0.75 GB whatever the photo's size and --upsample.
DETECT_MAX_PIXELS = 8192 * 8192


@dataclass
class FaceTransform:
    """Where an aligned face came from.

    Attributes:
        quad: [4, 2] float, photo coordinates (x, y) of the aligned image's top-left, bottom-left,
            bottom-right and top-right corners.
        source_size: (width, height) of the photo.
        output_size: side of the aligned square image.
        landmarks: [68, 2] float, the dlib landmarks in photo coordinates (or None).
    """

    quad: np.ndarray
    source_size: tuple[int, int]
    output_size: int
    landmarks: np.ndarray | None = None

    def affine(self) -> np.ndarray:
        """[2, 3] matrix A with photo_xy = A @ (u, v, 1) for aligned-image coordinates (u, v)."""
        q = np.asarray(self.quad, np.float64)
        s = float(self.output_size)
        return np.stack([(q[3] - q[0]) / s, (q[1] - q[0]) / s, q[0]], axis=1)

    def inverse_affine(self) -> np.ndarray:
        """[2, 3] matrix B with aligned_uv = B @ (x, y, 1) for photo coordinates (x, y)."""
        a = self.affine()
        lin = np.linalg.inv(a[:, :2])
        return np.concatenate([lin, -lin @ a[:, 2:]], axis=1)

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """Photo coordinates [N, 2] -> aligned-image coordinates [N, 2]."""
        b = self.inverse_affine()
        return np.asarray(points, np.float64) @ b[:, :2].T + b[:, 2]

    def to_dict(self) -> dict:
        """Plain lists and ints (JSON / torch.save friendly)."""
        return {
            "quad": np.asarray(self.quad, float).tolist(),
            "source_size": [int(v) for v in self.source_size],
            "output_size": int(self.output_size),
            "landmarks": None if self.landmarks is None else np.asarray(self.landmarks, float).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FaceTransform":
        lm = d.get("landmarks")
        return cls(
            quad=np.asarray(d["quad"], np.float64),
            source_size=(int(d["source_size"][0]), int(d["source_size"][1])),
            output_size=int(d["output_size"]),
            landmarks=None if lm is None else np.asarray(lm, np.float64),
        )


@dataclass
class AlignedFace:
    """One aligned face: ``image`` uint8 [S, S, 3], its ``transform``, detection box and score."""

    image: np.ndarray
    transform: FaceTransform
    box: tuple[int, int, int, int]
    score: float
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- models


_MODELS: dict[str, object] = {}


def _detector():
    import dlib

    if "detector" not in _MODELS:
        _MODELS["detector"] = dlib.get_frontal_face_detector()
    return _MODELS["detector"]


def _shape_predictor(path: str | os.PathLike | None = None, asset: str = "dlib-landmarks-68"):
    """dlib's shape predictor ``asset`` (the 68- or the 5-point model; ``path`` overrides it), loaded once."""
    import dlib

    from stylerig_au import pretrained

    file = str(pretrained.path(asset, explicit=path))
    key = f"{asset}:{file}"
    if key not in _MODELS:
        _MODELS[key] = pretrained.load(asset, lambda f: dlib.shape_predictor(str(f)), explicit=path)
    return _MODELS[key]


# ----------------------------------------------------------------------------- detection


def detection_plan(size: tuple[int, int], upsample: int = 1, max_side: int | None = DETECT_MAX_SIDE) -> tuple[float, int]:
    """How a photo of ``size`` (width, height) is searched: (resize factor, dlib upsample count).

    The detector is meant to see the photo at scale ``t = min(1, max_side / longer side) * 2**upsample``
    (``max_side`` None: no shrinking), but never at more than :data:`DETECT_MAX_PIXELS` pixels, which
    bounds its memory. ``t`` is reached by resizing the photo by the factor (in (0, 2)) and letting dlib
    double it the returned number of times; a shrink is made in one step from the full-resolution photo.
    """
    w, h = size
    base = 1.0 if max_side is None else min(1.0, max_side / max(w, h))
    t = min(base * 2.0 ** int(upsample), math.sqrt(DETECT_MAX_PIXELS / max(w * h, 1)))
    if t <= 1.0:
        return t, 0
    doublings = int(math.floor(math.log2(t) + 1e-9))
    return t / 2.0**doublings, doublings


def detect_faces(image: np.ndarray, upsample: int = 1, max_side: int | None = DETECT_MAX_SIDE) -> list[tuple[tuple[int, int, int, int], float]]:
    """dlib HOG detections of uint8 RGB [H, W, 3] as ((left, top, right, bottom), score), best first.

    ``upsample``: how many times dlib doubles the image first (1 finds faces down to ~40 px).
    Photos larger than ``max_side`` px (default 2048; None: no limit) are searched on a shrunk copy and
    the boxes scaled back (much faster; landmarks are still fitted at full resolution). The detector
    never sees more than :data:`DETECT_MAX_PIXELS` pixels (see :func:`detection_plan`).
    """
    h, w = image.shape[:2]
    scale, doublings = detection_plan((w, h), upsample, max_side)
    small = image
    if abs(scale - 1.0) > 1e-9:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=3.0 if scale < 1 else None))
    sx, sy = small.shape[1] / w, small.shape[0] / h
    rects, scores, _ = _detector().run(np.ascontiguousarray(small), doublings, 0.0)
    out = []
    for r, s in zip(rects, scores):
        box = (int(round(r.left() / sx)), int(round(r.top() / sy)), int(round(r.right() / sx)), int(round(r.bottom() / sy)))
        out.append((box, float(s)))
    return sorted(out, key=lambda d: -d[1])


def select_faces(dets: list[tuple[tuple[int, int, int, int], float]], all_faces: bool, name: str = "photo",
                 upsample: int | None = None, size: tuple[int, int] | None = None):
    """The detections to align: the best one (error if another real face competes) or all.

    ``upsample`` and ``size`` (the photo's width, height), when given, make the no-face message suggest
    only what can still help (a higher ``--upsample`` while it would search a larger image)."""
    if not dets:
        raise StylerigError(f"{name}: no face found; {no_face_hint(upsample, size)}")
    faces = [dets[0]] + [d for d in dets[1:] if d[1] >= ALL_FACES_MIN_SCORE]
    if all_faces:
        return faces

    def area(b):
        return max(0, b[2] - b[0]) * max(0, b[3] - b[1])

    best_box, best_score = dets[0]
    rivals = [
        d for d in dets[1:] if d[1] >= SECOND_FACE_SCORE_FRAC * best_score and area(d[0]) >= SECOND_FACE_AREA_FRAC * area(best_box)
    ]
    if rivals:  # the count is what --all-faces keeps, so that it and --face K agree with this message
        n = len(faces)
        raise StylerigError(f"{name}: {n} faces found; choose one (--face K, 0-{n - 1} from the left, for edit, animate "
                            "and sweep; --all-faces for align and invert) or crop the photo to one face")
    return dets[:1]


def no_face_hint(upsample: int | None, size: tuple[int, int] | None) -> str:
    """What to try after no face was found: a higher --upsample only when it would search a larger image."""
    advice = "use a photo with a visible, roughly frontal face"
    if upsample is None:
        return f"{advice} (or a higher --upsample for small faces)"
    if upsample < 4 and (size is None or detection_plan(size, upsample + 1) != detection_plan(size, upsample)):
        return f"{advice} (or --upsample {upsample + 1} for small faces)"
    return f"{advice}; for a small face, crop the photo closer to it (--upsample {upsample} already searches it as large as it can)"


def landmarks68(image: np.ndarray, box: tuple[int, int, int, int], predictor_path: str | os.PathLike | None = None) -> np.ndarray:
    """dlib's 68 landmarks inside ``box`` as float64 [68, 2] (x, y) in continuous photo coordinates."""
    import dlib

    shape = _shape_predictor(predictor_path)(np.ascontiguousarray(image), dlib.rectangle(*box))
    # dlib gives integer pixel indices; +0.5 moves them to pixel centres in continuous coordinates.
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


# ----------------------------------------------------------------------------- FFHQ crop


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) from 68 landmarks."""
    lm = np.asarray(landmarks, np.float64)
    eye_l, eye_r = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_mid = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    mouth_mid = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_mid - eye_mid
    # (em_y, -em_x) is em turned by -90° (y points down): for an upright face it points along +x too
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_mid + 0.1 * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def canonical_eye_positions(output_size: int, ratio: float) -> np.ndarray:
    """Where the FFHQ crop puts the eye centres [[xl, y], [xr, y]] for a frontal face.

    ``ratio`` = |eye-to-mouth| / |eye-to-eye|. Follows from :func:`ffhq_quad`: half side
    h = max(2, 1.8 r)·|ee|, so the eyes are ±|ee|/2 from the centre horizontally and
    0.1·r·|ee| above it, in units of S / (2h).
    """
    s = float(output_size)
    half = max(2.0, 1.8 * ratio)
    scale = s / (2 * half)
    y = s / 2 - 0.1 * ratio * scale
    return np.array([[s / 2 - 0.5 * scale, y], [s / 2 + 0.5 * scale, y]])


def _pad_reflect_blur(img: np.ndarray, pads: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Pad uint8 [H, W, 3] by (left, top, right, bottom) with a reflection that blurs and fades outwards."""
    l, t, r, b = pads
    padded = np.pad(img.astype(np.float32), ((t, b), (l, r), (0, 0)), mode="reflect")
    h, w = padded.shape[:2]
    # 0 inside the photo, rising to 1 at the padded edge; built from a row and a column (not [H, W] grids)
    # and applied in place, so a large face needs a few float copies of its crop, not a dozen.
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    fx = np.maximum(np.where(xx < l, (l - xx) / max(l, 1), 0), np.where(xx >= w - r, (xx - (w - r - 1)) / max(r, 1), 0))
    fy = np.maximum(np.where(yy < t, (t - yy) / max(t, 1), 0), np.where(yy >= h - b, (yy - (h - b - 1)) / max(b, 1), 0))
    mask = np.maximum(fx, fy).astype(np.float32)[..., None]
    sigma = max(qsize * 0.02, 1.0)
    change = ndimage.gaussian_filter(padded, sigma=(sigma, sigma, 0))
    change -= padded
    change *= np.clip(mask * 3.0 + 1.0, 0, 1) * (mask > 0)
    padded += change
    median = np.array([np.median(padded[..., c]) for c in range(padded.shape[2])], np.float32)
    np.subtract(median, padded, out=change)
    change *= np.clip(mask, 0, 1)
    padded += change
    del change
    np.round(padded, out=padded)
    np.clip(padded, 0, 255, out=padded)
    return padded.astype(np.uint8)


def crop_ffhq(image: np.ndarray, landmarks: np.ndarray, output_size: int = 1024) -> tuple[np.ndarray, FaceTransform]:
    """The FFHQ-aligned face uint8 [S, S, 3] and its :class:`FaceTransform`, from photo landmarks [68, 2]."""
    h, w = image.shape[:2]
    quad = ffhq_quad(landmarks)
    transform = FaceTransform(quad=quad, source_size=(w, h), output_size=output_size, landmarks=np.asarray(landmarks, np.float64))
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    # Work on a shrunk copy when the face is much larger than the output (anti-aliasing).
    img, q, work_scale = image, quad.copy(), 1.0
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        nw, nh = max(1, round(w / shrink)), max(1, round(h / shrink))
        img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.LANCZOS))
        work_scale = nw / w
        q = q * np.array([nw / w, nh / h])
    hh, ww = img.shape[:2]
    border = max(int(round(qsize * work_scale * 0.1)), 3)
    x0, y0 = np.floor(q.min(axis=0)).astype(int) - border
    x1, y1 = np.ceil(q.max(axis=0)).astype(int) + border
    # crop to the quad's box (inside the photo), then pad what lies outside
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, ww), min(y1, hh)
    if cx1 <= cx0 or cy1 <= cy0:
        raise StylerigError("the face lies outside the photo; cannot align it")
    img = img[cy0:cy1, cx0:cx1]
    pads = (cx0 - x0, cy0 - y0, x1 - cx1, y1 - cy1)
    if max(pads) > 0:
        img = _pad_reflect_blur(img, pads, qsize * work_scale)
    q = q - np.array([x0, y0], np.float64)

    # Render at up to 2x the output size, then reduce with Lanczos.
    render = min(2 * output_size, 4096) if qsize * work_scale > output_size else output_size
    a = np.stack([(q[3] - q[0]) / render, (q[1] - q[0]) / render, q[0]], axis=1)
    warped = Image.fromarray(img).transform((render, render), Image.AFFINE, data=tuple(a.reshape(-1)), resample=Image.BILINEAR)
    if render != output_size:
        warped = warped.resize((output_size, output_size), Image.LANCZOS)
    return np.asarray(warped), transform


def align_image(
    image: np.ndarray,
    output_size: int = 1024,
    all_faces: bool = False,
    upsample: int = 1,
    min_face_size: float = 48.0,
    name: str = "photo",
    predictor_path: str | os.PathLike | None = None,
) -> list[AlignedFace]:
    """Detect, landmark and FFHQ-align the face(s) of uint8 RGB [H, W, 3].

    Returns one AlignedFace (the best detection) or, with ``all_faces``, one per detection, left to
    right. Raises StylerigError (message starts with ``name``) when no face is found, when several
    faces compete without ``all_faces``, or when a face's crop is under ``min_face_size`` px.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StylerigError(f"{name}: expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    dets = select_faces(detect_faces(image, upsample), all_faces, name, upsample, (image.shape[1], image.shape[0]))
    faces = []
    for box, score in dets:
        lm = landmarks68(image, box, predictor_path)
        quad = ffhq_quad(lm)
        qsize = float(np.hypot(*(quad[3] - quad[0])))
        if qsize < min_face_size:
            raise StylerigError(f"{name}: face too small to align ({qsize:.0f} px crop < {min_face_size:.0f} px); use a larger photo")
        aligned, transform = crop_ffhq(image, lm, output_size)
        faces.append(AlignedFace(image=aligned, transform=transform, box=box, score=score))
    return sorted(faces, key=lambda f: f.box[0]) if all_faces else faces


def align_file(path: str | os.PathLike, **kwargs) -> list[AlignedFace]:
    """:func:`align_image` of a photo file (any format :func:`~stylerig_au.imageio.load_image` reads)."""
    return align_image(load_image(path), name=str(path), **kwargs)


# ----------------------------------------------------------------------------- paste-back


def face_mask(landmarks: np.ndarray, size: int, grow: float = 0.04, feather: float = 0.06, forehead: float = 0.35) -> np.ndarray:
    """Feathered face mask float32 [size, size] in [0, 1] from landmarks [68, 2] in that image's coordinates.

    The region is the convex hull of the jaw line and the brows (raised by ``forehead`` x the
    eye-to-mouth distance to include the forehead), grown by ``grow`` x size, then faded to 0
    over ``feather`` x size (smoothstep). The mask is exactly 0 beyond grow + feather.
    """
    from scipy.spatial import ConvexHull

    lm = np.asarray(landmarks, np.float64)
    eye_mid = lm[36:48].mean(axis=0)
    mouth_mid = (lm[48] + lm[54]) / 2
    up = eye_mid - mouth_mid
    brows = lm[17:27] + forehead * up
    pts = np.concatenate([lm[0:17], brows])
    hull = pts[ConvexHull(pts).vertices]
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=255)
    inside = np.asarray(canvas) > 0
    dist = ndimage.distance_transform_edt(~inside)
    grow_px, feather_px = grow * size, max(feather * size, 1.0)
    t = np.clip(1.0 - (dist - grow_px) / feather_px, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_back(
    photo: np.ndarray, face: np.ndarray, transform: FaceTransform, mask: np.ndarray | None = None
) -> np.ndarray:
    """Warp an aligned (possibly edited) face back into the photo, blending through a feathered mask.

    Args:
        photo: uint8 [H, W, 3], the original photo (size must match ``transform.source_size``); or its
            uint16 colours for a 16-bit photo (the face is scaled to 16 bits).
        face: uint8 [s, s, 3], the aligned face (any square size; rescaled to the transform's).
        transform: the FaceTransform the face was aligned with.
        mask: float [S, S] in [0, 1] in aligned coordinates; default :func:`face_mask` of the
            transform's landmarks (an ellipse if it has none).
    Returns an array of the photo's dtype and shape; pixels where the warped mask is 0 are exactly the photo's.
    """
    photo = np.asarray(photo)
    w, h = transform.source_size
    if photo.shape[:2] != (h, w):
        raise StylerigError(f"photo is {photo.shape[1]}x{photo.shape[0]} but the transform is for {w}x{h}")
    size = transform.output_size
    face = np.asarray(face)
    if face.shape[:2] != (size, size):
        face = np.asarray(Image.fromarray(face).resize((size, size), Image.LANCZOS))
    if mask is None:
        if transform.landmarks is not None:
            mask = face_mask(transform.to_aligned(transform.landmarks), size)
        else:
            yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
            t = np.clip((0.45 - np.hypot(xx / 0.8, yy)) / 0.1, 0, 1)
            mask = (t * t * (3 - 2 * t)).astype(np.float32)
    mask = np.asarray(mask, np.float32)

    # Only the quad's bounding box (inside the photo) can change.
    q = np.asarray(transform.quad)
    x0, y0 = np.maximum(np.floor(q.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(q.max(axis=0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return photo.copy()
    b = transform.inverse_affine()
    b_local = b.copy()
    b_local[:, 2] = b[:, 2] + b[:, :2] @ np.array([x0, y0], np.float64)  # box-local photo coords -> aligned
    box = (x1 - x0, y1 - y0)
    data = tuple(b_local.reshape(-1))
    warped_face = np.asarray(Image.fromarray(face).transform(box, Image.AFFINE, data=data, resample=Image.BICUBIC), np.float32)
    warped_mask = np.asarray(
        Image.fromarray(mask, mode="F").transform(box, Image.AFFINE, data=data, resample=Image.BILINEAR, fillcolor=0.0), np.float32
    )
    warped_mask = np.clip(warped_mask, 0.0, 1.0)
    out = photo.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    m = warped_mask[..., None]
    peak = 65535.0 if photo.dtype == np.uint16 else 255.0
    blended = np.clip(np.round(region * (1 - m) + warped_face * (m * peak / 255.0)), 0, peak).astype(photo.dtype)
    changed = warped_mask > 0
    out[y0:y1, x0:x1][changed] = blended[changed]
    return out
