"""Edited-sample datasets: a face and its mapper edit per seed, seeded requests, workers, resume, errors."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit.mapper import AUMapper, MapperConfig
from stylerig_au.edited_samples import EditRequests, build_edited_samples, edit_request
from stylerig_au.errors import StylerigError
from stylerig_au.samples import build_samples, load_samples


class NoFaceDetector:
    """Stands in for the OpenFace estimator: a tiny generator's 32² images hold no face dlib can find."""

    aus = list(AU_NUMBERS)


def tiny_mapper(G, seed: int = 0) -> AUMapper:
    """A mapper over all 17 AUs whose linear part moves every slot visibly."""
    torch.manual_seed(seed)
    mapper = AUMapper(MapperConfig(aus=tuple(AU_NUMBERS), num_ws=G.num_ws, w_dim=G.w_dim, slots=tuple(range(G.num_ws))))
    with torch.no_grad():
        mapper.linear.normal_(0, 0.3)
    return mapper.eval()


def _build(G, mapper, folder, workers: int = 1, num: int = 4, **kw):
    return build_edited_samples(G, mapper, folder, num, mapper_name="tiny", detector=NoFaceDetector(), chunk_size=2,
                                image_size=16, workers=workers, progress=False, **kw)


def test_edit_requests_are_seeded_and_in_range():
    r = EditRequests(max_aus=3, delta_min=0.5, delta_max=2.0, negative=0.5, gain_min=1.0, gain_max=2.0)
    seen_counts, seen_signs = set(), set()
    for seed in range(60):
        d = edit_request(seed, 17, r)
        assert torch.equal(d, edit_request(seed, 17, r))
        nz = d[d != 0]
        assert 1 <= len(nz) <= 3 and ((nz.abs() >= 0.5 - 1e-6) & (nz.abs() <= 4.0 + 1e-6)).all()
        seen_counts.add(len(nz))
        seen_signs.update(torch.sign(nz).tolist())
    assert seen_counts == {1, 2, 3} and seen_signs == {-1.0, 1.0}
    assert not torch.equal(edit_request(0, 17, r), edit_request(1, 17, r))


@pytest.mark.parametrize("bad", [dict(max_aus=0), dict(delta_min=0.0), dict(delta_min=3.0, delta_max=2.0),
                                 dict(gain_min=2.0, gain_max=1.0), dict(negative=1.5)])
def test_bad_requests_are_user_errors(bad):
    with pytest.raises(StylerigError):
        EditRequests(**bad).check()


