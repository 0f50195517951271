"""The differentiable landmark net: mirroring, soft-argmax, shapes and gradients, augmentation that moves
the points with the pixels, files, training (resume, settings, held-out agreement), the geometry reader,
the ``train-landmarks`` CLI, the refinement's geometry term; the bundled net on a real face (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylerig_au.au.landmark_net import FORMAT as lm_format, FORMAT_VERSION as lm_version
from stylerig_au.au.landmark_net import (FLIP, GeometryReader, LandmarkConfig, LandmarkNet, load_landmark_net,
                                         quantize_weight, save_landmark_net, soft_argmax, to_fractions, to_pixels)
from stylerig_au.au.landmark_train import (LandmarkTrainSettings, augment_with_landmarks, change_agreement,
                                           natural_geometry_share, point_error, train_landmark_net)
from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.cli import main
from stylerig_au.edit.refine import EditRefiner, RefineSettings, w_spread
from stylerig_au.errors import StylerigError
from stylerig_au.samples import FORMAT, FORMAT_VERSION

from .helpers import require_asset
from .test_mapper import sample_ws, tiny_student

TINY = LandmarkConfig(input_width=32, channels=(4, 8, 8, 8))


def tiny_net(seed: int = 0) -> LandmarkNet:
    torch.manual_seed(seed)
    return LandmarkNet(TINY).eval()


def face_points(n: int, seed: int = 0) -> torch.Tensor:
    """n plausible 68-point sets (fractions of the side): a fixed layout with the eyes apart, jittered."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(68, 2, generator=gen) * torch.tensor([0.6, 0.5]) + torch.tensor([0.2, 0.4])
    base[36:42] = torch.tensor([0.37, 0.48])
    base[42:48] = torch.tensor([0.63, 0.48])
    return base + 0.01 * torch.randn(n, 68, 2, generator=gen)


class FakeOpenFace(torch.nn.Module):
    """Stands in for OpenFaceAU's geometry term: a made-up PDM and random geometry SVR weights."""

    aus = list(AU_NUMBERS)

    def __init__(self) -> None:
        super().__init__()
        from tests.test_openface_pdm import _model

        self.pdm_mean, self.pdm_basis, self.pdm_eigen = _model()
        self.weights = torch.randn(238, 17, generator=torch.Generator().manual_seed(3)) / 10

    def fit(self, landmarks: torch.Tensor):
        from stylerig_au.au.pdm import fit_pdm

        return fit_pdm(landmarks, self.pdm_mean, self.pdm_basis, self.pdm_eigen)

    def geometry_part(self, landmarks: torch.Tensor) -> torch.Tensor:
        from stylerig_au.au.pdm import geometry_features

        return geometry_features(self.fit(landmarks.double()).local, self.pdm_basis) @ self.weights.double()


# ----------------------------------------------------------------------------- the network


def test_flip_is_a_mirror_permutation_of_dlibs_points():
    assert sorted(FLIP) == list(range(68)) and all(FLIP[FLIP[i]] == i for i in range(68))
    assert (FLIP[0], FLIP[36], FLIP[39], FLIP[48], FLIP[60], FLIP[31]) == (16, 45, 42, 54, 64, 35)
    assert all(FLIP[i] == i for i in (27, 28, 29, 30, 33, 51, 57, 62, 66))


def test_soft_argmax_finds_a_peak_at_its_cell_centre():
    logits = torch.full((1, 2, 4, 8), -50.0)
    logits[0, 0, 1, 6] = 50.0
    logits[0, 1, 3, 0] = 50.0
    xy = soft_argmax(logits, torch.tensor(1.0))
    torch.testing.assert_close(xy[0], torch.tensor([[6.5 / 8, 1.5 / 4], [0.5 / 8, 3.5 / 4]]))


