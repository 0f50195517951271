"""Motion-transfer rendering (stylerig_au.edit.motion): the spline flow, the warp, the interiors taken from
the edited render, and that nothing outside the AU's region moves. Made-up landmarks and images (no dlib)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.edit.local import region_mask
from stylerig_au.edit.motion import FLOW_SIDE, backward_flow, interior_mask, transfer_motion, warp
from stylerig_au.errors import StylerigError
from tests.test_local_edit import mean_face

R = 256


def _image(seed: int = 0, size: int = R, cells: int = 16) -> torch.Tensor:
    """A smooth random picture [1, 3, size, size] in [-1, 1] (so bilinear resampling is well-behaved)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, cells, cells, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_no_motion_is_no_flow_and_a_zero_flow_is_the_identity() -> None:
    lm = mean_face(R)
    flow = backward_flow(lm, lm, 64, R)
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    assert np.abs(flow).max() < 1e-6
    image = _image()
    assert torch.allclose(warp(image, torch.zeros(1, 64, 64, 2)), image, atol=1e-5)


def test_flow_carries_each_edited_landmark_back_to_where_it_was() -> None:
    base = mean_face(R)
    edited = base.copy()
    edited[48:68, 1] -= 6.0  # the whole mouth up by 6 px
    flow = backward_flow(base, edited, R, R)  # one grid cell per pixel: cell centres at k + 0.5
    for k in (51, 57, 62, 66):
        x, y = edited[k]
        assert flow[int(y), int(x), 1] == pytest.approx(6.0, abs=0.6)  # the source lies 6 px lower
        assert abs(flow[int(y), int(x), 0]) < 0.6
    assert np.abs(flow[0, 0]).max() < 0.1 and np.abs(flow[-1, -1]).max() < 0.1  # corners pinned (smoothed spline)


def test_warp_moves_content_by_the_flow() -> None:
    image = _image(1)
    shifted = warp(image, torch.full((1, R, R, 2), 0.0).index_fill_(3, torch.tensor([0]), 4.0))
    # output pixel x shows input pixel x + 4 (away from the border)
    assert torch.allclose(shifted[..., :, 20:200], image[..., :, 24:204], atol=1e-5)
    coarse = warp(image, torch.full((1, 32, 32, 2), 0.0).index_fill_(3, torch.tensor([0]), 4.0))  # upsampled flow
    assert torch.allclose(coarse, shifted, atol=1e-5)


def test_interior_mask_covers_the_open_mouth_and_eyes_only() -> None:
    lm = mean_face(R)
    mask = interior_mask(lm, R, R)
    assert mask.shape == (R, R) and mask.min() >= 0 and mask.max() <= 1
    mouth, eye = lm[60:68].mean(0).astype(int), lm[36:42].mean(0).astype(int)
    assert mask[mouth[1], mouth[0]] == 1 and mask[eye[1], eye[0]] == 1
    assert mask[10, 10] == 0 and mask[int(lm[33, 1]), int(lm[33, 0])] == 0  # background, nose tip


def test_transfer_motion_keeps_the_unedited_face_outside_the_region_and_its_texture_inside() -> None:
    base_marks = mean_face(R)
    moved = base_marks.copy()
    moved[[48, 54], 1] -= 5.0  # lip corners up (a smile's motion)
    base, edited = _image(2, cells=6), _image(3)  # the edited render's texture is something else entirely
    out = transfer_motion(base, edited, base_marks, moved, [12])
    region = torch.nn.functional.interpolate(torch.from_numpy(region_mask(base_marks, [12], FLOW_SIDE, R))[None, None],
                                             size=(R, R), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out[..., region == 0], base[..., region == 0], atol=1e-5)
    # inside the region, away from the mouth's interior, the pixels are the unedited ones (moved), not the edit's
    cheek = (int(base_marks[48, 1] + 20), int(base_marks[48, 0] - 20))
    assert (out[0, :, cheek[0], cheek[1]] - base[0, :, cheek[0], cheek[1]]).abs().max() < 0.1
    assert (out[0, :, cheek[0], cheek[1]] - edited[0, :, cheek[0], cheek[1]]).abs().max() > 0.1
    # the inner mouth shows the edited render
    mouth = moved[60:68].mean(0).astype(int)
    assert torch.allclose(out[0, :, mouth[1], mouth[0]], edited[0, :, mouth[1], mouth[0]], atol=1e-4)
    # with no motion and the same picture, nothing changes
    assert torch.allclose(transfer_motion(base, base, base_marks, base_marks, [12]), base, atol=1e-5)


