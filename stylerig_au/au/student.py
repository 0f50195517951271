"""The student AU detector: a small CNN distilled from our OpenFace 2.2 estimator.

It maps FFHQ-aligned faces straight to the 17 OpenFace AU intensities (no landmarks, no FHOG), is
differentiable end to end (so it can supervise edits and the AU-conditioned mapper) and runs
many faces per second on a CPU. Input: float [N, 3, H, W] RGB in [-1, 1], H = W >= 64, FFHQ-aligned
(the generator's output, or :func:`stylerig_au.align.align_image`'s crop). The network takes the
face box of the aligned image (:data:`FACE_BOX`, where the FFHQ recipe puts brows, eyes, mouth and
chin), resizes it to ``input_size``² and predicts one value per AU.

Files (``torch.save`` dicts, weights-only loadable) hold ``format`` ('stylerig-au/student-au-detector'),
``format_version``, ``aus`` (AU numbers, output order), ``config`` (:class:`StudentConfig` fields),
``state_dict`` and ``info`` (how it was trained; free-form).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stylerig_au.errors import StylerigError

FORMAT = "stylerig-au/student-au-detector"
FORMAT_VERSION = 1
ASSET_NAME = "student-au-detector"
# (left, top, right, bottom) of the face in an FFHQ-aligned image, as fractions of its side: the FFHQ
# crop puts the eyes at y ~ 0.48 and x = 0.375 / 0.625 and the mouth at y ~ 0.72 (see stylerig_au.align).
FACE_BOX = (0.18, 0.28, 0.82, 0.92)
MAX_VALUE = 5.0


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of a :class:`StudentAUNet`.

    Attributes:
        aus: AU numbers in output order.
        input_size: side the face box is resized to.
        channels: output channels of the stem and of each stride-2 stage (each stage halves the side).
        head: width of the hidden fully connected layer.
        face_box: the crop of the aligned image, (left, top, right, bottom) fractions.
    """

    aus: tuple[int, ...]
    input_size: int = 128
    channels: tuple[int, ...] = (32, 64, 96, 128, 192)
    head: int = 128
    face_box: tuple[float, float, float, float] = FACE_BOX

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "StudentConfig":
        return cls(aus=tuple(int(a) for a in d["aus"]), input_size=int(d["input_size"]),
                   channels=tuple(int(c) for c in d["channels"]), head=int(d["head"]),
                   face_box=tuple(float(f) for f in d["face_box"]))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StudentAUNet(nn.Module):
    """Aligned faces -> AU intensities.

    The stem and every stage halve the side (stages: a stride-2 conv then a stride-1 conv, BN + ReLU);
    the last feature map (``ceil(input_size / 2**len(channels))`` square) is flattened, so the head knows
    where on the face each feature is.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        layers: list[nn.Module] = [_conv_bn(3, ch[0], 2)]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [_conv_bn(cin, cout, 2), _conv_bn(cout, cout, 1)]
        self.features = nn.Sequential(*layers)
        side = config.input_size
        for _ in ch:  # a 3x3 stride-2 conv with padding 1 maps n to ceil(n / 2)
            side = -(-side // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(ch[-1] * side * side, config.head),
                                  nn.ReLU(inplace=True), nn.Linear(config.head, len(config.aus)))
        # Per-channel statistics of the training crops (set by the trainer), so the first conv sees ~N(0, 1).
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5))

    @property
    def aus(self) -> list[int]:
        """AU numbers, in the order of the outputs."""
        return list(self.config.aus)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Crop the face box of aligned faces and resize it: [N, 3, H, H] -> [N, 3, S, S] (S = ``input_size``).

        Differentiable; downsampling is antialiased (bilinear with a widened kernel).
        """
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise StylerigError(f"the student AU detector needs square RGB images [N, 3, H, H], got {tuple(images.shape)}")
        side = images.shape[-1]
        if side < 64:
            raise StylerigError(f"the student AU detector needs aligned faces of at least 64², got {side}²")
        left, top, right, bottom = (round(f * side) for f in self.config.face_box)
        crop = images[:, :, top:bottom, left:right]
        size = self.config.input_size
        return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=crop.shape[-1] > size)

    def forward(self, images: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """AU intensities of FFHQ-aligned faces.

        Args:
            images: float [N, 3, H, H] RGB in [-1, 1], H >= 64 (any float dtype the weights use).
            clip: clamp to 0–5 as OpenFace does. Off by default: the raw values keep a gradient
                outside the range (a face with no smile may score below 0), which is what edits and
                losses want.
        Returns:
            float [N, 17] in the order of :attr:`aus`.
        """
        x = (self.prepare(images) - self.mean) / self.std
        out = self.head(self.features(x))
        return out.clamp(0.0, MAX_VALUE) if clip else out


class StudentAU:
    """The student as an AU detector, with the same surface as :class:`~stylerig_au.au.openface.OpenFaceAU`.

    ``aus`` lists the AU numbers; :meth:`predict_aligned` scores aligned faces; :meth:`predict_photos`
    takes whole photos with their 68 dlib landmarks (as :func:`~stylerig_au.au.detect.detect_aus`
    passes them), FFHQ-aligns each face from those landmarks and scores it.
    """

    aligned_size = 256  # side of the FFHQ crop made from photos (the training images' side)

    def __init__(self, net: StudentAUNet, info: dict | None = None) -> None:
        self.net = net.eval().requires_grad_(False)
        self.info = info or {}

    @property
    def aus(self) -> list[int]:
        return self.net.aus

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "StudentAU":
        self.net.to(device)
        return self

    def __call__(self, images: torch.Tensor, clip: bool = False) -> torch.Tensor:
        """Differentiable intensities [N, 17] of float [N, 3, H, H] aligned faces in [-1, 1] (see :meth:`StudentAUNet.forward`)."""
        return self.net(images, clip=clip)

    @torch.no_grad()
    def predict_aligned(self, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Intensities float32 [N, 17] on 0–5 of FFHQ-aligned faces.

        Args:
            images: uint8 [N, H, H, 3] (numpy, RGB) or uint8 [N, 3, H, H] (torch), H >= 64.
        """
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2)
        if images.dtype != torch.uint8:
            raise StylerigError(f"predict_aligned expects uint8 images, got {images.dtype}; call the detector directly on [-1, 1] floats")
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(self.device).float() / 127.5 - 1.0
            out.append(self.net(x, clip=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.aus)), np.float32)

    def predict_photos(self, photos: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Intensities float32 [N, 17] for uint8 RGB photos [H, W, 3] and their float [68, 2] dlib landmarks."""
        from stylerig_au.align import crop_ffhq

        if len(photos) != len(landmarks):
            raise StylerigError(f"{len(photos)} photos but {len(landmarks)} landmark sets")
        faces = [crop_ffhq(np.asarray(p)[..., :3], np.asarray(lm, np.float64), self.aligned_size)[0]
                 for p, lm in zip(photos, landmarks)]
        if not faces:
            return np.zeros((0, len(self.aus)), np.float32)
        return self.predict_aligned(np.stack(faces), batch_size)


def _stored(name: str, value: torch.Tensor) -> torch.Tensor:
    """Conv and linear weights are stored as float16 (half the file; loaded back as float32), the rest as is."""
    value = value.detach().cpu().clone()
    return value.half() if name.endswith(".weight") and value.ndim >= 2 else value


def save_student(net: StudentAUNet, file: str | os.PathLike, info: dict | None = None) -> Path:
    """Write the weights with their config and ``info`` atomically; returns the path.

    Conv and linear weights are stored as float16 (the file stays ~3 MB); :func:`load_student` turns
    them back into float32.
    """
    from stylerig_au.fileio import atomic_torch_save

    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "aus": list(net.aus), "config": net.config.to_dict(),
              "state_dict": {k: _stored(k, v) for k, v in net.state_dict().items()}, "info": info or {}}
    atomic_torch_save(file, record)
    return Path(file)


def load_student(file: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> StudentAU:
    """The student detector from ``file`` (default: the registry's ``student-au-detector``).

    Raises:
        StylerigError: missing, unreadable or foreign file, or weights that do not fit the config.
    """
    from stylerig_au import pretrained
    from stylerig_au.fileio import load_record

    path = pretrained.own_path(ASSET_NAME, file)
    record = load_record(path, FORMAT, FORMAT_VERSION, "student AU detector file",
                         "make one with 'stylerig-au train-detector'")
    try:
        config = StudentConfig.from_dict(record["config"])
        net = StudentAUNet(config)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in record["state_dict"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StylerigError(f"{path}: damaged student AU detector file ({first[:120]})") from None
    return StudentAU(net.to(device), record.get("info"))
