"""The demo's AU-edit stage on a tiny StyleGAN2: honest 'not done' without directions, files and grid cells with them."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from stylerig_au import demo
from stylerig_au.align import FaceTransform
from stylerig_au.edit import LinearDirections
from stylerig_au.edit import directions as directions_module
from stylerig_au.edit import photo as photo_module


def _inputs(G):
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(2)))[0]
    record = {"ws": w[None].repeat(G.num_ws, 1), "noise": {}, "generator": G.name}
    photo = np.full((64, 48, 3), 120, np.uint8)
    quad = np.array([[8.0, 16.0], [8.0, 48.0], [40.0, 48.0], [40.0, 16.0]])  # a 32-px square inside the photo
    return record, photo, FaceTransform(quad=quad, source_size=(48, 64), output_size=G.resolution)


def test_without_directions_nothing_is_pretended(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    record, photo, transform = _inputs(G)
    result = demo.DemoResult(out_dir=tmp_path)
    assert demo._demo_edits(G, record, photo, transform, tmp_path, "x", "cpu", result, lambda m: None) == {}
    assert result.edits == {} and list(tmp_path.iterdir()) == []
    assert len(result.not_done) == 1 and "no learned AU directions for tiny-stylegan2-32" in result.not_done[0]


def test_with_directions_edits_are_written(tiny_stylegan2, tmp_path, monkeypatch):
    G = tiny_stylegan2
    record, photo, transform = _inputs(G)
    g = torch.Generator().manual_seed(0)
    dirs = LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in (1, 2, 4, 6, 12)},
                                          scales={a: 3.0 for a in (1, 2, 4, 6, 12)})
    monkeypatch.setattr(directions_module, "load_default_directions", lambda G: dirs)
    monkeypatch.setattr(photo_module.OpenFaceMeasure, "__call__",
                        lambda self, images: {a: images.mean(dim=(1, 2, 3)) for a in (1, 2, 4, 6, 12, 26)})
    result = demo.DemoResult(out_dir=tmp_path)
    pasted = demo._demo_edits(G, record, photo, transform, tmp_path, "x", "cpu", result, lambda m: None)
    assert list(result.edits) == list(pasted) == ["smile", "brow_lowerer", "brow_raise"]  # no AU26 direction
    assert any("'jaw_drop'" in line and "AU26" in line for line in result.not_done)
    # a random generator draws no face for dlib: no motion-transfer numbers, and one line saying why
    assert "motion transfer of the edits: dlib finds no face in the reconstruction" in result.not_done
    assert not any("motion_transfer" in e for e in result.edits.values())
    for name, image in pasted.items():
        assert image.shape == photo.shape and not np.array_equal(image, photo)
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"x_{name}.png")), image)
        assert set(result.edits[name]["openface_change"]) <= {"AU1", "AU2", "AU4", "AU6", "AU12"}


def test_with_a_mapper_the_demo_adds_a_mapper_smile(tiny_stylegan2, tmp_path, monkeypatch):
    from stylerig_au.edit import mapper as mapper_module

    G = tiny_stylegan2
    record, photo, transform = _inputs(G)
    g = torch.Generator().manual_seed(0)
    dirs = LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in (1, 2, 4, 6, 12, 26)},
                                          scales={a: 3.0 for a in (1, 2, 4, 6, 12, 26)})
    mapper = mapper_module.new_mapper(G, dirs, num_samples=256)
    monkeypatch.setattr(directions_module, "load_default_directions", lambda G: dirs)
    monkeypatch.setattr(mapper_module, "load_default_mapper", lambda G, device="cpu": mapper)
    monkeypatch.setattr(photo_module.OpenFaceMeasure, "__call__",
                        lambda self, images: {a: images.mean(dim=(1, 2, 3)) for a in (1, 2, 4, 6, 12, 26)})
    pairs = []

    def fake_identity(a, b, device="cpu", shared_frame=False):  # a random generator draws no face for dlib
        pairs.append((a, b))
        return {"dlib": np.array([0.25]), "sface": np.array([0.125])}

    monkeypatch.setattr("stylerig_au.metrics.identity_distances", fake_identity)
    from stylerig_au.edit import local, motion
    from tests.test_local_edit import mean_face

    face = local.FaceMarks((0, 0, G.resolution, G.resolution), mean_face(G.resolution))
    monkeypatch.setattr(local, "find_face", lambda image: face)  # a random generator draws no face for dlib
    monkeypatch.setattr(motion, "marks_in_box", lambda image, f: f.landmarks + np.array([0.0, -0.5]))
    result = demo.DemoResult(out_dir=tmp_path)
    pasted = demo._demo_edits(G, record, photo, transform, tmp_path, "x", "cpu", result, lambda m: None)
    assert list(result.edits) == list(pasted) == ["smile", "brow_lowerer", "jaw_drop", "brow_raise", "smile_mapper"]
    assert not result.not_done
    # every edit's identity is measured against the unedited reconstruction (the same first image each time),
    # as shown (locally) and by motion transfer
    for n in result.edits:
        assert result.edits[n]["identity_to_reconstruction"] == {"dlib": 0.25, "sface": 0.125}
        assert result.edits[n]["motion_transfer"]["identity_to_reconstruction"] == {"dlib": 0.25, "sface": 0.125}
        assert set(result.edits[n]["motion_transfer"]["openface_change"]) == set(result.edits[n]["openface_change"])
    assert len(pairs) == 10 and all(a is pairs[0][0] for a, _ in pairs)
    # an untrained mapper edits exactly like the linear directions it starts from
    assert np.abs(pasted["smile"].astype(int) - pasted["smile_mapper"]).max() <= 1