def test_gain_scales_the_motion() -> None:
    base_marks = mean_face(R)
    moved = base_marks.copy()
    moved[8, 1] += 6.0  # chin down
    image = _image(4)
    none = transfer_motion(image, image, base_marks, moved, [26], gain=0.0)
    one = transfer_motion(image, image, base_marks, moved, [26], gain=1.0)
    two = transfer_motion(image, image, base_marks, moved, [26], gain=2.0)
    solid = torch.from_numpy(interior_mask(base_marks, R, R)) == 0  # the interiors come from the edited render
    assert torch.allclose(none[..., solid], image[..., solid], atol=1e-5)
    assert (two - image).abs().sum() > 1.5 * (one - image).abs().sum()


def test_bad_inputs_are_one_line_errors() -> None:
    lm, image = mean_face(R), _image()
    with pytest.raises(StylerigError, match="68 landmarks"):
        backward_flow(lm[:60], lm, 32, R)
    with pytest.raises(StylerigError, match="two \\[1, 3, R, R\\] images"):
        transfer_motion(image, image[..., :128, :128], lm, lm, [12])
    with pytest.raises(StylerigError, match="motion gain"):
        transfer_motion(image, image, lm, lm, [12], gain=float("nan"))
    with pytest.raises(StylerigError, match="no face region"):
        transfer_motion(image, image, lm, lm, [99])


def test_a_motion_that_would_fold_the_picture_is_shortened() -> None:
    from stylerig_au.edit.motion import jacobian_determinant, limit_folding

    base = mean_face(R)
    crossed = base.copy()
    crossed[[37, 38], 1] += 30.0  # upper lids pushed far below the lower lids: the map folds
    flow = backward_flow(base, crossed, 64, R)
    assert jacobian_determinant(flow, R).min() < 0
    kept, scale = limit_folding(flow, R)
    assert 0 < scale < 1 and jacobian_determinant(kept, R).min() >= 0.3 - 1e-6
    gentle = backward_flow(base, base + 1.0, 64, R)
    assert limit_folding(gentle, R)[1] == 1.0


def _editor_setup(monkeypatch, found: bool = True):
    from stylerig_au.edit import local, motion
    from stylerig_au.edit.editor import Editor
    from tests.test_local_edit import _directions
    from tests.test_mobilestylegan import tiny_mobilestylegan

    G = tiny_mobilestylegan()
    ws = G.mapping(torch.randn(1, G.z_dim))[:, None].repeat(1, G.num_ws, 1)[0]
    calls = {"find": 0, "fit": 0}
    face = local.FaceMarks((0, 0, G.resolution, G.resolution), mean_face(G.resolution))

    def fake_find(image):
        calls["find"] += 1
        return face if found else None

    def fake_fit(image, face_marks):
        calls["fit"] += 1
        moved = face_marks.landmarks.copy()
        moved[[48, 54], 1] -= G.resolution / 64  # the edit lifts the lip corners
        return moved

    monkeypatch.setattr(local, "find_face", fake_find)
    monkeypatch.setattr(motion, "marks_in_box", fake_fit)
    return G, ws, Editor(G, _directions(G), local=False, motion=True), Editor(G, _directions(G), local=False), calls


