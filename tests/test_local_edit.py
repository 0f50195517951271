"""Local edits (stylerig_au.edit.local): region masks from landmarks, blending inside the generator, the
Editor's local rendering and the CLI switch. Tiny random generators; landmarks are made up (a random
generator draws no face)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stylerig_au.edit.directions import LinearDirections
from stylerig_au.edit.editor import Editor
from stylerig_au.edit.local import (AU_REGIONS, MASK_SIDE, FaceMarks, blended_synthesis, region_mask, region_points,
                                    render_base, render_local)
from stylerig_au.edit.spec import AU
from stylerig_au.errors import StylerigError, StylerigWarning
from tests.test_mobilestylegan import tiny_mobilestylegan

ALL_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)


def mean_face(size: float = 1024.0) -> np.ndarray:
    """A plausible frontal 68-point face [68, 2] filling an image of ``size`` pixels (dlib order)."""
    s = size / 1024.0
    pts = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)
    pts[0:17] = np.stack([512 + 330 * t, 480 + 330 * np.sqrt(1 - 0.8 * t ** 2)], 1)  # jaw, chin at the bottom
    pts[17:22] = np.stack([np.linspace(300, 470, 5), [420, 400, 395, 400, 410]], 1)  # right brow
    pts[22:27] = np.stack([np.linspace(554, 724, 5), [410, 400, 395, 400, 420]], 1)  # left brow
    pts[27:31] = np.stack([[512] * 4, np.linspace(470, 610, 4)], 1)  # nose bridge
    pts[31:36] = np.stack([np.linspace(460, 564, 5), [640, 650, 655, 650, 640]], 1)  # nostrils
    for start, cx in ((36, 385), (42, 640)):  # eyes
        a = np.linspace(0, 2 * np.pi, 7)[:-1]
        pts[start:start + 6] = np.stack([cx + 55 * np.cos(a + np.pi), 480 + 18 * np.sin(a + np.pi)], 1)
    a = np.linspace(0, 2 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([512 + 110 * np.cos(a + np.pi), 740 + 40 * np.sin(a + np.pi)], 1)  # outer lips
    a = np.linspace(0, 2 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([512 + 80 * np.cos(a + np.pi), 740 + 12 * np.sin(a + np.pi)], 1)  # inner lips
    return pts * s


def test_every_au_has_a_region_inside_the_face() -> None:
    assert set(AU_REGIONS) == set(ALL_AUS)
    lm = mean_face()
    for au in ALL_AUS:
        pts = region_points(lm, au)
        assert np.isfinite(pts).all() and pts.shape[1] == 2


def test_region_masks_cover_their_features_and_leave_the_rest() -> None:
    lm = mean_face()
    size = 256
    mouth, brow_mid, forehead, chin_below = (512, 740), (380, 400), (512, 250), (512, 900)
    eye, hair = (385, 480), (60, 60)

    def at(mask, xy):
        return mask[int(xy[1] * size / 1024), int(xy[0] * size / 1024)]

    lower = region_mask(lm, [12], size, 1024)
    assert lower.shape == (size, size) and lower.dtype == np.float32
    assert 0.0 <= lower.min() and lower.max() <= 1.0
    assert at(lower, mouth) == 1.0 and at(lower, forehead) == 0.0 and at(lower, eye) == 0.0 and at(lower, hair) == 0.0
    upper = region_mask(lm, [1], size, 1024)
    assert at(upper, brow_mid) == 1.0 and at(upper, forehead) > 0.5 and at(upper, mouth) == 0.0
    jaw = region_mask(lm, [26], size, 1024)
    assert at(jaw, chin_below) > at(lower, chin_below)  # room below the chin for a dropped jaw
    both = region_mask(lm, [1, 12], size, 1024)
    assert np.allclose(both, np.maximum(upper, lower), atol=0.35)  # a union (feathered once, so not exactly the max)
    assert at(both, mouth) == 1.0 and at(both, brow_mid) == 1.0
    # the same face drawn at 512 px gives the same mask
    assert np.abs(region_mask(mean_face(512), [12], size, 512) - lower).max() < 0.05


@pytest.mark.parametrize("bad, message", [
    (dict(aus=[99]), "no face region is defined for AU99"),
    (dict(aus=[]), "at least one AU"),
    (dict(landmarks=np.zeros((5, 2))), "68 finite landmarks"),
    (dict(landmarks=np.full((68, 2), np.nan)), "68 finite landmarks"),
])
def test_region_mask_refuses_bad_input_in_one_line(bad: dict, message: str) -> None:
    args = dict(landmarks=mean_face(), aus=[12], size=64, image_size=1024) | bad
    with pytest.raises(StylerigError, match=message) as err:
        region_mask(**args)
    assert "\n" not in str(err.value)


def _generators():
    from tests.conftest import make_tiny_stylegan2

    return [tiny_mobilestylegan(), make_tiny_stylegan2()]


@pytest.mark.parametrize("G", _generators(), ids=["mobilestylegan", "stylegan2"])
def test_blending_keeps_the_base_outside_and_the_edit_inside(G) -> None:
    torch.manual_seed(0)
    ws_base = G.mapping(torch.randn(2, G.z_dim))[:, None].repeat(1, G.num_ws, 1)
    ws_edit = ws_base + 0.8 * torch.randn_like(ws_base)
    R = G.resolution
    with torch.no_grad():
        plain_base, plain_edit = G.synthesis(ws_base), G.synthesis(ws_edit)
        ones = render_local(G, ws_base, ws_edit, torch.ones(2, 1, 16, 16), from_resolution=4)
        zeros = render_local(G, ws_base, ws_edit, torch.zeros(2, 1, 16, 16), from_resolution=4)
        assert torch.allclose(ones, plain_edit, atol=1e-5)
        assert torch.allclose(zeros, plain_base, atol=1e-5)
        half = torch.zeros(2, 1, 16, 16)
        half[..., :, :8] = 1.0  # the edit's region: the left half
        mixed = render_local(G, ws_base, ws_edit, half, from_resolution=4)
        far_right = (slice(None), slice(None), slice(None), slice(3 * R // 4, R))
        assert torch.allclose(mixed[far_right], plain_base[far_right], atol=1e-4)
        assert (mixed[..., : R // 4] - plain_base[..., : R // 4]).abs().mean() > 0.1 * (plain_edit - plain_base).abs().mean()
        # the hooks are gone afterwards
        assert torch.equal(G.synthesis(ws_edit), plain_edit)


@pytest.mark.parametrize("G", _generators(), ids=["mobilestylegan", "stylegan2"])
def test_a_kept_base_render_gives_the_same_local_edit_and_its_gradient(G) -> None:
    torch.manual_seed(1)
    ws_base = G.mapping(torch.randn(2, G.z_dim))[:, None].repeat(1, G.num_ws, 1)
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, ..., 4:12, 2:10] = 1.0
    masks[1, ..., 8:, :] = 0.5
    step = (0.5 * torch.randn_like(ws_base)).requires_grad_(True)
    together = render_local(G, ws_base, ws_base + step, masks, from_resolution=4)
    (g_together,) = torch.autograd.grad(together.square().mean(), [step])
    base = render_base(G, ws_base, from_resolution=4)
    kept = render_local(G, base, ws_base + step, masks)
    (g_kept,) = torch.autograd.grad(kept.square().mean(), [step])
    assert torch.allclose(kept, together, atol=1e-5)
    assert torch.allclose(g_kept, g_together, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        assert torch.allclose(base.images, G.synthesis(ws_base), atol=1e-6)
    assert all(not m._forward_hooks for m, _ in G.feature_layers())
    with pytest.raises(StylerigError, match="differ in shape"):
        render_local(G, base, ws_base[:1], masks[:1])
    # one face kept, two edits of it (an animation's frames): its outputs broadcast
    one = render_base(G, ws_base[:1], from_resolution=4)
    frames = ws_base[:1] + torch.stack([step[0], 2 * step[0]]).detach()
    with torch.no_grad():
        expected = render_local(G, ws_base[:1].expand(2, -1, -1), frames, masks, from_resolution=4)
        assert torch.allclose(render_local(G, one, frames, masks), expected, atol=1e-5)


def test_blended_synthesis_removes_its_hooks_after_an_error() -> None:
    G = tiny_mobilestylegan()
    with pytest.raises(RuntimeError):
        with blended_synthesis(G, torch.ones(1, 1, 8, 8)):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m, _ in G.feature_layers())
    with pytest.raises(StylerigError, match=r"masks must be \[n, 1, H, W\]"):
        with blended_synthesis(G, torch.ones(8, 8)):
            pass


def test_a_generator_without_feature_layers_is_refused_up_front() -> None:
    class NoLayers:
        name, num_ws, w_dim = "plain", 4, 8
        slots = ()
        w_avg = torch.zeros(8)

    from stylerig_au.edit.local import feature_layers

    with pytest.raises(StylerigError, match="does not list its feature layers"):
        feature_layers(NoLayers())


def _directions(G) -> LinearDirections:
    torch.manual_seed(1)
    return LinearDirections({au: torch.randn(G.w_dim) for au in ALL_AUS}, slots=G.slots, generator=G.name,
                            scales={au: 0.5 for au in ALL_AUS})


def test_local_editor_renders_inside_the_region_and_finds_landmarks_once(monkeypatch) -> None:
    G = tiny_mobilestylegan()
    R = G.resolution
    ws = G.mapping(torch.randn(1, G.z_dim))[:, None].repeat(1, G.num_ws, 1)[0]
    plain, local = Editor(G, _directions(G), local=False), Editor(G, _directions(G))  # local is the default
    calls = []

    def fake_find_face(image):
        calls.append(image.shape)
        return FaceMarks((0, 0, R, R), mean_face(R))

    monkeypatch.setattr("stylerig_au.edit.local.find_face", fake_find_face)
    edit = AU(12, 2)
    base = plain.render(ws)
    global_edit = plain.render(ws, edit)
    local_edit = local.render(ws, edit)
    import stylerig_au.edit.local as local_module

    bases = []
    real_render_base = local_module.render_base
    monkeypatch.setattr(local_module, "render_base", lambda *a, **k: bases.append(1) or real_render_base(*a, **k))
    local.render(ws, AU(1, 1))
    assert len(calls) == 1  # one landmark search per latent
    assert not bases  # and its unedited render was kept from the first edit
    other = ws + 0.1
    local.render(other, AU(1, 1))
    local.render(other, AU(2, 1))
    assert len(bases) == 1  # a new latent renders its own once
    assert torch.equal(local.edit(ws, edit), plain.edit(ws, edit))  # locality changes the picture, not the latent
    mask = torch.nn.functional.interpolate(torch.from_numpy(region_mask(mean_face(R), [12], MASK_SIDE, R))[None, None],
                                           size=(R, R), mode="area")[0, 0]
    outside = mask == 0
    assert (local_edit - base)[..., outside].abs().max() < 1e-4
    assert (local_edit - base)[..., mask == 1].abs().mean() > 0.2 * (global_edit - base)[..., mask == 1].abs().mean()
    # a frame of an interpolation is local too when its edit is given, plain without
    frame = local.interpolate(ws, edit, 3)[1]
    assert (local.render(ws, edit, ws=frame) - base)[..., outside].abs().max() < 1e-4
    assert torch.equal(local.render(ws, ws=frame), plain.render(ws, ws=frame))


def test_local_editor_without_a_face_renders_globally_with_a_warning(monkeypatch) -> None:
    G = tiny_mobilestylegan()
    ws = G.mapping(torch.randn(1, G.z_dim))[:, None].repeat(1, G.num_ws, 1)[0]
    monkeypatch.setattr("stylerig_au.edit.local.find_face", lambda image: None)
    local = Editor(G, _directions(G), local=True)
    with pytest.warns(StylerigWarning, match="no face is found .* without locality"):
        image = local.render(ws, AU(12, 2))
    assert torch.equal(image, Editor(G, _directions(G), local=False).render(ws, AU(12, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        local.render(ws, AU(12, 1))  # said once per latent (an animation's frames do not repeat it)
    with pytest.raises(StylerigError, match="no face is found"):
        local.landmarks(ws)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Editor(G, _directions(G), local=True).render(ws)  # unedited: no region needed, no warning


def test_cli_edit_commands_take_local_and_global() -> None:
    from click.testing import CliRunner

    from stylerig_au.cli import cli

    for command in ("edit", "animate", "sweep"):
        out = CliRunner().invoke(cli, [command, "--help"]).output
        assert "--local / --global" in out, command


def test_refinement_optimises_the_local_render() -> None:
    from stylerig_au.edit.refine import EditRefiner, RefineSettings, w_spread
    from tests.test_mapper import tiny_student

    G = tiny_mobilestylegan()
    torch.manual_seed(3)
    refiner = EditRefiner(G, tiny_student(), w_spread(G, 256), RefineSettings(steps=4, lr=0.2, outside=0.0, identity=0.0, side=64))
    ws = G.mapping(torch.randn(2, G.z_dim))[:, None].repeat(1, G.num_ws, 1)
    step = 0.1 * torch.randn_like(ws)
    change = torch.zeros(2, len(refiner.aus))
    change[:, refiner.aus.index(12)] = 2.0
    everywhere, nowhere = torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    plain = refiner.refine(ws, step, change)
    assert not torch.allclose(plain, step)
    # a region covering the picture renders as the plain edit: the same optimisation
    assert torch.allclose(refiner.refine(ws, step, change, masks=everywhere, local_from=4), plain, atol=1e-4)
    # an empty region shows nothing of the edit: no gradient, the start comes back
    assert torch.allclose(refiner.refine(ws, step, change, masks=nowhere, local_from=4), step, atol=1e-6)
    with pytest.raises(StylerigError, match="one mask per edit"):
        refiner.refine(ws, step, change, masks=everywhere[:1])


def test_local_editor_refines_the_whole_render(monkeypatch) -> None:
    from stylerig_au.edit.refine import EditRefiner, RefineSettings, w_spread
    from tests.test_mapper import tiny_student

    G = tiny_mobilestylegan()
    R = G.resolution
    ws = G.mapping(torch.randn(1, G.z_dim))[:, None].repeat(1, G.num_ws, 1)[0]
    monkeypatch.setattr("stylerig_au.edit.local.find_face", lambda image: FaceMarks((0, 0, R, R), mean_face(R)))
    refiner = EditRefiner(G, tiny_student(), w_spread(G, 256), RefineSettings(steps=2, outside=0.0, identity=0.0, side=64))
    seen = []
    original = refiner.refine

    def spy(*args, **kwargs):
        seen.append(kwargs.get("masks"))
        return original(*args, **kwargs)

    monkeypatch.setattr(refiner, "refine", spy)
    Editor(G, _directions(G), refiner=refiner).edit(ws, AU(12, 2))
    Editor(G, _directions(G), refiner=refiner, local=False).edit(ws, AU(12, 2))
    # both refine the whole render (refining through the local render paints texture in the region)
    assert seen == [None, None]
