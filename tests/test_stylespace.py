"""Style-space access (stylerig_au.edit.stylespace) on a tiny randomly initialised MobileStyleGAN."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.edit.stylespace import style_layers, style_offsets, styles
from stylerig_au.errors import StylerigError
from tests.test_mobilestylegan import tiny_mobilestylegan


@pytest.fixture(scope="module")
def G():
    return tiny_mobilestylegan()


def _ws(G, n=2):
    torch.manual_seed(0)
    return G.mapping(torch.randn(n, G.z_dim))[:, None].repeat(1, G.num_ws, 1)


def test_style_layers_lay_every_styled_layer_end_to_end(G) -> None:
    layers = style_layers(G)
    assert layers[0].start == 0 and len({lay.name for lay in layers}) == len(layers)
    for a, b in zip(layers, layers[1:]):
        assert b.start == a.start + a.channels
    assert {lay.slot for lay in layers} <= set(range(G.num_ws))
    s = styles(G, _ws(G))
    assert s.shape == (2, layers[-1].start + layers[-1].channels)
    first = layers[0]
    assert torch.allclose(s[:, :first.channels], first.module(_ws(G)[:, first.slot])[:, :, 0, 0])


def test_zero_offsets_render_the_same_and_hooks_go_away(G) -> None:
    ws = _ws(G)
    total = styles(G, ws).shape[1]
    with torch.no_grad():
        plain = G.synthesis(ws)
        with style_offsets(G, torch.zeros(total)):
            same = G.synthesis(ws)
        offset = torch.zeros(total)
        offset[style_layers(G)[3].start] = 5.0
        with style_offsets(G, offset):
            moved = G.synthesis(ws)
        after = G.synthesis(ws)
    assert torch.equal(plain, same) and torch.equal(plain, after)
    assert (moved - plain).abs().max() > 1e-4


def test_offset_rows_edit_their_own_image_and_gradients_flow(G) -> None:
    ws = _ws(G)
    total = styles(G, ws).shape[1]
    rows = torch.zeros(2, total)
    rows[1, style_layers(G)[3].start] = 5.0
    with torch.no_grad():
        plain = G.synthesis(ws)
        with style_offsets(G, rows):
            out = G.synthesis(ws)
    assert torch.equal(out[0], plain[0]) and not torch.equal(out[1], plain[1])
    offset = torch.zeros(total, requires_grad=True)
    with style_offsets(G, offset):
        G.synthesis(ws[:1]).sum().backward()
    assert offset.grad is not None and offset.grad.abs().sum() > 0


def test_bad_offsets_and_generators_are_refused(G, tiny_stylegan2) -> None:
    ws = _ws(G)
    total = styles(G, ws).shape[1]
    with pytest.raises(StylerigError, match="style offsets must be"):
        with style_offsets(G, torch.zeros(total + 1)):
            pass
    with pytest.raises(StylerigError, match="for 3 images, but 2"):
        with style_offsets(G, torch.zeros(3, total)):
            G.synthesis(ws)
    with pytest.raises(StylerigError, match="styles\\(\\) takes ws"):
        styles(G, ws[:, 0])
    with pytest.raises(StylerigError, match="MobileStyleGAN"):
        style_layers(tiny_stylegan2)


def test_channel_choice_and_offsets_file(G, tmp_path) -> None:
    """experiments/stylespace_edits.py: the channels chosen for an AU, and the file eval_edits.py reads back."""
    import json

    import numpy as np

    from tests.test_eval_edits_stats import load_script

    script = load_script("stylespace_edits")
    corr = np.array([0.9, -0.5, 0.2, -0.8])
    local = np.array([0.3, 0.9, 0.9, 0.8])
    spread = np.array([1.0, 2.0, 3.0, 4.0])
    channels, unit = script.offsets_for(corr, local, spread, top=2, min_local=0.6)
    assert channels.tolist() == [3, 1]  # channel 0 is the most correlated but not local
    assert np.allclose(unit, [-4.0, -0.5 / 0.8 * 2.0])
    channels, _ = script.offsets_for(corr, local, spread, top=2, min_local=0.6, allowed_side=np.array([1, 1, 1, 0], bool))
    assert channels.tolist() == [1, 2]
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    pose = np.array([[0.0], [1.0], [0.0], [1.0]])
    assert np.allclose(script.residual(y, pose).sum(), 0) and np.allclose(script.residual(pose, pose), 0)

    total = styles(G, _ws(G)).shape[1]
    record = {"format": "stylerig-au/stylespace-channels", "generator": G.name, "settings": {"step": 2.0},
              "aus": {"12": {"channels": [0, 5], "unit": [1.0, -2.0], "scale": 4.0}}}
    path = tmp_path / "channels.json"
    path.write_text(json.dumps(record))
    offset = script.load_edits(script.read_channels(path), G)[12]
    assert offset.shape == (total,) and offset[0] == 2.0 and offset[5] == -4.0 and offset.abs().sum() == 6.0
    path.write_text(json.dumps({**record, "generator": "another"}))
    with pytest.raises(ValueError, match="make them with experiments/stylespace_edits.py"):
        script.load_edits(script.read_channels(path), G)


def test_channel_effects_measure_each_channel_alone(G, monkeypatch) -> None:
    """experiments/stylespace_edits.py --select effect: each channel moved alone, its landmark motion and identity
    cost read on the probe faces (dlib faked: a random generator draws no face)."""
    import numpy as np

    from stylerig_au.edit import local, motion
    from stylerig_au.edit.local import FaceMarks
    from tests.test_eval_edits_stats import load_script
    from tests.test_local_edit import mean_face

    script = load_script("stylespace_edits")
    R = G.resolution
    face = FaceMarks((0, 0, R, R), mean_face(R))
    monkeypatch.setattr(local, "find_face", lambda image: face)
    rendered = []

    def lift_corners(image, f):  # the lip corners rise with the picture's mean brightness
        rendered.append(float(image.mean()))
        marks = f.landmarks.copy()
        marks[[48, 54], 1] -= image.mean() / 8
        return marks

    monkeypatch.setattr(motion, "marks_in_box", lift_corners)
    monkeypatch.setattr("stylerig_au.metrics.sface_distance", lambda a, b, boxes=None: np.array([0.1]))
    ws = _ws(G)
    spread = styles(G, ws).std(0).numpy()
    effects = script.channel_effects(G, ws, np.array([3, 7]), spread, [12, 4], sigmas=4.0)
    moved = effects["motion"]
    assert set(effects) == {"motion", "identity"} and moved.shape == (2, 2) and np.allclose(effects["identity"], 0.1)
    assert len(rendered) == 4  # two channels, each on both probe faces
    assert np.all(moved[:, 1] == 0) and np.all(moved[:, 0] > 0)  # AU4's brows do not move; AU12's corners rise
    # with a reader (the student's AU readings), its change per channel, against each face's unedited reading
    read = lambda images: np.stack([images.mean(dim=(1, 2, 3)).numpy(), np.zeros(len(images))], 1)  # noqa: E731
    effects = script.channel_effects(G, ws, np.array([3, 7]), spread, [12, 4], sigmas=4.0, read=read)
    assert effects["student"].shape == (2, 2) and np.all(effects["student"][:, 1] == 0)
    assert np.abs(effects["student"][:, 0]).max() > 1e-6  # a moved channel changes the picture's brightness


def test_eval_edits_refuses_a_wrong_channels_file_before_loading_models(tmp_path, capsys) -> None:
    from tests.test_eval_edits_stats import load_script

    eval_edits = load_script("eval_edits")
    bad = tmp_path / "channels.json"
    bad.write_text('{"format": "something else"}')
    assert eval_edits.main(["--stylespace", str(bad)]) == 2
    assert eval_edits.main(["--stylespace", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error:") and "stylespace_edits.py" in line for line in err)