def test_rows_pair_each_face_with_its_edit(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    mapper = tiny_mapper(G)
    data = load_samples(_build(G, mapper, tmp_path / "e", seed_start=100), with_images=True)
    assert data.seeds.tolist() == [100, 100, 101, 101, 102, 102, 103, 103]
    assert data.extra["edited"].tolist() == [False, True] * 4
    delta = data.extra["delta"]
    assert delta.shape == (8, 17) and (delta[0::2] == 0).all() and ((delta[1::2] != 0).sum(1) >= 1).all()
    for row, seed in zip(range(1, 8, 2), range(100, 104)):
        torch.testing.assert_close(delta[row], edit_request(seed, 17, EditRequests()))
    # the plain row is exactly what build_samples makes for that seed; the edit changes the image
    plain = load_samples(build_samples(G, tmp_path / "p", 4, seed_start=100, detector=NoFaceDetector(), chunk_size=2,
                                       image_size=16, progress=False), with_images=True)
    assert (data.images[0::2].int() - plain.images.int()).abs().max() <= 1
    torch.testing.assert_close(data.w[0::2], plain.w)
    assert (data.images[1::2].float() - data.images[0::2].float()).abs().mean() > 1.0
    assert data.meta["edits"]["mapper"] == "tiny" and data.meta["edits"]["gain_max"] == 2.5
    assert not data.face_found.any() and len(data.valid()) == 0 and data.valid().extra["delta"].shape == (0, 17)


def test_workers_resume_and_other_settings_are_refused(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    mapper = tiny_mapper(G)
    one = load_samples(_build(G, mapper, tmp_path / "one"), with_images=True)
    two_dir = _build(G, mapper, tmp_path / "two", workers=2)
    two = load_samples(two_dir, with_images=True)
    assert one.seeds.tolist() == two.seeds.tolist()
    torch.testing.assert_close(one.extra["delta"], two.extra["delta"])
    assert (one.images.int() - two.images.int()).abs().max() <= 1
    (two_dir / "chunk_00001.pt").unlink()
    _build(G, mapper, two_dir, num=6)  # remakes chunk 1, adds chunk 2
    assert load_samples(two_dir).seeds.tolist() == [s for s in range(6_000_000, 6_000_006) for _ in range(2)]
    with pytest.raises(StylerigError, match="holds another dataset.*edits"):
        _build(G, mapper, two_dir, requests=EditRequests(gain_max=2.0))


def test_mapper_must_cover_the_labelled_aus(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    partial = AUMapper(MapperConfig(aus=(6, 12), num_ws=G.num_ws, w_dim=G.w_dim, slots=(0, 1)))
    with pytest.raises(StylerigError, match="use a mapper for all of them"):
        _build(G, partial, tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_refined_rows_follow_the_refinement_path(tiny_stylegan2, tmp_path):
    from stylerig_au.edit.refine import RefineSettings

    G = tiny_stylegan2
    mapper = tiny_mapper(G)

    class BrightnessStudent(torch.nn.Module):
        """Reads every AU as the mean brightness of the image (differentiable, no weights to train)."""

        aus = list(AU_NUMBERS)

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None].repeat(1, 17) * 3 + 1

    settings = RefineSettings(outside=0, identity=0, lr=0.5, side=64)
    folder = _build(G, mapper, tmp_path / "r", num=2, refine_at=(0, 3), refine_student=BrightnessStudent(),
                    refine_student_name="brightness", refine_settings=settings)
    data = load_samples(folder, with_images=True)
    assert data.seeds.tolist() == [6_000_000] * 3 + [6_000_001] * 3
    assert data.extra["refine_steps"].tolist() == [-1, 0, 3] * 2 and data.extra["edited"].tolist() == [False, True, True] * 2
    assert data.meta["edits"]["refine"]["at"] == [0, 3] and data.meta["edits"]["refine"]["student"] == "brightness"
    # the 0-step row is the mapper's edit; the refinement then moves the image
    mapper_only = load_samples(_build(G, mapper, tmp_path / "m", num=2), with_images=True)
    assert (data.images[1::3].int() - mapper_only.images[1::2].int()).abs().max() <= 1
    assert (data.images[2::3].float() - data.images[1::3].float()).abs().mean() > 0.5
    # each row stores its Δw+: zeros for the face, the mapper's step, then the refined step that made the image
    dw = data.extra["dw"]
    assert dw.dtype == torch.float16 and dw.shape == (6, G.num_ws, G.w_dim) and (dw[0::3] == 0).all()
    ws = data.w[0::3, None].repeat(1, G.num_ws, 1)
    with torch.no_grad():
        torch.testing.assert_close(dw[1::3].float(), mapper(ws, data.extra["delta"][1::3]), atol=2e-3, rtol=1e-2)
        refined = (G.synthesis(ws + dw[2::3].float()).clamp(-1, 1) + 1) * 127.5
    assert (dw[2::3] != dw[1::3]).any()
    from stylerig_au.samples import stored_images

    assert (stored_images(refined / 127.5 - 1, 16).float() - data.images[2::3].float()).abs().mean() < 2.0
    with pytest.raises(StylerigError, match="need a student to refine against"):
        _build(G, mapper, tmp_path / "bad", refine_at=(3,))


@pytest.mark.parametrize("args, message", [
    (["--num", "2", "--refine-student", "s.pt"], "--refine-student, --refine-colour and --refine-geometry need --refine-at"),
    (["--num", "2", "--refine-colour", "20"], "need --refine-at"),
    (["--num", "2", "--refine-at", "4", "--refine-geometry", "-1"], "--refine-geometry"),
    (["--num", "2", "--refine-at", "4", "--refine-at", "4"], "must differ"),
    (["--num", "0"], "--num"),
])
def test_cli_usage_errors(capsys, tmp_path, args, message):
    from stylerig_au.cli import main

    assert main(["edited-samples", str(tmp_path / "d"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_cli_edited_samples_then_fine_tune_the_bundled_student(capsys, tmp_path):
    """The real generator, mapper and OpenFace: one chunk of 16 faces and their edits, labelled; the
    bundled student fine-tuned on them for one epoch."""
    from stylerig_au.au.student import load_student
    from stylerig_au.cli import main

    from .helpers import require_asset

    for asset in ("mobilestylegan-ffhq-1024", "dlib-landmarks-68", "openface-2.2-au"):
        require_asset(asset)
    folder = tmp_path / "edits"
    torch.set_num_threads(2)
    assert main(["edited-samples", str(folder), "--num", "1"]) == 0
    assert "16 faces (whole chunks of 16), 32 images" in capsys.readouterr().out
    data = load_samples(folder, with_images=True)
    assert data.face_found.sum() >= 28 and data.images.shape == (32, 3, 256, 256)
    plain, edit = data.aus[0::2], data.aus[1::2]
    asked = data.extra["delta"][1::2] != 0
    found = data.face_found[0::2] & data.face_found[1::2]
    # OpenFace sees the asked AUs move in the asked direction on most of the faces
    moved = ((edit - plain) * torch.sign(data.extra["delta"][1::2]))[asked & found[:, None]]
    assert (moved > 0).float().mean() > 0.6, moved
    out = tmp_path / "tuned.pt"
    from stylerig_au import pretrained

    assert main(["train-detector", "--edited", str(folder), "--init", str(pretrained.own_path("student-au-detector", None)),
                 "--epochs", "1", "--batch", "8", "--lr", "1e-4", "--out", str(out)]) == 0
    assert load_student(out).info["settings"]["init"].endswith("student-au-detector.pt")
