"""Refining an edit for one face against the student detector (:mod:`stylerig_au.edit.refine`): the
optimisation on a tiny StyleGAN2 with a tiny student, the editor and ``edit --refine`` wiring, and one
refined edit on the real generator (slow)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au.cli import main
from stylerig_au.edit import AU, Editor, only_layers
from stylerig_au.edit.refine import EditRefiner, RefineSettings, w_spread
from stylerig_au.errors import StylerigError

from .helpers import require_asset
from .test_edit_cli import random_directions, setup  # noqa: F401  (setup is a fixture)
from .test_mapper import sample_ws, tiny_student

# steps of a tiny refinement, without the LPIPS and face-network terms (those need the real assets)
TINY = RefineSettings(steps=6, lr=0.2, outside=0.0, identity=0.0, side=64)


def tiny_refiner(G, settings: RefineSettings = TINY) -> EditRefiner:
    return EditRefiner(G, tiny_student(), w_spread(G, 256), settings)


def test_refinement_lowers_the_loss_on_the_allowed_slots_only(tiny_stylegan2):
    G = tiny_stylegan2
    refiner = tiny_refiner(G)
    ws = sample_ws(G, 2)
    step = torch.zeros_like(ws)
    step[:, 3] = 0.1  # a starting edit on one slot
    change = torch.zeros(2, len(refiner.aus))
    change[0, refiner.aus.index(12)] = 2.0  # row 1 asks for nothing
    slots = torch.zeros(G.num_ws, dtype=torch.bool)
    slots[2:5] = True
    losses = []
    out = refiner.refine(ws, step, change, slots, on_step=lambda i, l: losses.append(l))
    assert out.shape == ws.shape and len(losses) == TINY.steps
    assert losses[-1]["target"] < losses[0]["target"]
    assert torch.equal(out[1], step[1])  # nothing asked: returned as it came
    moved = (out[0] != step[0]).any(dim=1)
    assert moved[2:5].all() and not moved[:2].any() and not moved[5:].any()
    assert set(losses[0]) == {"target", "keep", "size"}
    with_colour = tiny_refiner(G, RefineSettings(steps=1, outside=0.0, identity=0.0, colour=5.0, side=64))
    seen = []
    with_colour.refine(ws, step, change, on_step=lambda i, l: seen.append(l))
    assert seen[0]["colour"] >= 0 and set(seen[0]) == {"target", "keep", "size", "colour"}


def test_zero_steps_and_bad_inputs(tiny_stylegan2):
    G = tiny_stylegan2
    refiner = tiny_refiner(G, RefineSettings(steps=0, outside=0.0, identity=0.0))
    ws = sample_ws(G, 1)
    step = torch.randn_like(ws) * 0.1
    change = torch.zeros(1, len(refiner.aus))
    change[0, 0] = 1.0
    assert torch.equal(refiner.refine(ws, step, change), step)
    with pytest.raises(StylerigError, match="same shape"):
        refiner.refine(ws, step[:, :3], change)
    with pytest.raises(StylerigError, match="one change per student AU"):
        refiner.refine(ws, step, change[:, :5])
    for bad, message in [(RefineSettings(steps=-1), "0 or more"), (RefineSettings(lr=0), "positive"),
                         (RefineSettings(keep=-1), "weights"), (RefineSettings(colour=-1), "weights"), (RefineSettings(side=32), "at least 64"),
                         (RefineSettings(identity_net="arcface"), "identity net must be one of sface, dlib")]:
        with pytest.raises(StylerigError, match=message):
            EditRefiner(G, tiny_student(), w_spread(G, 64), bad)
    with pytest.raises(StylerigError, match="w_std must have shape"):
        EditRefiner(G, tiny_student(), torch.ones(3), TINY)


def test_editor_refines_within_the_edits_layers(tiny_stylegan2):
    G = tiny_stylegan2
    dirs = random_directions(G)
    plain, refined = Editor(G, dirs, local=False), Editor(G, dirs, refiner=tiny_refiner(G), local=False)  # no face to find
    ws = sample_ws(G, 1)[0]  # a single latent [num_ws, w_dim]
    edit = only_layers(AU(12, 2), "middle")
    start, out = plain.edit(ws, edit), refined.edit(ws, edit)
    assert out.shape == ws.shape and not torch.equal(out, start)
    middle = torch.tensor([s.group == "middle" for s in G.slots])
    assert torch.equal(out[~middle], ws[~middle])  # other slots copied bit for bit
    with pytest.raises(StylerigError, match="another generator"):
        Editor(G, dirs, refiner=tiny_refiner(copy.deepcopy(G)))


def test_edit_command_refines(setup, tmp_path, capsys):  # noqa: F811
    for asset in ("lpips-vgg16", "sface", "dlib-face-recognition", "dlib-landmarks-68"):
        require_asset(asset)
    plain, refined = tmp_path / "plain.png", tmp_path / "refined.png"
    base = ["edit", str(setup["latent"]), "--au", "12=+2", *setup["args"]]
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--refine", "2", "--out", str(refined)]) == 0
    assert "wrote the edited aligned face" in capsys.readouterr().out
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(refined)))
    assert main([*base, "--refine", "-1", "--out", str(tmp_path / "bad.png")]) == 2
    assert main([*base, "--refine-colour", "20", "--out", str(tmp_path / "bad.png")]) == 2  # without --refine
    assert main([*base, "--refine", "1", "--refine-colour", "-1", "--out", str(tmp_path / "bad.png")]) == 2
    assert not (tmp_path / "bad.png").exists()
    assert main([*base, "--refine", "1", "--refine-colour", "20", "--out", str(tmp_path / "colour.png")]) == 0
    assert main([*base, "--refine", "1", "--identity-net", "dlib", "--out", str(tmp_path / "dlib.png")]) == 0
    assert main([*base, "--refine", "1", "--identity-net", "arcface", "--out", str(tmp_path / "bad.png")]) == 2
    assert main([*base, "--refine-geometry", "2", "--out", str(tmp_path / "bad.png")]) == 2  # without --refine
    assert not (tmp_path / "bad.png").exists()
    require_asset("openface-2.2-au")  # the geometry term reads OpenFace's geometry SVR weights
    assert main([*base, "--refine", "1", "--refine-geometry", "2", "--out", str(tmp_path / "geometry.png")]) == 0


@pytest.mark.slow
def test_refined_mapper_edit_on_the_real_generator():
    """Three refinement steps of a +2 AU12 mapper edit: the student's loss falls and the result renders."""
    from stylerig_au.au.student import load_student
    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.models import load_generator, seed_ws

    require_asset("mobilestylegan-ffhq-1024")
    require_asset("sface")  # the default identity term
    G = load_generator()
    mapper = load_default_mapper(G)
    student = load_student().net.eval()
    refiner = EditRefiner(G, student, mapper.w_std, RefineSettings(steps=3))
    ws = seed_ws(G, 2_000_000, 1, 0.8, "cpu")
    delta = torch.zeros(1, len(mapper.aus))
    delta[0, mapper.aus.index(12)] = 2.0
    with torch.no_grad():
        step = mapper(ws, delta)
    change = torch.zeros(1, len(refiner.aus))
    change[0, refiner.aus.index(12)] = 2.0
    losses = []
    out = refiner.refine(ws, step, change, on_step=lambda i, l: losses.append(l))
    assert set(losses[0]) == {"target", "keep", "outside", "identity", "size"}
    total = [l["target"] + 3 * l["keep"] + 4 * l["outside"] + 4 * l["identity"] for l in losses]
    assert total[-1] < total[0]
    assert torch.isfinite(out).all() and not torch.equal(out, step)