@pytest.mark.parametrize("side", [64, 96])
def test_landmarks_lie_in_the_box_and_have_gradients(side):
    net = tiny_net()
    images = torch.rand(2, 3, side, side, requires_grad=True) * 2 - 1
    images.retain_grad()
    marks = net(images)
    assert marks.shape == (2, 68, 2) and marks.dtype == torch.float32
    left, top, right, bottom = TINY.box
    assert (marks[..., 0] >= left).all() and (marks[..., 0] <= right).all()
    assert (marks[..., 1] >= top).all() and (marks[..., 1] <= bottom).all()
    marks[:, 48, 1].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 3, 64, 32), (1, 1, 64, 64), (1, 3, 32, 32)])
def test_bad_input_shapes_are_user_errors(shape):
    with pytest.raises(StylerigError, match="landmark net needs"):
        tiny_net()(torch.zeros(shape))


def test_pixel_fraction_conversions_invert_each_other():
    p = torch.tensor([[0.0, 1023.0], [511.5, 12.25]])
    torch.testing.assert_close(to_pixels(to_fractions(p, 1024), 1024), p)
    assert float(to_fractions(torch.tensor(0.0), 256)) == pytest.approx(0.5 / 256)


def test_files_round_trip_and_bad_files_are_one_line_errors(tmp_path):
    net = tiny_net()
    save_landmark_net(net, tmp_path / "n.pt", {"heldout_nme": 0.1})
    back = load_landmark_net(tmp_path / "n.pt")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(back(x), net(x), atol=4e-3, rtol=0)  # conv weights are stored as int8
    assert back.info == {"heldout_nme": 0.1} and not any(p.requires_grad for p in back.parameters())
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(StylerigError) as err:
        load_landmark_net(tmp_path / "bad.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(StylerigError, match="does not exist"):
        load_landmark_net(tmp_path / "missing.pt")


def test_int8_weights_are_within_half_a_step_and_old_float16_files_still_load(tmp_path):
    weight = torch.randn(6, 3, 3, 3) * torch.linspace(0.01, 2, 6).view(-1, 1, 1, 1)
    weight[2] = 0  # an all-zero channel must not divide by zero
    q, scale = quantize_weight(weight)
    assert q.dtype == torch.int8 and scale.shape == (6,) and int(q.abs().max()) == 127
    error = (q.float() * scale.view(-1, 1, 1, 1) - weight).abs().flatten(1).amax(1)
    assert bool((error <= scale / 2 + 1e-7).all()) and float(error[2]) == 0
    net = tiny_net()
    record = {"format": lm_format, "format_version": lm_version, "config": net.config.to_dict(), "info": {},
              "state_dict": {k: v.half() if k.endswith(".weight") and v.ndim >= 2 else v for k, v in net.state_dict().items()}}
    stored = torch.load(save_landmark_net(net, tmp_path / "n.pt"), weights_only=False)
    assert stored["state_dict"]["heatmaps.weight"].dtype == torch.int8
    torch.save(record, tmp_path / "old.pt")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(load_landmark_net(tmp_path / "old.pt")(x), net(x), atol=2e-3, rtol=0)


# ----------------------------------------------------------------------------- training


def test_augmentation_moves_the_points_with_the_pixels():
    """A bright dot drawn at one point is found where the augmented landmarks say, mirrored or not."""
    n, side = 12, 128
    marks = face_points(n)
    images = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    for i in range(n):
        x, y = (marks[i, 36] * side).long()  # an outer eye corner: mirrored faces move it to point 45
        images[i, :, y - 2:y + 3, x - 2:x + 3] = 255
    settings = LandmarkTrainSettings(max_rotate_deg=15, max_scale=0.1, max_shift=0.05)
    out_images, out_marks = augment_with_landmarks(images, marks, torch.Generator().manual_seed(0), settings)
    ys, xs = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    mirrored = 0
    for i in range(n):
        weight = out_images[i].mean(0) + 1
        weight = weight * (weight > 0.8 * weight.max())
        found = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum() / side
        point = 45 if (out_marks[i, 45] - found).norm() < (out_marks[i, 36] - found).norm() else 36
        mirrored += point == 45
        assert (out_marks[i, point] - found).norm() < 0.01
    assert 0 < mirrored < n
    assert out_images.dtype == torch.float32 and out_images.min() >= -1 and out_images.max() <= 1


def test_point_error_is_in_inter_ocular_distances():
    from stylerig_au.au.landmark_train import iod

    marks = face_points(2)
    shifted = marks + torch.tensor([0.026, 0.0])  # the eyes are about 0.26 apart
    torch.testing.assert_close(point_error(shifted, marks), 0.026 / iod(marks))
    assert 0.09 < float(point_error(shifted, marks)[0]) < 0.11


def test_change_agreement_is_perfect_for_the_truth_and_reads_openface_terms():
    before = to_pixels(face_points(6, seed=1), 1024).double()
    after = before.clone()
    after[:, 48:68, 1] += torch.linspace(1, 12, 6)[:, None]  # the mouth moves down by different amounts
    agree = change_agreement(before, after, before, after, FakeOpenFace())
    assert agree["pairs"] == 6 and agree["features"]["nose_to_upper_lip"]["r"] == pytest.approx(1.0)
    assert agree["features"]["nose_to_upper_lip"]["mad"] == 0
    assert set(agree["geometry_aus"]) == {str(a) for a in AU_NUMBERS}


def test_natural_geometry_share_is_the_slope_of_the_geometry_term():
    openface = FakeOpenFace()
    marks = to_pixels(face_points(50, seed=2), 1024)
    geo = openface.geometry_part(marks)
    labels = (3 * (geo - geo.mean(0)) + 1).float()  # readings that rise 3 per unit of geometry
    share = natural_geometry_share(openface, marks, labels)
    assert share["12"] == pytest.approx(1 / 3, rel=1e-3)


def _training_data(n_seeds: int = 20, side: int = 64):
    """Faces drawn as dots at their landmarks: two rows per seed (a face, then an 'edit' of it)."""
    marks = face_points(2 * n_seeds, seed=4)
    images = torch.zeros(2 * n_seeds, 3, side, side, dtype=torch.uint8)
    for i in range(len(marks)):
        px = (marks[i] * side).long().clamp(0, side - 1)
        images[i, :, px[:, 1], px[:, 0]] = 255
    seeds = torch.arange(n_seeds).repeat_interleave(2)
    pairs = torch.stack([torch.arange(0, 2 * n_seeds, 2), torch.arange(1, 2 * n_seeds, 2)], 1)
    labels = torch.rand(2 * n_seeds, 17)
    return images, marks, seeds, pairs, labels


def test_training_writes_a_loadable_net_with_its_measures_and_resumes(tmp_path):
    torch.set_num_threads(1)
    images, marks, seeds, pairs, labels = _training_data()
    settings = LandmarkTrainSettings(epochs=2, batch=8, input_width=32, holdout=0.2, num_samples=len(images))
    logs = []
    info = train_landmark_net(images, marks, seeds, tmp_path / "n.pt", settings, tmp_path / "n.ckpt", pairs=pairs,
                              openface=FakeOpenFace(), progress=False, log=logs.append, labels=labels)
    assert info["train_faces"] == 32 and info["heldout_faces"] == 8 and len(info["history"]) == 2
    assert info["change"]["pairs"] == 4 and "geometry_aus" in info["change"] and set(info["geometry_share"]) == {str(a) for a in AU_NUMBERS}
    assert load_landmark_net(tmp_path / "n.pt").info["heldout_nme"] == info["heldout_nme"]
    train_landmark_net(images, marks, seeds, tmp_path / "n.pt", settings, tmp_path / "n.ckpt", progress=False, log=logs.append)
    assert any("resuming" in m for m in logs)
    other = LandmarkTrainSettings(epochs=2, batch=4, input_width=32, holdout=0.2, num_samples=len(images))
    with pytest.raises(StylerigError, match="other settings .*batch=8"):
        train_landmark_net(images, marks, seeds, tmp_path / "n.pt", other, tmp_path / "n.ckpt", progress=False, log=logs.append)


def test_training_data_errors(tmp_path):
    images, marks, seeds, _, _ = _training_data(n_seeds=6)
    settings = LandmarkTrainSettings(epochs=1, batch=64, input_width=32)
    with pytest.raises(StylerigError, match="only 10 training faces for batches of 64"):
        train_landmark_net(images, marks, seeds, tmp_path / "n.pt", settings, tmp_path / "c", progress=False, log=print)
    marks[0, 0, 0] = float("nan")
    with pytest.raises(StylerigError, match="must be finite"):
        train_landmark_net(images, marks, seeds, tmp_path / "n.pt", settings, tmp_path / "c", progress=False, log=print)


def write_landmark_dataset(folder, n_seeds: int = 12, edited: bool = False, side: int = 64) -> None:
    """An AU-samples dataset (or an edited-samples one: a face and its edit per seed) with plausible
    landmarks at 1024² and dot images drawn at them."""
    images, marks, seeds, _, labels = _training_data(n_seeds, side)
    rows = len(images) if edited else n_seeds
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": "fake", "psi": 0.8, "seed_start": 0,
            "chunk_size": rows, "image_size": side, "aus": list(AU_NUMBERS), "detector": "fake", "pose": "pitch, yaw, roll (radians)"}
    (folder / "meta.json").write_text(json.dumps(meta))
    chunk = {"seeds": seeds[:rows] if edited else torch.arange(rows), "w": torch.zeros(rows, 4), "aus": labels[:rows],
             "pose": torch.zeros(rows, 3), "landmarks": to_pixels(marks[:rows], 1024), "face_found": torch.ones(rows, dtype=torch.bool),
             "images": images[:rows]}
    chunk["face_found"][1] = False  # one sample without a face: left out
    if edited:
        chunk["edited"] = torch.tensor([False, True] * n_seeds)
    torch.save(chunk, folder / "chunk_00000.pt")


