"""Distilling refined edits into the mapper: the targets read from an edited-samples dataset, the distil
term, training with it (alone, without renders, and beside the image terms) and ``train-mapper --distil``."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit.distil import DistilTargets
from stylerig_au.edit.mapper import load_mapper
from stylerig_au.edit.mapper_train import LOSS_NAMES, MapperTrainSettings, train_mapper
from stylerig_au.edit.refine import RefineSettings
from stylerig_au.errors import StylerigError
from stylerig_au.perceptual import LPIPS
from tests.test_edited_samples import _build, tiny_mapper
from tests.test_mapper import tiny_student


class BrightnessStudent(torch.nn.Module):
    """Reads every AU as the image's mean brightness: a refinement against it changes Δw+ quickly."""

    aus = list(AU_NUMBERS)

    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None].repeat(1, 17) * 3 + 1


@pytest.fixture(scope="module")
def refined(_tiny_stylegan2_master, tmp_path_factory):
    """An edited-samples folder of 4 faces, each edit stored after 0 and 3 refinement steps."""
    folder = tmp_path_factory.mktemp("distil") / "refined"
    settings = RefineSettings(outside=0, identity=0, lr=0.5, side=64)
    return _build(_tiny_stylegan2_master, tiny_mapper(_tiny_stylegan2_master), folder, num=4, refine_at=(0, 3),
                  refine_student=BrightnessStudent(), refine_student_name="brightness", refine_settings=settings)


