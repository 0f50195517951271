"""Identity networks as differentiable losses: dlib's face-recognition ResNet in PyTorch, and the
:class:`IdentityNet` protocol that it and SFace (:mod:`stylerig_au.sface`) share.

:func:`load_identity_net` gives either network behind the protocol (crop the face from its
landmarks, embed the crop, the network's own distance) and :func:`identity_loss` uses it as a
training term; ``sface`` is the training default, while dlib stays the evaluations' judge.

The evaluations report the identity distances of both networks; dlib's (``dlib_face_recognition_resnet_model_v1``,
same person < 0.6) is the judge of record. dlib runs it in C++ without gradients; this module reads the same weights from
the same ``.dat`` file (dlib's own serialisation, parsed here) into a PyTorch network, so that a
training loss can follow that descriptor. On the same 150x150 face chip it gives dlib's descriptor
to float precision (tested).

The network (dlib's ``dnn_face_recognition_ex``): a 7x7/2 convolution, 3x3/2 max-pool, then 14
residual blocks of two 3x3 convolutions with batch-norm folded into per-channel affines; blocks
that halve the size use a stride-2 first convolution (no padding) and a 2x2 average-pooled
shortcut, added with dlib's rule for tensors of different sizes (zero-padded to the larger);
finally a global average and a 256 -> 128 linear map. Input: RGB in [0, 255] minus dlib's channel
means, divided by 256.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylerig_au.errors import StylerigError

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's get_face_chip padding for this network


# ----------------------------------------------------------------------------- reading dlib's .dat


class _Reader:
    """Sequential reader of dlib's serialisation: variable-length integers, tensors, strings."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def _fail(self, what: str) -> StylerigError:
        return StylerigError(f"{self.path}: not dlib's face-recognition ResNet ({what} at byte {self.pos}); "
                             "run `stylerig-au pretrained fetch dlib-face-recognition --force` to fetch it again")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self._fail("unexpected end of file")
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8:
            raise self._fail("bad integer")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        """dlib tensor (format version 2: four sizes, then little-endian float32 values), flat."""
        if self.int() != 2:
            raise self._fail("unknown tensor format")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if min(dims) < 0 or self.pos + 4 * count > len(self.data):
            raise self._fail("bad tensor size")
        values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return values

    def find(self, name: str) -> bool:
        """Move past the next serialised string ``name`` (length-prefixed); False when there is none."""
        key = bytes([1, len(name)]) + name.encode()
        at = self.data.find(key, self.pos)
        if at < 0:
            return False
        self.pos = at + len(key)
        return True


@dataclass
class _Conv:
    weight: np.ndarray  # [out, in, k, k]
    bias: np.ndarray  # [out]
    stride: int
    padding: int