def test_cli_train_landmarks_writes_the_net_and_its_card(capsys, tmp_path):
    torch.set_num_threads(1)
    write_landmark_dataset(tmp_path / "plain", n_seeds=16)
    write_landmark_dataset(tmp_path / "edited", n_seeds=10, edited=True)
    out = tmp_path / "lm.pt"
    args = ["train-landmarks", "--data", str(tmp_path / "plain"), "--data", str(tmp_path / "edited"), "--out", str(out),
            "--epochs", "1", "--batch", "8", "--input-width", "32", "--holdout", "0.2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "held-out point error" in captured.out
    info = load_landmark_net(out).info
    assert "plain: 15 faces; edited: 19 faces (9 edited)" == info["data"]
    assert info["change"]["pairs"] == 2  # the last 2 of 10 seeds held out; seed 0 lost its face
    card = out.with_suffix(".md").read_text()
    assert "Made by: `stylerig-au train-landmarks" in card and "| corner_lift |" in card


@pytest.mark.parametrize("args, code, message", [
    (["--data", "{tmp}/none", "--out", "{tmp}/a.pt"], 1, "no AU sample dataset here"),
    (["--data", "{tmp}/plain", "--out", "{tmp}/a.pth"], 1, "must end in .pt"),
    (["--out", "{tmp}/a.pt"], 2, "Missing option '--data'"),
])
def test_cli_train_landmarks_user_errors(capsys, tmp_path, args, code, message):
    write_landmark_dataset(tmp_path / "plain")
    assert main(["train-landmarks", *[a.format(tmp=tmp_path) for a in args]]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "a.pt").exists()


# ----------------------------------------------------------------------------- reading geometry


def test_geometry_reader_passes_gradients_to_the_pixels_and_offers_the_shares():
    net = tiny_net()
    net.info = {"geometry_share": {"12": 0.5}}
    reader = GeometryReader(net, FakeOpenFace())
    images = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    read = reader(images)
    assert read.shape == (2, 17) and read.dtype == torch.float64
    read[:, reader.aus.index(12)].sum().backward()
    assert images.grad.abs().sum() > 0
    assert reader.share[reader.aus.index(12)] == 0.5 and torch.isnan(reader.share[0])


class FakeGeometryReader(torch.nn.Module):
    """A differentiable stand-in: the mean brightness of the lower half drives every AU's geometry term."""

    aus = list(AU_NUMBERS)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("share", torch.full((17,), 0.5, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lower = images[:, :, images.shape[-1] // 2:].mean(dim=(1, 2, 3))
        return lower[:, None].double().expand(-1, 17) * 10


def test_refinement_geometry_term_asks_for_the_natural_share_and_lowers_its_shortfall(tiny_stylegan2):
    G = tiny_stylegan2
    settings = RefineSettings(steps=6, lr=0.2, outside=0.0, identity=0.0, side=64, geometry=5.0)
    refiner = EditRefiner(G, tiny_student(), w_spread(G, 256), settings, geometry_reader=FakeGeometryReader())
    ws = sample_ws(G, 2)
    change = torch.zeros(2, len(refiner.aus))
    change[0, refiner.aus.index(12)] = 2.0
    change[1, refiner.aus.index(4)] = -1.0
    losses = []
    refiner.refine(ws, torch.zeros_like(ws), change, on_step=lambda i, l: losses.append(l))
    assert set(losses[0]) == {"target", "keep", "size", "geometry"}
    assert losses[-1]["geometry"] < losses[0]["geometry"]
    with pytest.raises(StylerigError, match="weights"):
        EditRefiner(G, tiny_student(), w_spread(G, 64), RefineSettings(geometry=-1))


def test_mapper_training_geometry_term_and_its_settings(tiny_stylegan2, tmp_path):
    from stylerig_au.edit.mapper import new_mapper
    from stylerig_au.edit.mapper_train import MapperTrainSettings, train_mapper
    from stylerig_au.perceptual import LPIPS

    from .test_mapper import make_dirs

    G = tiny_stylegan2
    torch.manual_seed(0)
    mapper = new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8)
    settings = MapperTrainSettings(steps=2, batch=2, image_size=64, save_every=2, lr=1e-3, identity_net="lpips", w_geometry=2.0)
    result = train_mapper(G, tiny_student(), LPIPS(), mapper, settings, tmp_path / "m.ckpt", progress=False,
                          geometry_reader=FakeGeometryReader())
    assert all(h["geometry"] >= 0 for h in result["history"]) and any(h["geometry"] > 0 for h in result["history"])
    assert settings.resume_key()["w_geometry"] == 2.0 and "w_geometry" not in MapperTrainSettings().resume_key()
    with pytest.raises(StylerigError, match="weights must be 0 or more"):
        MapperTrainSettings(w_geometry=-1).check()


def test_train_mapper_geometry_weight_with_a_missing_landmark_net_is_one_error_line(capsys, tmp_path):
    assert main(["train-mapper", "--out", str(tmp_path / "m.pt"), "--weight", "geometry=1",
                 "--landmark-net", str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err
    assert "none.pt' does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_bundled_landmark_net_agrees_with_dlib_on_a_held_out_face():
    require_asset("dlib-landmarks-68")
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import batch_to_uint8
    from stylerig_au.models import load_generator, seed_ws

    G = load_generator()
    with torch.no_grad():
        image = G.synthesis(seed_ws(G, 2_000_003, 1, 0.8)).clamp(-1, 1)
    dlib = landmarks_68(batch_to_uint8(image)[0])
    assert dlib is not None
    net = load_landmark_net()
    with torch.no_grad():
        ours = to_pixels(net(torch.nn.functional.interpolate(image, size=256, mode="area")), 1024)[0]
    error = float(point_error(ours[None], torch.from_numpy(np.asarray(dlib, np.float32))[None])[0])
    assert error < 0.05, f"mean point error {error:.3f} IOD"
    assert set(net.info["geometry_share"]) == {str(a) for a in AU_NUMBERS}