def test_targets_are_the_refined_rows(tiny_stylegan2, refined):
    from stylerig_au.samples import load_samples

    G = tiny_stylegan2
    targets = DistilTargets(refined, G, list(AU_NUMBERS))
    data = load_samples(refined)
    assert torch.equal(DistilTargets(refined, G, list(AU_NUMBERS), data=load_samples(refined, with_images=True)).dw, targets.dw)
    assert len(targets) == 4 and targets.steps == 3 and targets.seeds.tolist() == list(range(6_000_000, 6_000_004))
    assert targets.ws.shape == (4, G.num_ws, G.w_dim) and targets.dw.dtype == torch.float32
    torch.testing.assert_close(targets.dw, data.extra["dw"][2::3].float())
    torch.testing.assert_close(targets.ws[:, 0], data.w[0::3])
    assert ((targets.delta != 0).sum(1) >= 1).all()  # every stored edit was asked for something
    with pytest.raises(StylerigError, match="not 0"):  # the mapper's own edits are no refinement to learn
        DistilTargets(refined, G, list(AU_NUMBERS), steps=0)
    a, b = targets.batch(5, 3), targets.batch(5, 3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 3
    assert not torch.equal(targets.batch(5, 4, rank=0, world=2), targets.batch(5, 4, rank=1, world=2))
    assert len(targets.batch(0, 10)) == 4  # never more rows than there are


def test_loss_is_zero_on_the_targets_and_grows_off_them(tiny_stylegan2, refined):
    G = tiny_stylegan2
    targets = DistilTargets(refined, G, list(AU_NUMBERS))
    w_std = torch.full((G.w_dim,), 0.5)

    class Replay(torch.nn.Module):
        """Gives back the stored Δw+ for the stored (ws, delta), plus an offset."""

        def __init__(self, offset: float) -> None:
            super().__init__()
            self.offset = offset

        def forward(self, ws, delta):
            row = [int((targets.delta == d).all(1).nonzero()[0]) for d in delta]
            return targets.dw[row] + self.offset

    rows = targets.batch(0, 4)
    assert float(targets.loss(Replay(0.0), rows, w_std)) == 0.0
    torch.testing.assert_close(targets.loss(Replay(0.1), rows, w_std), torch.tensor(0.04))  # (0.1 / 0.5)²
    # the image term: the stored refined image is the render of ws + dw (up to float16 and uint8 rounding)
    lpips = LPIPS()
    with torch.no_grad():
        near, far = (float(targets.image_loss(Replay(o), G, lpips, rows, w_std)) for o in (0.0, 1.0))
    assert targets.images.shape == (4, 3, 16, 16) and targets.images.dtype == torch.uint8
    assert near < 0.02 < far and near < 0.2 * far, (near, far)


def test_bad_datasets_are_one_line_errors(tiny_stylegan2, refined, tmp_path):
    from stylerig_au.samples import build_samples
    from tests.test_edited_samples import NoFaceDetector

    G = tiny_stylegan2
    plain = build_samples(G, tmp_path / "plain", 2, detector=NoFaceDetector(), chunk_size=2, image_size=16, progress=False)
    with pytest.raises(StylerigError, match="no edits' Δw\\+ stored here"):
        DistilTargets(plain, G, list(AU_NUMBERS))
    mapper_only = _build(G, tiny_mapper(G), tmp_path / "mapper_only", num=2)
    with pytest.raises(StylerigError, match="holds no refined edits"):
        DistilTargets(mapper_only, G, list(AU_NUMBERS))
    with pytest.raises(StylerigError, match=r"stores edits refined for \[3\] steps, not 7"):
        DistilTargets(refined, G, list(AU_NUMBERS), steps=7)
    with pytest.raises(StylerigError, match="no refined edit asks only for AU the mapper edits"):
        DistilTargets(refined, G, [12])
    with pytest.raises(StylerigError, match="not the mapper's AU 99"):
        DistilTargets(refined, G, [12, 99])
    with pytest.raises(StylerigError, match="no AU sample dataset here"):
        DistilTargets(tmp_path / "nothing", G, list(AU_NUMBERS))

    class Other:
        name, num_ws, w_dim = "other-gan", G.num_ws, G.w_dim

    with pytest.raises(StylerigError, match="not of other-gan"):
        DistilTargets(refined, Other(), list(AU_NUMBERS))


def _mapper(G):
    """A 17-AU mapper (the dataset's requests span all AUs) that starts away from the targets."""
    return tiny_mapper(G, seed=1).train()


def test_distillation_alone_renders_nothing_and_fits_the_targets(tiny_stylegan2, refined, tmp_path, monkeypatch):
    G = tiny_stylegan2
    mapper = _mapper(G)
    targets = DistilTargets(refined, G, mapper.aus)
    with torch.no_grad():
        before = float(targets.loss(mapper, torch.arange(len(targets)), mapper.w_std))
    monkeypatch.setattr(G.synthesis, "forward", lambda *a, **k: pytest.fail("distillation alone rendered an image"))
    settings = MapperTrainSettings(steps=40, batch=4, lr=3e-3, save_every=10, identity_net="lpips", w_target=0, w_keep=0,
                                   w_outside=0, w_identity=0, w_size=0, w_distil=1.0, distil=str(refined))
    assert not settings.renders
    result = train_mapper(G, tiny_student(), LPIPS(), mapper, settings, tmp_path / "state.pt", progress=False, distil=targets)
    with torch.no_grad():
        after = float(targets.loss(mapper.eval(), torch.arange(len(targets)), mapper.w_std))
    assert after < 0.5 * before, (before, after)
    assert result["last"]["distil"] < result["first"]["distil"] and result["last"]["target"] == 0.0
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["settings"]["w_distil"] == 1.0 and state["settings"]["distil"] == str(refined)


def test_distil_term_beside_the_image_terms(tiny_stylegan2, refined, tmp_path):
    G = tiny_stylegan2
    mapper = _mapper(G)
    settings = MapperTrainSettings(steps=2, batch=2, image_size=64, save_every=2, identity_net="lpips", w_distil=2.0,
                                   distil=str(refined))
    result = train_mapper(G, tiny_student(), LPIPS(), mapper, settings, tmp_path / "state.pt", progress=False)  # reads settings.distil
    last = result["last"]
    assert last["distil"] > 0 and last["target"] > 0
    # the total weighs the distil term in
    want = sum(getattr(settings, f"w_{k}") * last[k] for k in LOSS_NAMES)
    assert last["total"] == pytest.approx(want, rel=1e-4)
    with pytest.raises(StylerigError, match="needs a dataset of refined edits"):
        MapperTrainSettings(w_distil_image=1.0).check()
    # the image term renders the refined rows' edits and weighs in too
    settings = MapperTrainSettings(steps=1, batch=2, image_size=64, save_every=1, identity_net="lpips", w_distil=0,
                                   w_distil_image=3.0, distil=str(refined))
    last = train_mapper(G, tiny_student(), LPIPS(), _mapper(G), settings, tmp_path / "image.pt", progress=False)["last"]
    assert last["distil_image"] > 0 and last["distil"] == 0
    assert last["total"] == pytest.approx(sum(getattr(settings, f"w_{k}") * last[k] for k in LOSS_NAMES), rel=1e-4)
    assert torch.load(tmp_path / "image.pt", weights_only=True)["settings"]["w_distil_image"] == 3.0
    # without the term the resume key is what it was before the term existed
    assert "w_distil" not in MapperTrainSettings().resume_key() and "distil" not in MapperTrainSettings().resume_key()


def all_au_directions(G):
    """Linear directions for all 17 AUs (the refined dataset's requests span them)."""
    from stylerig_au.edit.directions import LinearDirections

    g = torch.Generator().manual_seed(5)
    every = torch.ones(G.num_ws, dtype=torch.bool)
    return LinearDirections.for_generator(G, {a: torch.randn(G.w_dim, generator=g) for a in AU_NUMBERS},
                                          masks={a: every for a in AU_NUMBERS}, scales={a: 1.0 for a in AU_NUMBERS})


def test_train_mapper_command_distils(tiny_stylegan2, refined, tmp_path, capsys, monkeypatch):
    from stylerig_au import perceptual
    from stylerig_au.au.student import save_student
    from stylerig_au.cli import main
    from stylerig_au.models.checkpoints import save_stylegan2

    monkeypatch.setattr(perceptual, "load_lpips", lambda *a, **k: LPIPS())
    G = tiny_stylegan2
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")), "--directions", str(all_au_directions(G).save(tmp_path / "d.pt")),
            "--student", str(save_student(tiny_student(), tmp_path / "s.pt")), "--image-size", "64", "--hidden", "16",
            "--batch", "2", "--identity-net", "lpips", "--steps", "3"]
    image_terms_off = [f"--weight={k}=0" for k in ("target", "keep", "outside", "identity")]
    assert main(["train-mapper", "--out", str(tmp_path / "m.pt"), "--distil", str(refined), *image_terms_off, *args]) == 0
    captured = capsys.readouterr()
    assert "distilling 4 edits refined for 3 steps" in captured.err
    settings = load_mapper(tmp_path / "m.pt", G).meta["settings"]
    assert settings["w_distil"] == 1.0 and settings["distil"] == str(refined) and settings["w_target"] == 0
    assert f"distil (Δw+ of the refined edits in `{refined}`) 1.0" in (tmp_path / "m.md").read_text()
    # the image term alone, by name
    assert main(["train-mapper", "--out", str(tmp_path / "i.pt"), "--distil", str(refined), "--weight", "distil=0",
                 "--weight", "distil_image=2", *image_terms_off, *args[:-1], "1"]) == 0
    settings = load_mapper(tmp_path / "i.pt", G).meta["settings"]
    assert settings["w_distil"] == 0 and settings["w_distil_image"] == 2.0
    card = (tmp_path / "i.md").read_text()
    assert f"distil-image (LPIPS + MSE to the images of the refined edits in `{refined}`) 2.0" in card and "distil (Δw+" not in card
    capsys.readouterr()
    for bad, message in ((["--weight", "distil=1"], "--weight distil / distil_image needs --distil DIR"),
                         (["--distil", str(tmp_path / "none")], "no AU sample dataset here")):
        assert main(["train-mapper", "--out", str(tmp_path / "bad.pt"), *bad, *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "bad.pt").exists()