def test_motion_editor_moves_the_unedited_face_and_finds_it_once(monkeypatch) -> None:
    from stylerig_au.edit.spec import AU

    G, ws, moving, plain, calls = _editor_setup(monkeypatch)
    base = plain.render(ws)
    shown = moving.render(ws, AU(12, 2))
    assert shown.shape == base.shape and calls == {"find": 1, "fit": 1}
    assert torch.equal(moving.edit(ws, AU(12, 2)), plain.edit(ws, AU(12, 2)))  # same latents, other picture
    region = torch.nn.functional.interpolate(torch.from_numpy(region_mask(mean_face(G.resolution), [12], FLOW_SIDE,
                                                                          G.resolution))[None, None],
                                             size=base.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    assert (shown - base)[..., region == 0].abs().max() < 1e-5  # outside the region: the unedited render
    assert (shown - base).abs().max() > 1e-3  # inside it, something moved
    frames = moving.interpolate(ws, AU(12, 2), 3)
    assert moving.render(ws, AU(12, 2), ws=torch.stack(frames)).shape[0] == 3  # a batch of frames of one face
    assert calls["find"] == 1  # the face is found once per latent


def test_editor_finds_a_face_once_for_landmarks_and_motion(monkeypatch) -> None:
    """`Editor.faces` is the one face search per latent: local masks, `landmarks()` and motion renders share it."""
    from stylerig_au.edit.spec import AU

    G, ws, moving, _, calls = _editor_setup(monkeypatch)
    marks = moving.landmarks(ws)
    assert marks.shape == (1, 68, 2) and np.array_equal(marks[0], mean_face(G.resolution))
    moving.render(ws, AU(12, 2))
    moving.local_masks(ws, AU(4, 1), 1)
    assert calls["find"] == 1


def test_find_face_refuses_images_that_are_not_uint8_rgb() -> None:
    from stylerig_au.edit.local import find_face

    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)):
        with pytest.raises(StylerigError, match="uint8"):
            find_face(bad)


def test_motion_editor_without_a_face_renders_the_edit_with_a_warning(monkeypatch) -> None:
    from stylerig_au.edit.spec import AU
    from stylerig_au.errors import StylerigWarning

    G, ws, moving, plain, _ = _editor_setup(monkeypatch, found=False)
    with pytest.warns(StylerigWarning, match="no face is found .* rendered as they are"):
        shown = moving.render(ws, AU(12, 2))
    assert torch.equal(shown, plain.render(ws, AU(12, 2)))


def test_cli_edit_commands_take_motion() -> None:
    from click.testing import CliRunner

    from stylerig_au.cli import cli

    for command in ("edit", "animate", "sweep"):
        assert "--motion / --no-motion" in CliRunner().invoke(cli, [command, "--help"]).output, command


def test_cli_edit_with_motion_moves_the_face(tiny_stylegan2, tmp_path, monkeypatch, capsys) -> None:
    """`edit --motion` on a tiny generator, through the CLI's own code path (landmarks faked: it draws no face)."""
    from PIL import Image

    from stylerig_au.cli import main
    from stylerig_au.edit import local, motion
    from stylerig_au.invert import save_latent
    from stylerig_au.models.checkpoints import save_stylegan2
    from tests.test_edit_cli import latent_record, random_directions

    G = tiny_stylegan2
    R = G.resolution
    face = local.FaceMarks((0, 0, R, R), mean_face(R))
    monkeypatch.setattr(local, "find_face", lambda image: face)

    def lifted(image, face_marks):
        moved = face_marks.landmarks.copy()
        moved[[48, 54], 1] -= R / 16
        return moved

    monkeypatch.setattr(motion, "marks_in_box", lifted)
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")), "--directions",
            str(random_directions(G).save(tmp_path / "dirs.pt")), "--device", "cpu"]
    latent = save_latent(tmp_path / "face.pt", latent_record(G))
    shown, plain, unedited = tmp_path / "motion.png", tmp_path / "plain.png", tmp_path / "unedited.png"
    assert main(["edit", str(latent), "--au", "12=+2", *args, "--motion", "--out", str(shown)]) == 0
    assert main(["edit", str(latent), "--au", "12=+2", *args, "--global", "--out", str(plain)]) == 0
    assert main(["edit", str(latent), "--au", "12=0", *args, "--global", "--out", str(unedited)]) == 0
    a, b, c = (np.asarray(Image.open(p)).astype(int) for p in (shown, plain, unedited))
    assert a.shape == b.shape == c.shape == (R, R, 3)
    region = region_mask(mean_face(R), [12], R, R) == 0
    assert np.abs(a - c)[region].max() <= 1  # outside the region: the unedited face
    assert np.abs(a - c).max() > 2 and not np.array_equal(a, b)  # inside it: moved, and not the GAN's edit

