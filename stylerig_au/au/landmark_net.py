"""The landmark student: a small CNN that reads dlib's 68 face landmarks off FFHQ-aligned faces, differentiably.

dlib's shape predictor (an ensemble of regression trees on pixel differences) has no gradient, so a
loss cannot ask an edit to *move* a feature. This network is distilled from it on generator faces
(:mod:`stylerig_au.au.landmark_train`) and gives the landmarks as a differentiable function of the
image: heatmaps at a quarter of the input side, turned into coordinates by a soft-argmax (the
expected position under each heatmap's softmax), so they move continuously with the pixels.

:class:`GeometryReader` puts it in front of OpenFace's geometry term
(:meth:`~stylerig_au.au.openface.OpenFaceAU.geometry_part`): the part of each AU's intensity that comes
from the 3D shape fit of the landmarks. A beard, glasses or a furrow change OpenFace's texture (FHOG)
term; only moved features change this one. That is supervision texture cannot satisfy (issue 26).

Coordinates are fractions of the aligned image's side, x to the right, y down, with pixel ``i``'s
centre at ``(i + 0.5) / side`` (dlib's pixel coordinates ``p`` of a ``side``² image are
``fraction * side - 0.5``; :func:`to_pixels`).

Files (``torch.save`` dicts, weights-only loadable) hold ``format`` ('stylerig-au/landmark-net'),
``format_version``, ``config`` (:class:`LandmarkConfig` fields), ``state_dict`` and ``info`` (how it
was trained and how well it reads held-out faces; free-form).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from stylerig_au.errors import StylerigError

FORMAT = "stylerig-au/landmark-net"
FORMAT_VERSION = 1
ASSET_NAME = "landmark-net"
NUM_POINTS = 68
# (left, top, right, bottom) of the aligned image the net reads, as fractions of its side. On FFHQ-aligned
# generator faces dlib's 68 points lie within x 0.06-0.97, y 0.33-1.02 (1535 samples, seeds 0-1535).
LANDMARK_BOX = (0.0, 0.22, 1.0, 1.0)
# dlib's 68-point order mirrored left-right: index i of a mirrored face is point FLIP[i] of the original.
FLIP = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
        + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
        + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


@dataclass(frozen=True)
class LandmarkConfig:
    """Architecture of a :class:`LandmarkNet`.

    Attributes:
        input_width: width the landmark box is resized to (its height keeps the box's aspect, rounded to 4).
        channels: channels at 1/2, 1/4, 1/8 and 1/16 of the input side.
        box: the crop of the aligned image, (left, top, right, bottom) fractions.
    """

    input_width: int = 128
    channels: tuple[int, ...] = (32, 64, 96, 128)
    box: tuple[float, float, float, float] = LANDMARK_BOX

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network's input."""
        left, top, right, bottom = self.box
        height = max(16, int(round(self.input_width * (bottom - top) / (right - left) / 4)) * 4)
        return height, self.input_width

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "LandmarkConfig":
        return cls(input_width=int(d["input_width"]), channels=tuple(int(c) for c in d["channels"]),
                   box=tuple(float(f) for f in d["box"]))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def soft_argmax(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) [B, K, 2] in [0, 1] fractions of the map under softmax(logits × temperature) of
    each of the [B, K, H, W] maps (cell ``j``'s centre at ``(j + 0.5) / W``)."""
    b, k, h, w = logits.shape
    prob = torch.softmax(logits.flatten(2).float() * temperature, dim=-1).view(b, k, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5) / w
    ys = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) / h
    return torch.stack([(prob.sum(2) * xs).sum(-1), (prob.sum(3) * ys).sum(-1)], dim=-1)


class LandmarkNet(nn.Module):
    """FFHQ-aligned faces -> 68 landmark positions (a small encoder-decoder with soft-argmax heatmaps).

    The encoder halves the side four times; the decoder brings the 1/16 features back to 1/4, adding
    the encoder's 1/8 and 1/4 features on the way, and one 1×1 conv gives a heatmap per landmark.
    """

    def __init__(self, config: LandmarkConfig = LandmarkConfig()) -> None:
        super().__init__()
        if len(config.channels) != 4:
            raise StylerigError(f"a landmark net needs 4 channel counts (1/2 .. 1/16 of the side), got {list(config.channels)}")
        self.config = config
        c1, c2, c3, c4 = config.channels
        self.down = nn.ModuleList([
            nn.Sequential(_conv_bn(3, c1, 2), _conv_bn(c1, c1)),
            nn.Sequential(_conv_bn(c1, c2, 2), _conv_bn(c2, c2)),
            nn.Sequential(_conv_bn(c2, c3, 2), _conv_bn(c3, c3)),
            nn.Sequential(_conv_bn(c3, c4, 2), _conv_bn(c4, c4), _conv_bn(c4, c4)),
        ])
        self.lateral8, self.lateral4 = nn.Conv2d(c3, c4, 1), nn.Conv2d(c2, c4, 1)
        self.up8, self.up4 = _conv_bn(c4, c4), _conv_bn(c4, c2)
        self.heatmaps = nn.Conv2d(c2, NUM_POINTS, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        # per-channel statistics of the training crops (set by the trainer), so the first conv sees ~N(0, 1)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Crop the landmark box of aligned faces and resize it: float [N, 3, S, S] -> [N, 3, h, w]
        (``config.input_size``). Differentiable; downsampling is antialiased."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise StylerigError(f"the landmark net needs square RGB images [N, 3, S, S], got {tuple(images.shape)}")
        side = images.shape[-1]
        if side < 64:
            raise StylerigError(f"the landmark net needs aligned faces of at least 64², got {side}²")
        left, top, right, bottom = self.config.box
        crop = images[:, :, round(top * side):round(bottom * side), round(left * side):round(right * side)]
        size = self.config.input_size
        return F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=crop.shape[-1] > size[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Landmarks float32 [N, 68, 2] (x, y fractions of the side; module docstring) of FFHQ-aligned
        faces float [N, 3, S, S] RGB in [-1, 1], S >= 64. Differentiable in the images."""
        x = (self.prepare(images) - self.mean) / self.std
        f2 = self.down[0](x)
        f4 = self.down[1](f2)
        f8 = self.down[2](f4)
        f16 = self.down[3](f8)
        y = self.up8(F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False) + self.lateral8(f8))
        y = self.up4(F.interpolate(y, size=f4.shape[-2:], mode="bilinear", align_corners=False) + self.lateral4(f4))
        in_box = soft_argmax(self.heatmaps(y), self.log_temperature.exp())
        left, top, right, bottom = self.config.box
        scale = torch.tensor([right - left, bottom - top], device=in_box.device, dtype=in_box.dtype)
        offset = torch.tensor([left, top], device=in_box.device, dtype=in_box.dtype)
        return in_box * scale + offset


def to_pixels(fractions: torch.Tensor, side: int) -> torch.Tensor:
    """Landmark fractions [..., 2] -> dlib pixel coordinates of a ``side``² image (``f * side - 0.5``)."""
    return fractions * side - 0.5


def to_fractions(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """dlib pixel coordinates [..., 2] of a ``side``² image -> fractions of the side (``(p + 0.5) / side``)."""
    return (pixels + 0.5) / side


class GeometryReader(nn.Module):
    """OpenFace's geometry term of the 17 AU intensities, read differentiably from aligned faces.

    ``reader(images)`` = ``openface.geometry_part(landmark_net(images))``: float64 [N, 17] in
    ``openface.aus`` order (unclipped, without the SVR's offset: compare readings of two images, e.g.
    a face and its edit). Gradients flow from the readings to the pixels through the soft-argmax
    landmarks and the PDM's shape parameters, re-solved with the fitted pose held
    (:func:`~stylerig_au.au.pdm.refit_local`). ``share`` (float64 [17]) is the slope of each AU's geometry term on its
    whole reading across the net's natural training faces (``info["geometry_share"]``): an edit that
    raises an AU by 1 the way faces do moves its geometry term by about that much.

    Args:
        landmark_net: a :class:`LandmarkNet` (its weights are frozen here).
        openface: an :class:`~stylerig_au.au.openface.OpenFaceAU`.
    """

    def __init__(self, landmark_net: LandmarkNet, openface) -> None:
        super().__init__()
        self.landmark_net = landmark_net.eval().requires_grad_(False)
        self.openface = openface
        self.aus: list[int] = list(openface.aus)
        share = (getattr(landmark_net, "info", None) or {}).get("geometry_share") or {}
        # float64 [17]: how much of each AU's reading its geometry term carries across natural faces (NaN: unknown)
        self.register_buffer("share", torch.tensor([float(share.get(str(a), float("nan"))) for a in self.aus], dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from stylerig_au.au.pdm import geometry_features, refit_local

        landmarks = to_pixels(self.landmark_net(images), 1024).to(torch.float64)  # dlib's units at 1024², as the samples
        of = self.openface
        with torch.no_grad():  # the pose; the shape parameters are re-solved below with a usable gradient
            fit = of.fit(landmarks)
        local = refit_local(landmarks, fit, of.pdm_mean, of.pdm_basis, of.pdm_eigen)
        geom = geometry_features(local, of.pdm_basis)
        return geom @ of.weights[-geom.shape[1]:].to(geom)


def load_geometry_reader(file: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                         openface=None) -> GeometryReader:
    """A :class:`GeometryReader` of the landmark net ``file`` (default: the bundled one) and OpenFace's
    model (the registry's ``openface-2.2-au``, academic licence, unless ``openface`` is given).

    Raises:
        StylerigError: the net cannot be read, or it has no natural geometry shares (retrain it with
            OpenFace installed).
    """
    from stylerig_au.au.openface import OpenFaceAU

    net = load_landmark_net(file, device)
    if "geometry_share" not in net.info:
        raise StylerigError("this landmark net has no geometry shares; retrain it with 'stylerig-au train-landmarks' "
                            "where the OpenFace model is installed")
    return GeometryReader(net, openface if openface is not None else OpenFaceAU()).to(device)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantisation of a conv weight float [O, ...]:
    returns (int8 [O, ...], float32 scales [O]) with ``weight ≈ q * scale`` (rounding error ≤ scale / 2)."""
    flat = weight.detach().float().flatten(1)
    scale = (flat.abs().amax(dim=1) / 127).clamp_min(1e-12)
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.view(weight.shape), scale


def save_landmark_net(net: LandmarkNet, file: str | os.PathLike, info: dict | None = None) -> Path:
    """Write the weights (conv weights as per-channel int8, ~1.7 MB for the default net; a landmark moves by
    under 0.002 of the inter-ocular distance) with their config and ``info`` atomically; returns the path."""
    from stylerig_au.fileio import atomic_torch_save

    state, scales = {}, {}
    for name, value in net.state_dict().items():
        value = value.detach().cpu().clone()
        if name.endswith(".weight") and value.ndim >= 2:
            state[name], scales[name] = quantize_weight(value)
        else:
            state[name] = value
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": net.config.to_dict(),
              "state_dict": state, "scales": scales, "info": info or {}}
    atomic_torch_save(file, record)
    return Path(file)


def _weights(record: dict) -> dict[str, torch.Tensor]:
    """The float32 state dict of a stored record: int8 weights times their per-channel ``scales``
    (older files hold float16 weights and no scales)."""
    scales = record.get("scales") or {}
    weights = {}
    for name, value in record["state_dict"].items():
        if name in scales:
            value = value.float() * scales[name].float().view(-1, *([1] * (value.ndim - 1)))
        weights[name] = value.float() if value.is_floating_point() else value
    return weights


def load_landmark_net(file: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LandmarkNet:
    """The landmark net from ``file`` (default: the bundled ``landmark-net``), in eval mode, weights frozen.
    Its training ``info`` is kept as ``net.info``.

    Raises:
        StylerigError: missing, unreadable or foreign file, or weights that do not fit the config.
    """
    from stylerig_au import pretrained
    from stylerig_au.fileio import load_record

    path = pretrained.own_path(ASSET_NAME, file)
    record = load_record(path, FORMAT, FORMAT_VERSION, "landmark net file", "make one with 'stylerig-au train-landmarks'")
    try:
        net = LandmarkNet(LandmarkConfig.from_dict(record["config"]))
        net.load_state_dict(_weights(record))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, StylerigError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StylerigError(f"{path}: damaged landmark net file ({first[:120]})") from None
    net.info = record.get("info") or {}
    return net.to(device).eval().requires_grad_(False)
