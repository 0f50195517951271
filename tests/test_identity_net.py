"""dlib's face-recognition ResNet in PyTorch against dlib itself, its chips, and its use as a loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.errors import StylerigError
from tests.helpers import faces_dir, require_asset


@pytest.fixture(scope="module")
def real_face():
    """(uint8 [256, 256, 3] aligned CelebA-HQ photo, its 68 landmarks in dlib pixel indices)."""
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import load_image, resize

    require_asset("dlib-landmarks-68")
    photos = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos in {faces_dir() / 'celebahq-dev'}")
    img = resize(load_image(photos[0]), (256, 256))
    return img, landmarks_68(img)


@pytest.fixture(scope="module")
def net():
    from stylerig_au.identity_net import load_face_resnet

    require_asset("dlib-face-recognition")
    return load_face_resnet()


def _dlib_chip_and_descriptor(img: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import dlib

    from stylerig_au import pretrained

    rect = dlib.rectangle(*(int(v) for v in (*pts.min(0), *pts.max(0))))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
    chip = dlib.get_face_chip(img, shape, 150, 0.25)
    rec = dlib.face_recognition_model_v1(str(pretrained.path("dlib-face-recognition")))
    return chip, np.array(rec.compute_face_descriptor(chip))


def test_descriptor_matches_dlib_on_its_chip(net, real_face):
    img, pts = real_face
    chip, expected = _dlib_chip_and_descriptor(img, pts)
    ours = net(torch.from_numpy(chip.copy()).permute(2, 0, 1)[None].float())[0].double().numpy()
    assert ours.shape == (128,)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_differentiable_chip_gives_dlibs_descriptor(net, real_face):
    from stylerig_au.identity_net import chip_affine, extract_chips
    from stylerig_au.imageio import to_tensor

    img, pts = real_face
    chip, expected = _dlib_chip_and_descriptor(img, pts)
    x = to_tensor(img).requires_grad_(True)
    ours_chip = extract_chips(x, chip_affine(pts))
    assert ours_chip.shape == (1, 3, 150, 150)
    assert (ours_chip[0].permute(1, 2, 0).detach().numpy() - chip).__abs__().mean() < 1.0  # grey levels
    desc = net(ours_chip)[0]
    assert np.linalg.norm(desc.detach().double().numpy() - expected) < 0.01  # same person < 0.6
    desc.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,asset,other_face", [("dlib", "dlib-face-recognition", 0.3), ("sface", "sface", 0.3)])
def test_identity_loss_is_zero_for_the_same_face_and_grows_with_a_change(real_face, name, asset, other_face):
    from stylerig_au.identity_net import identity_loss, identity_reference, load_identity_net
    from stylerig_au.imageio import to_tensor

    require_asset(asset)
    net = load_identity_net(name)
    assert net.name == name
    base = to_tensor(real_face[0])
    same = identity_loss(net, base.clone(), base)
    assert same.shape == (1,) and float(same) < 1e-4
    other = torch.flip(base, dims=[2]).requires_grad_(True)  # upside down: not the same face any more
    loss = identity_loss(net, other, base)
    assert float(loss.detach()) > other_face
    loss.sum().backward()
    assert other.grad is not None and torch.isfinite(other.grad).all() and other.grad.abs().sum() > 0
    reference = identity_reference(net, base)  # what a refinement computes once
    torch.testing.assert_close(identity_loss(net, other.detach(), reference), loss.detach())
    blank = torch.zeros(1, 3, 64, 64)  # no face: the term is 0, not an error
    assert float(identity_loss(net, blank + 0.1, blank)) == 0.0


def test_identity_net_registry_and_cli_choices_agree():
    from stylerig_au.commands._editing import IDENTITY_NET_CHOICES
    from stylerig_au.identity_net import IDENTITY_NETS, load_identity_net

    assert tuple(IDENTITY_NETS) == IDENTITY_NET_CHOICES
    with pytest.raises(StylerigError, match="unknown identity net 'arcface'; choose one of sface, dlib"):
        load_identity_net("arcface")


def test_warp_crops_samples_pixel_centres_and_pads_as_asked():
    """A crop whose affine is a pure shift reads the image's pixels exactly; outside: edge or black."""
    from stylerig_au.identity_net import warp_crops

    img = torch.rand(1, 3, 8, 8) * 2 - 1
    shift = np.array([[1.0, 0, 2], [0, 1.0, 3]])  # crop (x, y) -> image (x + 2, y + 3)
    crop = warp_crops(img, shift, 4)
    torch.testing.assert_close(crop[0], (img[0, :, 3:7, 2:6] + 1) * 127.5)
    outside = np.array([[1.0, 0, 6], [0, 1.0, 0]])  # columns 6, 7, then 8, 9 beyond the right edge
    black = warp_crops(img, outside, 4, "zeros")
    assert torch.all(black[..., 2:] == 0)
    edge = warp_crops(img, outside, 4, "border")
    torch.testing.assert_close(edge[0, ..., 3], (img[0, :, 0:4, 7] + 1) * 127.5)


def test_a_file_that_is_not_the_network_is_refused(tmp_path):
    from stylerig_au.identity_net import DlibFaceResNet

    bad = tmp_path / "face.dat"
    bad.write_bytes(b"\x01\x0dloss_metric_2" + bytes(64))
    with pytest.raises(StylerigError, match="not dlib.s face-recognition ResNet.*stylerig-au pretrained fetch"):
        DlibFaceResNet(bad)
    bad.write_bytes(b"nothing here")
    with pytest.raises(StylerigError, match="not dlib's face-recognition ResNet"):
        DlibFaceResNet(bad)
