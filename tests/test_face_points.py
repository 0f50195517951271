"""Landmark sources of training steps (stylerig_au.au.face_points) and the identity crops taken from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.au.face_points import LANDMARK_SOURCES, DlibPoints, NetPoints, load_landmark_source
from stylerig_au.au.landmark_net import LandmarkConfig, LandmarkNet, to_fractions
from stylerig_au.errors import StylerigError

TINY = LandmarkConfig(input_width=32, channels=(4, 8, 8, 8))


def test_net_points_are_in_dlibs_pixel_frame_of_the_image_side() -> None:
    torch.manual_seed(0)
    net = LandmarkNet(TINY).eval()
    images = torch.rand(3, 3, 96, 96) * 2 - 1
    points = NetPoints(net)(images)
    assert len(points) == 3 and all(p.shape == (68, 2) and p.dtype == np.float64 for p in points)
    with torch.no_grad():
        fractions = net(images)
    np.testing.assert_allclose(to_fractions(torch.from_numpy(points[1]), 96).numpy(), fractions[1].double().numpy(), atol=1e-6)
    assert not any(p.requires_grad for p in net.parameters())


def test_dlib_finds_no_face_in_noise() -> None:
    from tests.helpers import require_asset

    require_asset("dlib-landmarks-68")
    images = torch.zeros(2, 3, 128, 128)
    assert DlibPoints()(images) == [None, None]


def test_unknown_source_is_a_one_line_error() -> None:
    assert set(LANDMARK_SOURCES) == {"dlib", "net"}
    with pytest.raises(StylerigError, match="unknown landmark source 'openpose'; choose one of dlib, net"):
        load_landmark_source("openpose")


def test_identity_reference_takes_given_landmarks() -> None:
    """The identity term crops where the given points say (no dlib run); None counts as no face."""
    from stylerig_au.identity_net import identity_loss, identity_reference
    from tests.test_local_edit import mean_face

    class Crops:  # an identity net whose embedding is the mean of its crop
        def crop_affine(self, landmarks: np.ndarray) -> np.ndarray:
            left, top = landmarks.min(0)
            return np.array([[0.25, 0, left], [0, 0.25, top]])

        def embed(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
            from stylerig_au.identity_net import warp_crops

            return warp_crops(images, affines, 8).mean(dim=(2, 3))

        def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().sum(1)

    images = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = identity_reference(Crops(), images, [mean_face(64), None])
    assert ref.found.tolist() == [1.0, 0.0]
    assert torch.allclose(identity_loss(Crops(), images, ref), torch.zeros(2))
    assert identity_loss(Crops(), images.flip(-1), ref)[0] > 0
    with pytest.raises(StylerigError, match="2 faces"):
        identity_reference(Crops(), images, [mean_face(64)])