def _read_layers(path: str | os.PathLike) -> tuple[list[_Conv], list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """(convolutions, affines (gamma, beta), fc weight [256, 128], input channel means [3]) in file order."""
    data = Path(path).read_bytes()
    r = _Reader(data, str(path))
    if not r.find("loss_metric_2") or not r.find("input_rgb_image_sized"):
        raise r._fail("no loss_metric / input layer")
    means = []
    for _ in range(3):  # dlib floats: mantissa * 2**exponent
        mantissa, exponent = r.int(), r.int()
        means.append(mantissa * 2.0 ** exponent)
    if [r.int(), r.int()] != [CHIP_SIZE, CHIP_SIZE]:
        raise r._fail("input size is not 150x150")
    convs, affines, in_ch = [], [], 3
    body_end = data.find(bytes([1, 4]) + b"fc_2")
    while True:
        start = r.pos
        if not r.find("con_4") or (0 <= body_end < r.pos):
            r.pos = start
            break
        params = r.tensor()
        out_ch, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
        if kh != kw or sy != sx or py != px or params.size != out_ch * in_ch * kh * kw + out_ch:
            raise r._fail("unexpected convolution")
        n = out_ch * in_ch * kh * kw
        convs.append(_Conv(params[:n].reshape(out_ch, in_ch, kh, kw), params[n:], sy, py))
        if not r.find("affine_"):
            raise r._fail("convolution without its affine")
        ab = r.tensor()
        if ab.size != 2 * out_ch:
            raise r._fail("unexpected affine")
        affines.append((ab[:out_ch], ab[out_ch:]))
        in_ch = out_ch
    if not r.find("fc_2"):
        raise r._fail("no final fc layer")
    num_out, num_in = r.int(), r.int()
    fc = r.tensor()
    if fc.size != num_in * num_out or num_in != in_ch:
        raise r._fail("unexpected fc layer")
    return convs, affines, fc.reshape(num_in, num_out), np.array(means, np.float32)


# ----------------------------------------------------------------------------- the network


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add of tensors of different sizes: both zero-padded (channels, bottom, right) to the larger."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _ConvAffine(nn.Module):
    def __init__(self, conv: _Conv, affine: tuple[np.ndarray, np.ndarray]):
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        gamma, beta = (torch.from_numpy(a).view(1, -1, 1, 1) for a in affine)
        # fold the affine into the convolution: gamma * (conv(x) + b) + beta
        self.register_buffer("weight", torch.from_numpy(conv.weight) * gamma.view(-1, 1, 1, 1))
        self.register_buffer("bias", torch.from_numpy(conv.bias) * gamma.view(-1) + beta.view(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _Block(nn.Module):
    def __init__(self, first: _ConvAffine, second: _ConvAffine):
        super().__init__()
        self.first, self.second = first, second
        self.down = first.stride != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(F.relu(self.first(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet (frozen). ``forward``: float RGB [N, 3, 150, 150] in [0, 255]
    (a dlib face chip, :func:`extract_chips`) -> descriptors float32 [N, 128]."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        convs, affines, fc, means = _read_layers(path)
        layers = [_ConvAffine(c, a) for c, a in zip(convs, affines)]
        if (len(layers) - 1) % 2:
            raise StylerigError(f"{path}: unexpected number of convolutions ({len(layers)})")
        self.stem = layers[0]
        self.blocks = nn.ModuleList(_Block(layers[i], layers[i + 1]) for i in range(1, len(layers), 2))
        self.register_buffer("fc", torch.from_numpy(fc))
        self.register_buffer("mean", torch.from_numpy(means).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3)) @ self.fc


_CACHE: dict[str, DlibFaceResNet] = {}


def load_face_resnet(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> DlibFaceResNet:
    """The network with the registry's ``dlib-face-recognition`` weights (or ``path``), frozen, on ``device``."""
    from stylerig_au import pretrained

    file = str(pretrained.path("dlib-face-recognition", explicit=path))
    if file not in _CACHE:
        _CACHE[file] = pretrained.load("dlib-face-recognition", lambda f: DlibFaceResNet(str(f)), explicit=path)
    return _CACHE[file].to(device)


# ----------------------------------------------------------------------------- face chips


def chip_affine(landmarks: np.ndarray) -> np.ndarray:
    """dlib's 150x150 chip (padding 0.25) of a face as a float64 [2, 3] map chip pixel -> image pixel.

    ``landmarks``: float [68, 2] (x, y) image coordinates (:func:`stylerig_au.au.landmarks.landmarks_68`).
    """
    import dlib

    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise StylerigError(f"expected 68 landmarks [68, 2], got {pts.shape}")
    box = dlib.rectangle(int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max()))
    shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
    details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
    # the chip's corners in the image: chip (0,0) -> rect top-left, rotated by angle about its centre
    rect = details.rect
    w, h = rect.right() - rect.left(), rect.bottom() - rect.top()
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    sx, sy = w / (CHIP_SIZE - 1), h / (CHIP_SIZE - 1)  # dlib maps chip pixels 0 and size-1 to the rect's edges
    centre = (CHIP_SIZE - 1) / 2
    # image = centre_img + R @ (S @ (chip - centre))
    return np.array([
        [cos * sx, -sin * sy, cx - centre * (cos * sx - sin * sy)],
        [sin * sx, cos * sy, cy - centre * (sin * sx + cos * sy)],
    ])


def warp_crops(images: torch.Tensor, affines: torch.Tensor | np.ndarray, size: int,
               padding_mode: str = "border") -> torch.Tensor:
    """Differentiable face crops: float [N, 3, size, size] RGB in [0, 255], a network's input.

    Args:
        images: float [N, 3, H, W] in [-1, 1] (the generator's range; clamped).
        affines: [N, 2, 3] or [2, 3] crop pixel -> image pixel maps (e.g. :func:`chip_affine` of
            landmarks found in an image of the same size). Sampled bilinearly with pixel centres at
            integer coordinates (as dlib's chips and OpenCV's ``warpAffine``); an image much larger than
            the crop's face should be area-downsized first (and the affine scaled) to avoid aliasing.
        size: side of the square crop.
        padding_mode: outside the image, ``'border'`` repeats the edge, ``'zeros'`` gives black.
    """
    n, _, h, w = images.shape
    a = torch.as_tensor(affines, dtype=images.dtype, device=images.device)
    a = a.expand(n, 2, 3) if a.ndim == 2 else a
    ys, xs = torch.meshgrid(torch.arange(size, dtype=images.dtype, device=images.device),
                            torch.arange(size, dtype=images.dtype, device=images.device), indexing="ij")
    crop = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [S, S, 3]
    pix = torch.einsum("nij,hwj->nhwi", a, crop)  # image pixel (x, y) of each crop pixel
    grid = torch.stack([pix[..., 0] / (w - 1), pix[..., 1] / (h - 1)], dim=-1) * 2 - 1
    rgb = (images.clamp(-1, 1) + 1) * 127.5
    return F.grid_sample(rgb, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def extract_chips(images: torch.Tensor, affines: torch.Tensor | np.ndarray) -> torch.Tensor:
    """dlib's face chips: :func:`warp_crops` at 150x150 with the border repeated -> float [N, 3, 150, 150]
    RGB in [0, 255], the input of :class:`DlibFaceResNet`."""
    return warp_crops(images, affines, CHIP_SIZE, "border")


# ----------------------------------------------------------------------------- one protocol, two networks


class IdentityNet(Protocol):
    """A face-recognition network as a differentiable identity measure.

    ``crop_affine(landmarks [68, 2]) -> float64 [2, 3]``: the network's face crop (crop pixel -> image pixel);
    ``embed(images [N, 3, H, W] in [-1, 1], affines [N, 2, 3]) -> [N, D]``: features of those crops;
    ``distance(a [N, D], b [N, D]) -> [N]``: the network's own distance between features.
    """

    name: str

    def crop_affine(self, landmarks: np.ndarray) -> np.ndarray: ...

    def embed(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor: ...

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


class DlibIdentity:
    """dlib's ResNet descriptor on its 150x150 chip; Euclidean distance (same person < 0.6)."""

    name = "dlib"

    def __init__(self, net: DlibFaceResNet):
        self.net = net

    def crop_affine(self, landmarks: np.ndarray) -> np.ndarray:
        return chip_affine(landmarks)

    def embed(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        return self.net(extract_chips(images, affines))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum(dim=1).add(1e-12).sqrt()


class SFaceIdentity:
    """SFace's feature on the 112x112 ArcFace crop (:mod:`stylerig_au.sface`); cosine distance ``1 - cos``."""

    name = "sface"

    def __init__(self, net: nn.Module):
        self.net = net

    def crop_affine(self, landmarks: np.ndarray) -> np.ndarray:
        from stylerig_au.sface import crop_affine

        return crop_affine(landmarks)

    def embed(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        from stylerig_au.sface import CROP_SIZE

        return self.net(warp_crops(images, affines, CROP_SIZE, "zeros"))  # OpenCV's alignCrop: black outside

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(a, b, dim=1, eps=1e-12)


def _load_dlib(device: str | torch.device) -> DlibIdentity:
    return DlibIdentity(load_face_resnet(device=device))


def _load_sface(device: str | torch.device) -> SFaceIdentity:
    from stylerig_au.sface import load_sface

    return SFaceIdentity(load_sface(device=device))


IDENTITY_NETS: dict[str, Callable[[str | torch.device], IdentityNet]] = {"sface": _load_sface, "dlib": _load_dlib}


def load_identity_net(name: str, device: str | torch.device = "cpu") -> IdentityNet:
    """The identity network ``name`` (a key of :data:`IDENTITY_NETS`) with the registry's weights, on ``device``."""
    if name not in IDENTITY_NETS:
        raise StylerigError(f"unknown identity net {name!r}; choose one of {', '.join(IDENTITY_NETS)}")
    return IDENTITY_NETS[name](device)


@dataclass(frozen=True)
class IdentityReference:
    """What :func:`identity_loss` compares against, computed once per batch of reference faces:
    ``affines`` [N, 2, 3] crop maps (from the references' landmarks), ``features`` [N, D] their
    embeddings (no gradient), ``found`` [N] 1 where dlib found a face, else 0."""

    affines: torch.Tensor
    features: torch.Tensor
    found: torch.Tensor


def identity_reference(net: IdentityNet, b: torch.Tensor, landmarks: list | None = None) -> IdentityReference:
    """The crops and features of the faces ``b`` (float [N, 3, S, S] in [-1, 1]), cropped where dlib finds
    each face's landmarks (identity for an image without a face, which then counts 0). ``landmarks``:
    optional, the faces' landmarks already found (float [68, 2] in dlib's pixel-index frame, or None per
    face; e.g. from a :class:`~stylerig_au.au.face_points.LandmarkSource`) instead of running dlib."""
    if landmarks is None:
        from stylerig_au.au.face_points import DlibPoints

        landmarks = DlibPoints()(b)
    elif len(landmarks) != b.shape[0]:
        raise StylerigError(f"identity_reference got {len(landmarks)} landmark sets for {b.shape[0]} faces")
    affines, found = [], []
    for pts in landmarks:
        found.append(pts is not None)
        affines.append(net.crop_affine(pts) if pts is not None else np.eye(2, 3))
    aff = torch.as_tensor(np.stack(affines), dtype=b.dtype, device=b.device)
    with torch.no_grad():
        fb = net.embed(b, aff)
    return IdentityReference(aff, fb, torch.tensor(found, dtype=fb.dtype, device=fb.device))


def identity_loss(net: IdentityNet, a: torch.Tensor, b: torch.Tensor | IdentityReference) -> torch.Tensor:
    """The network's distance [N] between the faces of ``a`` and ``b`` (float [N, 3, S, S] in [-1, 1]),
    both cropped where dlib finds the face's landmarks in ``b`` (no gradient through the landmarks, none
    into ``b``); 0 for an image where dlib finds no face. Gradients reach ``a``. ``b`` may be its
    :func:`identity_reference`, computed once when the references do not change (a refinement)."""
    ref = b if isinstance(b, IdentityReference) else identity_reference(net, b)
    fa = net.embed(a, ref.affines.to(a.dtype))
    return net.distance(fa, ref.features) * ref.found.to(fa.dtype)
