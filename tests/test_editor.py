"""The Editor facade on a tiny StyleGAN2: edits, rendering, latent records, interpolation, methods."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit import AU, Editor, LinearDirections
from stylerig_au.errors import StylerigError


def make_dirs(G, **kwargs) -> LinearDirections:
    g = torch.Generator().manual_seed(3)
    middle = torch.tensor([s.group == "middle" for s in G.slots])
    return LinearDirections.for_generator(G, {12: torch.randn(G.w_dim, generator=g), 6: torch.randn(G.w_dim, generator=g)},
                                          masks={12: middle}, scales={12: 3.0, 6: 3.0}, **kwargs)


def sample_ws(G, n: int = 2) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return G.mapping(torch.randn(n, G.z_dim))[:, None].repeat(1, G.num_ws, 1)


def test_edit_changes_image_only_through_masked_slots(tiny_stylegan2):
    G = tiny_stylegan2
    editor = Editor(G, make_dirs(G))
    ws = sample_ws(G)
    out = editor.edit(ws, AU(12, +2))
    masked = [s.index for s in G.slots if s.group == "middle"]
    assert masked and len(masked) < G.num_ws
    for s in range(G.num_ws):
        assert torch.equal(out[:, s], ws[:, s]) == (s not in masked)
    before, after = editor.render(ws), editor.render(ws, AU(12, +2))
    assert after.shape == (2, 3, G.resolution, G.resolution) and after.abs().max() <= 1.0
    assert (after - before).abs().max() > 1e-3
    # a restriction outside AU12's slots leaves the image bit-identical
    coarse_only = editor.render(ws, AU(12, +2).only_layers("coarse"))
    assert torch.equal(coarse_only, before)


def test_latent_records(tiny_stylegan2):
    G = tiny_stylegan2
    editor = Editor(G, make_dirs(G))
    ws = sample_ws(G, 1)[0]
    record = {"ws": ws, "noise": {}, "generator": G.name}
    assert torch.equal(editor.edit(record, AU(6, 1)), editor.edit(ws, AU(6, 1)))
    assert torch.equal(editor.render(record, AU(6, 1)), editor.render(ws[None], AU(6, 1)))
    with pytest.raises(StylerigError, match="made with generator"):
        editor.edit({**record, "generator": "other"}, AU(6, 1))
    with pytest.raises(StylerigError, match="expected ws"):
        editor.edit([1, 2], AU(6, 1))


def test_absolute_target_uses_measure_or_current(tiny_stylegan2):
    G = tiny_stylegan2
    calls = []

    def measure(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape)
        out = torch.zeros(images.shape[0], len(AU_NUMBERS))
        out[:, AU_NUMBERS.index(12)] = 1.0
        return out

    ws = sample_ws(G)
    with pytest.raises(StylerigError, match="current AU intensities"):
        Editor(G, make_dirs(G)).edit(ws, AU(12, to=3.0))
    editor = Editor(G, make_dirs(G), measure=measure)
    measured = editor.edit(ws, AU(12, to=3.0))
    assert calls == [(2, 3, G.resolution, G.resolution)]
    assert torch.allclose(measured, editor.edit(ws, AU(12, +2.0)))
    given = editor.edit(ws, AU(12, to=3.0), current_aus={12: 2.5})
    assert len(calls) == 1 and torch.allclose(given, editor.edit(ws, AU(12, +0.5)))


def test_interpolation_endpoints_and_frames(tiny_stylegan2):
    G = tiny_stylegan2
    editor = Editor(G, make_dirs(G))
    ws = sample_ws(G)
    edit = AU(12, 2) + AU(6, -1)
    frames = editor.interpolate(ws, edit, 5)
    assert len(frames) == 5
    assert torch.equal(frames[0], ws) and torch.equal(frames[-1], editor.edit(ws, edit))
    assert torch.allclose(frames[2], editor.edit(ws, 0.5 * edit), atol=1e-5)
    images = [editor.render(ws, ws=f) for f in frames]
    assert torch.equal(images[0], editor.render(ws))
    with pytest.raises(StylerigError, match="at least 2"):
        editor.interpolate(ws, edit, 1)


def test_interpolation_keeps_untouched_slots(tiny_stylegan2):
    G = tiny_stylegan2
    editor = Editor(G, make_dirs(G))
    ws = sample_ws(G)
    masked = [s.index for s in G.slots if s.group == "middle"]
    for frame in editor.interpolate(ws, AU(12, 2), 4):
        for s in range(G.num_ws):
            if s not in masked:
                assert torch.equal(frame[:, s], ws[:, s])


def test_methods_and_mismatch(tiny_stylegan2):
    G = tiny_stylegan2
    with pytest.raises(StylerigError, match="needs an AU mapper"):
        Editor(G, make_dirs(G), method="mapper")
    with pytest.raises(StylerigError, match="unknown edit method 'magic'; choose one of: linear, mapper"):
        Editor(G, make_dirs(G), method="magic")
    with pytest.raises(StylerigError, match="needs LinearDirections"):
        Editor(G)
    other = LinearDirections({12: torch.ones(G.w_dim)}, slots=G.slots, generator="another")
    with pytest.raises(StylerigError, match="are for 'another'"):
        Editor(G, other)


def test_editor_refuses_changes_beyond_the_scale_like_the_cli(tiny_stylegan2):
    """Same scale, same rule: a relative change over ±5 (summed per AU) is refused by the API too."""
    from stylerig_au.edit import AU, Editor
    from stylerig_au.edit.directions import LinearDirections
    from stylerig_au.errors import StylerigError

    G = tiny_stylegan2
    dirs = LinearDirections.for_generator(G, {12: torch.ones(G.w_dim)})
    ws = G.w_avg.expand(1, G.num_ws, -1).clone()
    editor = Editor(G, dirs)
    assert editor.edit(ws, AU(12, 5)).shape == ws.shape
    for too_far in (AU(12, 50), AU(12, 3) + AU(12, 3), 10 * AU(12, 1)):
        with pytest.raises(StylerigError, match="outside ±5"):
            editor.edit(ws, too_far)
