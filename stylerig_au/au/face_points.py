"""Where a training step finds the 68 landmarks of its rendered faces: dlib or the bundled landmark net.

A :class:`LandmarkSource` maps a batch of FFHQ-aligned renders to one landmark array per face (or None
where no face is found). The identity term crops each face from these points and a local training step
draws each AU's region from them. dlib (``"dlib"``, the default) is what the editor and the evaluations
use; the landmark net (``"net"``, :mod:`stylerig_au.au.landmark_net`, 0.026 IOD from dlib on held-out
faces) runs batched on the training device and needs no dlib, which the GPU machine lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from stylerig_au.errors import StylerigError


class LandmarkSource(Protocol):
    """``source(images) -> [landmarks or None per image]``.

    ``images``: float [N, 3, S, S] RGB in [-1, 1] (FFHQ-aligned renders). Each landmark array is float64
    [68, 2] (x, y) in dlib's pixel-index frame of the S² image (:func:`stylerig_au.au.landmarks.landmarks_68`:
    pixel centres at integers)."""

    def __call__(self, images: torch.Tensor) -> list[np.ndarray | None]: ...


class DlibPoints:
    """dlib's detector and 68-point predictor on each image (CPU, one image at a time)."""

    def __call__(self, images: torch.Tensor) -> list[np.ndarray | None]:
        from stylerig_au.au.landmarks import landmarks_68
        from stylerig_au.imageio import batch_to_uint8

        return [landmarks_68(img) for img in batch_to_uint8(images.detach())]


class NetPoints:
    """The landmark net (:func:`~stylerig_au.au.landmark_net.load_landmark_net`) on the images' device,
    batched; it always answers (it assumes an aligned face). ``net``: a loaded LandmarkNet."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net.eval().requires_grad_(False)

    def __call__(self, images: torch.Tensor) -> list[np.ndarray | None]:
        from stylerig_au.au.landmark_net import to_pixels

        with torch.no_grad():
            net_device = next(self.net.parameters()).device
            fractions = self.net(images.detach().to(net_device).float())
        return list(to_pixels(fractions, images.shape[-1]).double().cpu().numpy())


def _dlib(device: str | torch.device) -> LandmarkSource:
    return DlibPoints()


def _net(device: str | torch.device) -> LandmarkSource:
    from stylerig_au.au.landmark_net import load_landmark_net

    return NetPoints(load_landmark_net(device=device))


LANDMARK_SOURCES: dict[str, Callable[[str | torch.device], LandmarkSource]] = {"dlib": _dlib, "net": _net}


def load_landmark_source(name: str, device: str | torch.device = "cpu") -> LandmarkSource:
    """The landmark source ``name`` (a key of :data:`LANDMARK_SOURCES`), its network on ``device``."""
    if name not in LANDMARK_SOURCES:
        raise StylerigError(f"unknown landmark source {name!r}; choose one of {', '.join(LANDMARK_SOURCES)}")
    return LANDMARK_SOURCES[name](device)
