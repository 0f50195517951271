"""Reconstruction metrics: MSE, PSNR, SSIM, LPIPS-VGG and the identity distances of two face networks.

Image inputs are either uint8 arrays [H, W, 3] / [N, H, W, 3] or float tensors [N, 3, H, W]
in [-1, 1] (the generator's range); both are mapped to [0, 1] first, so

* ``mse``  = mean squared error on [0, 1] values, per image -> float64 [N];
* ``psnr`` = 10 log10(1 / mse) dB (inf for identical images);
* ``ssim`` = mean SSIM with an 11x11 gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed
  per channel over the valid (unpadded) region and averaged, the convention of
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``;
* ``lpips`` = LPIPS-VGG16 (v0.1) after area-resizing both images to 256² (``size=None``: as is);
* ``identity_distance`` = Euclidean distance between dlib's 128-d ResNet face descriptors
  (dlib's rule: below 0.6, the same person); the evaluations' judge of identity;
* ``sface_distance`` = cosine distance ``1 - cos`` between SFace features of the ArcFace-aligned
  112x112 crops (:mod:`stylerig_au.sface`; same person below about 0.6; on the development photos
  perturbed copies <= 0.11, different people >= 0.68), an independent second opinion: the training
  losses use SFace by default, so dlib's figure is one the edit was not optimised for.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError

_LPIPS_CACHE: dict[tuple[str, str], torch.nn.Module] = {}
_DLIB_CACHE: dict[str, object] = {}


def to_unit_batch(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] / [N, H, W, 3] or float [N, 3, H, W] in [-1, 1] -> float32 [N, 3, H, W] in [0, 1]."""
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        t = image if image.ndim == 4 else image[None]
        if t.ndim != 4 or t.shape[1] != 3:
            raise StylerigError(f"expected images [N, 3, H, W], got {tuple(image.shape)}")
        return (t.float() + 1) / 2
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise StylerigError(f"expected uint8 images [H, W, 3], got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(np.array(arr, copy=True)).float() / 255.0
    t = t if t.ndim == 4 else t[None]
    return t.permute(0, 3, 1, 2)


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = to_unit_batch(a), to_unit_batch(b)
    if x.shape != y.shape:
        raise StylerigError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def mse(a, b) -> np.ndarray:
    """Mean squared error on [0, 1] values, float64 [N]."""
    x, y = _pair(a, b)
    return (x.double() - y.double()).pow(2).mean(dim=(1, 2, 3)).cpu().numpy()


def psnr(a, b) -> np.ndarray:
    """Peak signal-to-noise ratio in dB (peak 1.0), float64 [N]; inf where the images are equal."""
    return np.array([math.inf if m == 0 else 10 * math.log10(1.0 / m) for m in mse(a, b)])


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_torch(x: torch.Tensor, y: torch.Tensor, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable SSIM of [N, C, H, W] images in [0, 1] (data range 1) -> [N]. Needs H, W >= win."""
    if min(x.shape[-2:]) < win:
        raise StylerigError(f"SSIM needs images of at least {win}x{win} px, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    g = _gaussian_window(win, sigma).to(x)
    kx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    ky = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, valid region only
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim(a, b) -> np.ndarray:
    """Mean SSIM (gaussian 11x11 window, sigma 1.5), float64 [N]; 1.0 for identical images."""
    x, y = _pair(a, b)
    return ssim_torch(x.double(), y.double()).cpu().numpy()


def lpips(a, b, size: int | None = 256, device: str | torch.device | None = None, weights: str | os.PathLike | None = None) -> np.ndarray:
    """LPIPS-VGG16 distance, float64 [N] (lower is closer; 0 for identical images)."""
    from stylerig_au.perceptual import load_lpips

    x, y = _pair(a, b)
    device = torch.device(device) if device is not None else x.device
    key = (str(device), str(weights))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = load_lpips(weights, device=device)
    model = _LPIPS_CACHE[key]
    x, y = x.to(device) * 2 - 1, y.to(device) * 2 - 1
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
        y = F.interpolate(y, size=(size, size), mode="area")
    with torch.no_grad():
        return model(x, y).double().cpu().numpy()


# ----------------------------------------------------------------------------- identity


def _face_rec(path: str | os.PathLike | None = None):
    import dlib

    from stylerig_au import pretrained

    file = str(pretrained.path("dlib-face-recognition", explicit=path))
    if file not in _DLIB_CACHE:
        _DLIB_CACHE[file] = pretrained.load("dlib-face-recognition", lambda f: dlib.face_recognition_model_v1(str(f)), explicit=path)
    return _DLIB_CACHE[file]


def _uint8_images(image) -> list[np.ndarray]:
    t = to_unit_batch(image)
    arr = (t.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in arr]


def face_descriptor(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """dlib's 128-d face descriptor (float64 [128]) of the best face in uint8 RGB [H, W, 3].

    ``box`` (left, top, right, bottom) skips detection. Raises StylerigError when no face is found.
    """
    import dlib

    from stylerig_au.align import _shape_predictor, detect_faces

    if box is None:
        dets = detect_faces(image, 1)
        if not dets:
            raise StylerigError("identity distance: no face found in the image")
        box = dets[0][0]
    shape = _shape_predictor()(image, dlib.rectangle(*[int(v) for v in box]))
    return np.asarray(_face_rec().compute_face_descriptor(image, shape), np.float64)


def _paired_boxes(xs: list[np.ndarray], ys: list[np.ndarray], what: str, shared_frame: bool = False):
    """(face box of x, face box of y) per pair of uint8 images, each found in its own image.

    ``shared_frame``: the two images of a pair are known to show the face in the same place (a rendered
    face and its edit, a photo and its reconstruction), so when dlib finds no face in one of them, the
    other's face box is used for it.

    Raises:
        StylerigError: a pair whose images differ in number, or (without ``shared_frame``) an image
            without a face, named 'the first' / 'the second'; with it, a pair with no face in either.
    """
    from stylerig_au.align import detect_faces

    if len(xs) != len(ys):
        raise StylerigError(f"{what} needs pairs: {len(xs)} vs {len(ys)} images")
    for x, y in zip(xs, ys):
        dx, dy = detect_faces(x, 1), detect_faces(y, 1)
        if not dx and not dy:
            raise StylerigError(f"{what}: no face found in either image; give images with a visible face")
        if not shared_frame and not (dx and dy):
            which = "first" if not dx else "second"
            raise StylerigError(f"{what}: no face found in the {which} image")
        bx = dx[0][0] if dx else dy[0][0]
        yield bx, dy[0][0] if dy else bx


def identity_distance(a, b, shared_frame: bool = False, boxes: list | None = None) -> np.ndarray:
    """Euclidean distance between dlib face descriptors of paired images, float64 [N] (faces and
    ``shared_frame`` as :func:`_paired_boxes`; ``boxes``: its result when already found)."""
    xs, ys = _uint8_images(a), _uint8_images(b)
    boxes = boxes if boxes is not None else list(_paired_boxes(xs, ys, "identity distance", shared_frame))
    return np.array([float(np.linalg.norm(face_descriptor(x, bx) - face_descriptor(y, by)))
                     for (x, y), (bx, by) in zip(zip(xs, ys), boxes)])


def sface_distance(a, b, device: str | torch.device = "cpu", shared_frame: bool = False, boxes: list | None = None) -> np.ndarray:
    """Cosine distance between SFace features of paired images, float64 [N] (faces and ``shared_frame``
    as :func:`_paired_boxes`; ``boxes``: its result when already found).

    Each face is cropped on the ArcFace template from its own dlib landmarks (:func:`stylerig_au.sface.crop_affine`).
    """
    from stylerig_au.align import landmarks68
    from stylerig_au.identity_net import SFaceIdentity
    from stylerig_au.sface import load_sface

    xs, ys = _uint8_images(a), _uint8_images(b)
    if boxes is None:  # a photo without a face fails before the load
        boxes = list(_paired_boxes(xs, ys, "SFace identity distance", shared_frame))
    net = SFaceIdentity(load_sface(device=device))
    out = []
    for (x, y), (bx, by) in zip(zip(xs, ys), boxes):
        images = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1 for im in (x, y)]).to(device)
        # crop_affine takes pixel indices (pixel centres at integers), landmarks68 gives centres at +0.5
        affines = np.stack([net.crop_affine(landmarks68(im, box) - 0.5) for im, box in ((x, bx), (y, by))])
        with torch.no_grad():
            features = net.embed(images, torch.as_tensor(affines, dtype=torch.float32, device=device))
        out.append(float(net.distance(features[:1], features[1:])[0]))
    return np.array(out)


def identity_distances(a, b, device: str | torch.device = "cpu", shared_frame: bool = False) -> dict[str, np.ndarray]:
    """Both identity distances of paired images, float64 [N] each: ``{"dlib": ..., "sface": ...}``
    (:func:`identity_distance`, :func:`sface_distance`), with each pair's faces found once."""
    xs, ys = _uint8_images(a), _uint8_images(b)
    boxes = list(_paired_boxes(xs, ys, "identity distance", shared_frame))
    return {"dlib": identity_distance(a, b, boxes=boxes), "sface": sface_distance(a, b, device=device, boxes=boxes)}


def compare(a, b, lpips_size: int | None = 256, identity: bool = True) -> dict[str, float]:
    """All metrics for one pair of images (means over a batch) as a plain dict."""
    out = {
        "mse": float(mse(a, b).mean()),
        "psnr": float(psnr(a, b).mean()),
        "ssim": float(ssim(a, b).mean()),
        "lpips": float(lpips(a, b, size=lpips_size).mean()),
    }
    if identity:  # named for their networks; dlib's is the evaluations' identity_distance
        both = identity_distances(a, b)
        out["identity_dlib"], out["identity_sface"] = float(both["dlib"].mean()), float(both["sface"].mean())
    return out