def test_outside_term_reuses_the_faces_lpips_features(tiny_stylegan2):
    """The masked face's LPIPS features are computed once; the loss is what a plain LPIPS call gives."""
    from stylerig_au.perceptual import LPIPS

    G = tiny_stylegan2
    torch.manual_seed(0)
    lpips = LPIPS().eval()
    for p in lpips.parameters():
        p.data.normal_(0, 0.05).abs_()  # random, non-negative (LPIPS's linear heads are)

    class PlainCall(torch.nn.Module):  # an LPIPS without distance_to_features: the loss recomputes both sides
        def forward(self, x, y):
            return lpips(x, y)

    settings = RefineSettings(steps=2, lr=0.2, outside=4.0, identity=0.0, side=64)
    ws = sample_ws(G, 2)
    step = torch.zeros_like(ws)
    student = tiny_student()
    change = torch.zeros(2, len(student.aus))
    change[:, list(student.aus).index(12)] = 2.0
    runs = []
    for model in (lpips, PlainCall()):
        seen = []
        out = EditRefiner(G, student, w_spread(G, 256), settings, lpips=model).refine(
            ws, step, change, on_step=lambda i, l: seen.append(l))
        runs.append((out, seen))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    assert runs[0][1][0]["outside"] == pytest.approx(runs[1][1][0]["outside"], rel=1e-5) and runs[0][1][0]["outside"] > 0


def test_refine_path_gives_each_step_count_in_one_run(tiny_stylegan2):
    G = tiny_stylegan2
    ws = sample_ws(G, 2)
    step = torch.zeros_like(ws)
    student = tiny_student()
    change = torch.zeros(2, len(student.aus))
    change[0, list(student.aus).index(12)] = 2.0
    w_std = w_spread(G, 256)
    path = EditRefiner(G, student, w_std, TINY).refine_path(ws, step, change, at=[0, 2, 4])
    assert sorted(path) == [0, 2, 4] and torch.equal(path[0], step)
    for k in (2, 4):
        alone = EditRefiner(G, student, w_std, RefineSettings(steps=k, lr=TINY.lr, outside=0.0, identity=0.0, side=64))
        torch.testing.assert_close(path[k], alone.refine(ws, step, change))
    assert not torch.equal(path[2], path[4])
    with pytest.raises(StylerigError, match="step counts"):
        EditRefiner(G, student, w_std, TINY).refine_path(ws, step, change, at=[])


def test_colour_term_compares_with_the_given_reference(tiny_stylegan2):
    """refine_path(colour_reference=...): the colour term reads the edit against those images (e.g. the edit's
    motion transfer) instead of the unedited face; the unedited face as the reference changes nothing."""
    from stylerig_au.invert import render

    G = tiny_stylegan2
    refiner = tiny_refiner(G, RefineSettings(steps=2, outside=0.0, identity=0.0, colour=5.0, side=64))
    ws = sample_ws(G, 2)
    step = torch.zeros_like(ws)
    step[:, 3] = 0.1
    change = torch.zeros(2, len(refiner.aus))
    change[:, refiner.aus.index(12)] = 2.0
    with torch.no_grad():
        faces = render(G, ws, {}).clamp(-1, 1)
    plain = refiner.refine_path(ws, step, change, [2])[2]
    same = refiner.refine_path(ws, step, change, [2], colour_reference=faces)[2]
    other = refiner.refine_path(ws, step, change, [2], colour_reference=-faces)[2]
    assert torch.allclose(plain, same, atol=1e-6) and not torch.allclose(plain, other, atol=1e-4)
    with pytest.raises(StylerigError, match="one colour reference image per edit"):
        refiner.refine_path(ws, step, change, [2], colour_reference=faces[:1])
