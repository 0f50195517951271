"""The AU-conditioned mapper on a tiny StyleGAN2: its edits, file format, editor/CLI wiring and training loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylerig_au.au.student import StudentAUNet, StudentConfig
from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit import AU, Editor, LinearDirections
from stylerig_au.edit.mapper import (AUMapper, MapperConfig, apply_mapper, load_mapper, mapper_from_directions, new_mapper,
                                     save_mapper)
from stylerig_au.edit.mapper_train import MapperTrainSettings, region_mask, sample_deltas, train_mapper
from stylerig_au.errors import StylerigError
from stylerig_au.perceptual import LPIPS

HERE = Path(__file__).resolve().parent


def make_dirs(G) -> LinearDirections:
    g = torch.Generator().manual_seed(3)
    middle = torch.tensor([s.group == "middle" for s in G.slots])
    coarse = torch.tensor([s.group == "coarse" for s in G.slots])
    return LinearDirections.for_generator(G, {12: torch.randn(G.w_dim, generator=g), 6: torch.randn(G.w_dim, generator=g),
                                              4: torch.randn(G.w_dim, generator=g)},
                                          masks={12: middle, 6: middle | coarse, 4: coarse}, scales={12: 3.0, 6: 2.0, 4: 1.5})


def sample_ws(G, n: int = 3) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return G.mapping(torch.randn(n, G.z_dim))[:, None].repeat(1, G.num_ws, 1)


def scramble_residual(mapper: AUMapper, seed: int = 0) -> AUMapper:
    """Give the residual MLP non-zero weights (a trained mapper's situation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mapper.out.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return mapper


def tiny_student() -> StudentAUNet:
    torch.manual_seed(1)
    return StudentAUNet(StudentConfig(aus=AU_NUMBERS, input_size=32, channels=(8, 16), head=16)).eval()


def test_untrained_mapper_edits_like_the_linear_directions(tiny_stylegan2):
    G = tiny_stylegan2
    dirs = make_dirs(G)
    mapper = new_mapper(G, dirs, num_samples=256)
    ws = sample_ws(G)
    for edit in (AU(12, 2), AU(12, 1.5) + AU(6, -1), AU(4, 0.5) + AU(6, 2) + AU(12, -3)):
        torch.testing.assert_close(apply_mapper(mapper, ws, edit, G.slots), dirs.apply(ws, edit), atol=1e-5, rtol=0)
    assert mapper.config.slots == tuple(s.index for s in G.slots if s.group in ("coarse", "middle"))


def test_zero_edit_is_exact_and_untouched_slots_are_copied(tiny_stylegan2):
    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256))
    ws = sample_ws(G)
    assert torch.equal(apply_mapper(mapper, ws, AU(12, 0), G.slots), ws)
    assert torch.equal(mapper(ws, torch.zeros(3, 3)), torch.zeros_like(ws))
    out = apply_mapper(mapper, ws, AU(12, 2), G.slots)
    editable = set(mapper.config.slots)
    for s in range(G.num_ws):
        assert torch.equal(out[:, s], ws[:, s]) == (s not in editable)
    # the residual makes the edit depend on the face (the linear part alone would not)
    linear = mapper_from_directions(make_dirs(G))
    step_mapper, step_linear = out - ws, apply_mapper(linear, ws, AU(12, 2), G.slots) - ws
    assert not torch.allclose(step_mapper[0] - step_mapper[1], step_linear[0] - step_linear[1], atol=1e-4)


def test_layer_restriction_absolute_targets_and_errors(tiny_stylegan2):
    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256))
    ws = sample_ws(G)
    coarse = [s.index for s in G.slots if s.group == "coarse"]
    out = apply_mapper(mapper, ws, AU(6, 2).only_layers("coarse"), G.slots)
    for s in range(G.num_ws):
        assert torch.equal(out[:, s], ws[:, s]) == (s not in coarse)
    # absolute target: ΔAU = target - current
    current = torch.zeros(3, len(AU_NUMBERS))
    current[:, AU_NUMBERS.index(12)] = torch.tensor([1.0, 2.0, 3.0])
    target = apply_mapper(mapper, ws, AU(12, to=3.0), G.slots, current)
    expect = torch.cat([apply_mapper(mapper, ws[i:i + 1], AU(12, 3.0 - i - 1.0), G.slots) for i in range(3)])
    torch.testing.assert_close(target, expect)
    with pytest.raises(StylerigError, match="does not cover AU26"):
        apply_mapper(mapper, ws, AU(26, 1), G.slots)
    with pytest.raises(StylerigError, match="pass the current AU intensities"):
        apply_mapper(mapper, ws, AU(12, to=2.0), G.slots)
    with pytest.raises(StylerigError, match="expected ws of shape"):
        apply_mapper(mapper, ws[:, :3], AU(12, 1), G.slots)
    with pytest.raises(StylerigError, match="ΔAU of shape"):
        mapper(ws, torch.zeros(3, 5))
    with pytest.raises(StylerigError, match="at least one AU"):
        AUMapper(MapperConfig(aus=(), num_ws=8, w_dim=32, slots=(0,)))


def test_file_round_trip_and_bad_files(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256))
    path = save_mapper(mapper, tmp_path / "m.pt", G.name, {"note": "test"})
    back = load_mapper(path, G)
    assert back.meta == {"note": "test"} and back.generator == G.name and not back.training
    ws = sample_ws(G)
    # weight matrices are stored as float16: edits agree to that precision
    torch.testing.assert_close(apply_mapper(back, ws, AU(12, 2), G.slots), apply_mapper(mapper, ws, AU(12, 2), G.slots),
                               atol=2e-3, rtol=0)
    with pytest.raises(StylerigError, match="no such AU mapper file"):
        load_mapper(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StylerigError, match=r"not a stylerig-au AU mapper file \(UnpicklingError: Unsupported operand 110\); train one with"):
        load_mapper(tmp_path / "junk.pt")
    other = save_mapper(mapper, tmp_path / "other.pt", "another-generator")
    with pytest.raises(StylerigError, match="trained for 'another-generator'"):
        load_mapper(other, G)
    blob = torch.load(path, weights_only=True)
    blob["state"]["out.weight"] = blob["state"]["out.weight"][:, :3]
    torch.save(blob, tmp_path / "damaged.pt")
    with pytest.raises(StylerigError, match="damaged AU mapper file"):
        load_mapper(tmp_path / "damaged.pt")


def test_editor_with_the_mapper(tiny_stylegan2):
    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256)).eval()
    editor = Editor(G, method="mapper", mapper=mapper)
    assert editor.aus == (4, 6, 12)
    ws = sample_ws(G, 1)
    img = editor.render(ws, AU(12, 2) + AU(6, 1))
    assert img.shape == (1, 3, G.resolution, G.resolution)
    assert (img - editor.render(ws)).abs().max() > 1e-3
    frames = editor.interpolate(ws, AU(12, 2), 4)
    assert torch.equal(frames[0], ws) and torch.equal(frames[-1], editor.edit(ws, AU(12, 2)))
    assert torch.equal(frames[1], editor.edit(ws, AU(12, 2 / 3)))  # the mapper's own edit of a third of ΔAU
    with pytest.raises(StylerigError, match="needs an AU mapper"):
        Editor(G, method="mapper")
    mapper.generator = "someone-else"
    with pytest.raises(StylerigError, match="trained for 'someone-else'"):
        Editor(G, method="mapper", mapper=mapper)


def test_region_mask_and_delta_sampling():
    m = region_mask([[12], [1, 2], [45, 26]], 64)
    assert m.shape == (3, 1, 64, 64) and m.min() >= 0 and m.max() <= 1
    assert m[0, 0, int(0.73 * 64), 32] == 1 and m[0, 0, 2, 2] == 0 and m[0, 0, int(0.38 * 64), 32] == 0  # mouth, not brows
    assert m[1, 0, int(0.38 * 64), 32] == 1 and m[1, 0, int(0.8 * 64), 32] == 0
    s = MapperTrainSettings(max_aus=2, delta_min=0.5, delta_max=3.0, negative=0.3)
    d1, e1 = sample_deltas(list(AU_NUMBERS), 50, s, torch.Generator().manual_seed(5))
    d2, e2 = sample_deltas(list(AU_NUMBERS), 50, s, torch.Generator().manual_seed(5))
    assert torch.equal(d1, d2) and e1 == e2
    nonzero = (d1 != 0).sum(dim=1)
    assert nonzero.min() >= 1 and nonzero.max() <= 2
    mags = d1[d1 != 0].abs()
    assert mags.min() >= 0.5 and mags.max() <= 3.0 and (d1 < 0).any()
    for row, aus in zip(d1, e1):
        assert sorted(AU_NUMBERS[i] for i in row.nonzero().flatten()) == sorted(aus)
    with pytest.raises(StylerigError, match="delta_min"):
        MapperTrainSettings(delta_min=2, delta_max=1).check()


def _train(G, steps: int, ckpt: Path, **kw) -> tuple[AUMapper, dict]:
    torch.manual_seed(0)
    mapper = new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8)
    kw.setdefault("identity_net", "lpips")  # the face networks need real assets (tested on their own below)
    settings = MapperTrainSettings(steps=steps, batch=2, image_size=64, save_every=2, lr=1e-3, **kw)
    torch.manual_seed(0)
    result = train_mapper(G, tiny_student(), LPIPS(), mapper, settings, ckpt, progress=False)
    return mapper, result


def test_each_training_seed_draws_its_own_faces(tiny_stylegan2):
    from stylerig_au.edit.mapper_train import SEED_STRIDE, TRAIN_SEED_START, Dist, batch_latents
    from stylerig_au.models import seed_to_z

    G = tiny_stylegan2
    w_std = torch.ones(G.w_dim)
    seed0, seed3 = (MapperTrainSettings(batch=2, seed=k, jitter=0.0) for k in (0, 3))
    a = batch_latents(G, 1, Dist(), seed0, w_std, "cpu")
    assert torch.equal(a, batch_latents(G, 1, Dist(), seed0, w_std, "cpu"))  # reproducible
    b = batch_latents(G, 1, Dist(), seed3, w_std, "cpu")
    # step 1, batch 2: the faces of seeds start + 2, start + 3 of the seed's own block
    want = G.mapping(seed_to_z(TRAIN_SEED_START + 3 * SEED_STRIDE + 2, G.z_dim), psi=0.8)
    torch.testing.assert_close(b[0, 0], want[0])
    assert not torch.allclose(a, b)
    for bad in (-1, 400):
        with pytest.raises(StylerigError, match="seed must be in 0..399"):
            MapperTrainSettings(seed=bad).check()


def test_training_runs_learns_and_resumes_exactly(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    before = new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8)
    straight, result = _train(G, 4, tmp_path / "a.pt")
    assert len(result["history"]) == 4 and result["steps_run"] == 4 and result["world"] == 1
    assert set(result["last"]) == {"target", "keep", "outside", "identity", "size", "geometry", "distil", "distil_image", "colour",
                                   "total"}
    assert result["last"]["geometry"] == 0.0  # off by default
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in result["history"])
    assert (straight.out.weight != 0).any()  # the residual learned something
    assert not torch.equal(straight.linear, before.linear)
    # two steps, then the same command with four: resumes at step 2 and ends where the straight run did
    _train(G, 2, tmp_path / "b.pt")
    resumed, again = _train(G, 4, tmp_path / "b.pt")
    assert again["steps_run"] == 2 and len(again["history"]) == 4
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(StylerigError, match="other settings"):
        _train(G, 4, tmp_path / "b.pt", psi=0.5)


@pytest.mark.parametrize("net,asset", [("sface", "sface"), ("dlib", "dlib-face-recognition")])
def test_training_with_a_face_identity_net(tiny_stylegan2, tmp_path, net, asset):
    """--identity-net sface / dlib wires that network into the loss (the tiny generator's noise has no face: 0)."""
    from tests.helpers import require_asset

    require_asset(asset)
    require_asset("dlib-landmarks-68")
    _, result = _train(tiny_stylegan2, 1, tmp_path / "d.pt", identity_net=net)
    assert result["last"]["identity"] == 0.0 and torch.isfinite(torch.tensor(result["last"]["total"]))
    assert torch.load(tmp_path / "d.pt", weights_only=True)["settings"]["identity_net"] == net


class MeanFacePoints:
    """A landmark source that puts the same made-up frontal face on every image (a random generator draws none)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> list:
        from tests.test_local_edit import mean_face

        self.calls += 1
        return [mean_face(images.shape[-1]) - 0.5 for _ in range(len(images))]


def test_local_training_renders_each_edit_inside_its_region(tiny_stylegan2, tmp_path, monkeypatch):
    """--local: the edit the terms read is the local render (the unedited face outside the AU's region), the
    colour term reads inside it, LPIPS is not needed without its terms, and the local settings resume."""
    from stylerig_au.edit.local import render_local
    from stylerig_au.edit.mapper_train import MapperLoss

    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8))
    settings = MapperTrainSettings(batch=2, image_size=64, local=True, w_outside=0, w_colour=20, identity_net="lpips",
                                   w_identity=0)
    assert not settings.needs_lpips and settings.resume_key()["local"] and settings.resume_key()["w_colour"] == 20
    assert "local" not in MapperTrainSettings().resume_key()  # states saved before the option resume
    points = MeanFacePoints()
    loss = MapperLoss(tiny_student(), None, list(mapper.aus), settings, landmark_source=points)
    ws = sample_ws(G, 2)
    delta = torch.zeros(2, len(mapper.aus))
    delta[:, mapper.aus.index(12)] = 2.0
    seen = {}
    real_render_local = render_local

    def spy(G_, base, ws_edit, masks, *a, **k):
        seen["masks"] = masks
        seen["image"] = real_render_local(G_, base, ws_edit, masks, *a, **k)
        return seen["image"]

    import stylerig_au.edit.local as local_module

    monkeypatch.setattr(local_module, "render_local", spy)
    losses = loss(mapper, G, ws, delta, [[12], [12]])
    monkeypatch.undo()
    assert points.calls == 1 and seen["masks"].shape == (2, 1, 256, 256)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["colour"] > 0 and losses["outside"] == 0
    with torch.no_grad():
        plain_base = G.synthesis(ws)
    outside = F.interpolate(seen["masks"], size=plain_base.shape[-2:], mode="area") == 0
    assert outside.any() and torch.allclose(seen["image"].detach()[outside.expand_as(plain_base)],
                                            plain_base[outside.expand_as(plain_base)], atol=1e-5)
    losses["total"].backward()  # gradients reach the mapper through the local render
    assert mapper.out.weight.grad is not None and mapper.out.weight.grad.abs().sum() > 0
    with pytest.raises(StylerigError, match="need the LPIPS model"):
        MapperLoss(tiny_student(), None, list(mapper.aus), MapperTrainSettings(image_size=64, identity_net="lpips"))
    with pytest.raises(StylerigError, match="landmarks must come from one of dlib, net"):
        MapperTrainSettings(landmarks="openpose").check()
    # a whole (tiny) run with the local settings, resumed under the same settings only
    mapper2 = new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8)
    run = dict(steps=2, batch=2, image_size=64, save_every=1, lr=1e-3, local=True, w_outside=0, w_colour=20,
               identity_net="lpips", w_identity=0)
    result = train_mapper(G, tiny_student(), None, mapper2, MapperTrainSettings(**run), tmp_path / "l.pt", progress=False,
                          landmark_source=MeanFacePoints())
    assert result["last"]["colour"] > 0
    with pytest.raises(StylerigError, match="other settings"):
        train_mapper(G, tiny_student(), None, mapper2, MapperTrainSettings(**(run | {"local": False})), tmp_path / "l.pt",
                     progress=False, landmark_source=MeanFacePoints())


def test_sface_is_the_default_training_identity_net():
    assert MapperTrainSettings().identity_net == "sface"
    with pytest.raises(StylerigError, match="identity net must be one of lpips, sface, dlib"):
        MapperTrainSettings(identity_net="arcface").check()


def test_interrupted_training_saves_its_state_and_resumes_exactly(tiny_stylegan2, tmp_path, monkeypatch):
    """Ctrl-C (or kill, via the CLI) in the middle of step 3: steps 0-2 are saved, a rerun ends as a straight run."""
    from stylerig_au.edit import mapper_train

    G = tiny_stylegan2
    straight, _ = _train(G, 4, tmp_path / "a.pt")
    real = mapper_train.batch_latents

    def interrupt_at_step_3(G, step, *args, **kwargs):
        if step == 3:
            raise KeyboardInterrupt
        return real(G, step, *args, **kwargs)

    monkeypatch.setattr(mapper_train, "batch_latents", interrupt_at_step_3)
    with pytest.raises(StylerigError, match=r"interrupted after step 3; .*rerun the same command to resume"):
        _train(G, 4, tmp_path / "b.pt")
    state = torch.load(tmp_path / "b.pt", weights_only=True)
    assert state["step"] == 3 and len(state["history"]) == 3
    monkeypatch.setattr(mapper_train, "batch_latents", real)
    resumed, again = _train(G, 4, tmp_path / "b.pt")
    assert again["steps_run"] == 1 and len(again["history"]) == 4
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a POSIX process launcher")
def test_training_under_torchrun_with_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "mapper_ddp_job.py"), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], msg=k)  # DDP kept the replicas identical
    assert r0["world"] == 2 and r0["history"] == r1["history"]
    assert (tmp_path / "state.pt").is_file()  # rank 0 wrote the training state
    # the two ranks drew different faces: their first losses were averaged, not duplicated
    assert r0["rank_losses"] != r1["rank_losses"]


def test_train_mapper_command(tiny_stylegan2, tmp_path, capsys, monkeypatch):
    from stylerig_au import perceptual
    from stylerig_au.au.student import save_student
    from stylerig_au.cli import main
    from stylerig_au.models.checkpoints import save_stylegan2

    monkeypatch.setattr(perceptual, "load_lpips", lambda *a, **k: LPIPS())  # random VGG: the wiring is under test
    G = tiny_stylegan2
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")), "--directions", str(make_dirs(G).save(tmp_path / "d.pt")),
            "--student", str(save_student(tiny_student(), tmp_path / "s.pt")), "--image-size", "64", "--hidden", "16",
            "--batch", "1", "--device", "cpu", "--identity-net", "lpips"]
    out = tmp_path / "m.pt"
    assert main(["train-mapper", "--out", str(out), "--steps", "2", *args]) == 0
    assert "wrote" in capsys.readouterr().out
    mapper = load_mapper(out, G)
    assert mapper.meta["settings"]["steps"] == 2 and len(mapper.meta["history"]) == 2
    assert (tmp_path / "m.train-state.pt").is_file()
    card = (tmp_path / "m.md").read_text()
    assert "AU-conditioned mapper" in card and "| target |" in card and "identity (LPIPS-VGG feature proxy) 4.0" in card
    assert main(["train-mapper", "--out", str(out), "--steps", "3", *args]) == 0  # resumes: one more step
    assert "resuming mapper training from step 2" in capsys.readouterr().err
    for bad, message in ((str(tmp_path), "is a directory"), (str(tmp_path / "m.txt"), "must end in .pt")):
        assert main(["train-mapper", "--out", bad, "--steps", "1", *args]) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "m.txt").exists()
    for bad, message in (("keep", "expected LOSS=W"), ("grip=2", "expected LOSS=W"), ("keep=x", "is not a number"),
                         ("keep=-1", "finite number >= 0")):
        assert main(["train-mapper", "--out", str(tmp_path / "w.pt"), "--steps", "1", "--weight", bad, *args]) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "w.pt").exists()
    assert main(["train-mapper", "--out", str(tmp_path / "w.pt"), "--steps", "1", "--weight", "keep=2.5", "--weight", "size=0", *args]) == 0
    settings = load_mapper(tmp_path / "w.pt", G).meta["settings"]
    assert settings["w_keep"] == 2.5 and settings["w_size"] == 0 and settings["w_target"] == 1.0
    assert "keep 2.5" in (tmp_path / "w.md").read_text()
    # --init fine-tunes an existing (calibrated) mapper: its gains are kept, and its targets are gain x ΔAU
    calibrated = load_mapper(tmp_path / "w.pt", G)
    calibrated.set_input_gain({12: 1.5})
    init = save_mapper(calibrated, tmp_path / "cal.pt", G.name, dict(calibrated.meta, calibration={"command": "stylerig-au calibrate-mapper"}))
    assert main(["train-mapper", "--out", str(tmp_path / "ft.pt"), "--steps", "1", "--init", str(init), *args]) == 0
    tuned = load_mapper(tmp_path / "ft.pt", G)
    assert float(tuned.input_gain[tuned.au_index(12)]) == 1.5 and tuned.meta["init"]["input_gain"]["12"] == 1.5
    assert tuned.meta["settings"]["init"].startswith("cal.pt")
    assert not torch.equal(tuned.state_dict()["out.weight"], calibrated.state_dict()["out.weight"])
    assert "Started from: `cal.pt`" in (tmp_path / "ft.md").read_text()


def test_parse_loss_weights():
    from stylerig_au.commands.train_mapper import parse_loss_weights

    assert parse_loss_weights(()) == {}
    assert parse_loss_weights(("keep=2", " outside = 0.5")) == {"w_keep": 2.0, "w_outside": 0.5}
    with pytest.raises(StylerigError, match="finite"):
        parse_loss_weights(("target=inf",))


@pytest.mark.slow
def test_bundled_mapper_moves_the_asked_au_on_the_real_generator():
    """The committed mapper loads for MobileStyleGAN and an AU12 +2 edit raises AU12 (student-measured) on a held-out face."""
    from stylerig_au.au.student import load_student
    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.models import load_generator, seed_to_z

    from .helpers import require_asset

    require_asset("mobilestylegan-ffhq-1024")
    G = load_generator()
    mapper = load_default_mapper(G)
    assert mapper.meta["settings"]["steps"] >= 100 and len(mapper.aus) == 17
    editor = Editor(G, method="mapper", mapper=mapper)
    with torch.no_grad():
        ws = G.mapping(seed_to_z(2_000_001, G.z_dim), psi=0.8)[:, None].repeat(1, G.num_ws, 1)
    student = load_student()
    before, after = (student(_downsample(editor.render(ws, e))) for e in (None, AU(12, 2)))
    k = student.aus.index(12)
    assert float(after[0, k] - before[0, k]) > 0.5


def _downsample(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=256, mode="area")


def _gain_measure(G, mapper: AUMapper, sensitivity: dict[int, float]):
    """A synthetic 'OpenFace': each AU reads ``sensitivity[au]`` x (the AU's linear coordinate of Δw+ relative
    to a reference latent), so an untrained mapper's +2 edit measures 2 x sensitivity."""
    aus = list(AU_NUMBERS)
    linear = mapper.linear.detach()  # [A, E, d]
    slots = mapper.slot_index
    ref = sample_ws(G, 1)[0]
    calls = []

    def measure(ws):
        calls.append(len(ws))
        d = (ws - ref)[:, slots]  # [P, E, d]
        coords = torch.einsum("ped,aed->pa", d, linear) / linear.pow(2).sum(dim=(1, 2))
        out = torch.zeros(len(ws), len(aus))
        for j, au in enumerate(mapper.aus):
            out[:, aus.index(au)] = sensitivity[au] * coords[:, j] + 1.0
        return out.numpy()

    return measure, calls


def test_calibration_sets_gains_that_reach_the_step_and_resumes(tiny_stylegan2, tmp_path):
    from stylerig_au.edit.mapper_calibrate import calibrate_mapper, next_gain

    G = tiny_stylegan2
    # directions orthogonal per AU, so each AU's coordinate reads only its own edit
    dirs = make_dirs(G)
    mapper = new_mapper(G, dirs, num_samples=256)  # untrained: edits are exactly linear in ΔAU
    measure, calls = _gain_measure(G, mapper, {12: 0.5, 6: 1.6, 4: 0.01})
    probes = sample_ws(G, 4)
    cache = tmp_path / "cal.json"
    results = calibrate_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=2, cache=cache, progress=False)
    by_au = {r.au: r for r in results}
    assert [r.au for r in results] == mapper.aus
    assert by_au[12].achieved[0] == pytest.approx(1.0, abs=0.05) and by_au[12].gain == pytest.approx(2.0, rel=0.05)
    assert by_au[6].gain == pytest.approx(0.625, rel=0.05) and not by_au[6].clamped
    assert by_au[4].gain == 2.5 and by_au[4].clamped and len(by_au[4].gains) == 2  # far too weak: held at the limit
    torch.testing.assert_close(mapper.input_gain, torch.tensor([by_au[a].gain for a in mapper.aus]))
    # a calibrated +2 edit now measures +2 on the AUs the clamp did not limit
    before = measure(probes)
    for au in (12, 6):
        change = measure(apply_mapper(mapper, probes, AU(au, 2.0), G.slots)) - before
        assert change[:, list(AU_NUMBERS).index(au)].mean() == pytest.approx(2.0, abs=0.05)
    # the gains live in the file; a rerun reads every AU from the cache
    back = load_mapper(save_mapper(mapper, tmp_path / "m.pt", G.name), G)
    torch.testing.assert_close(back.input_gain, mapper.input_gain)
    # a rerun from the same starting gains reads every AU from the cache
    mapper.set_input_gain(torch.ones(len(mapper.aus)))
    n = len(calls)
    again = calibrate_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=2, cache=cache, progress=False)
    assert len(calls) == n and [r.gain for r in again] == [r.gain for r in results]
    # a calibrated mapper is refined from its own gains: one more round barely moves them
    refined = calibrate_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=1, progress=False)
    assert [r.gains[0] for r in refined] == pytest.approx([r.gain for r in results], rel=1e-5)
    assert {r.au: r.achieved[0] for r in refined}[12] == pytest.approx(2.0, abs=0.05)
    assert next_gain(1.0, float("nan")) == (2.5, True) and next_gain(2.0, 4.0) == (1.0, False)
    with pytest.raises(StylerigError, match="does not report AU"):
        calibrate_mapper(mapper, measure, probes, measured_aus=[1, 2], progress=False)
    with pytest.raises(StylerigError, match="rounds >= 1"):
        calibrate_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=0, progress=False)


def test_input_gain_scales_the_edit_and_old_files_load_with_unit_gains(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    mapper = scramble_residual(new_mapper(G, make_dirs(G), num_samples=256))
    ws = sample_ws(G)
    twice = apply_mapper(mapper, ws, AU(12, 2.0), G.slots)
    mapper.set_input_gain({12: 2.0})
    torch.testing.assert_close(apply_mapper(mapper, ws, AU(12, 1.0), G.slots), twice)
    assert torch.equal(apply_mapper(mapper, ws, AU(12, 0.0), G.slots), ws)  # still an exact no-op
    for bad in ({12: 0.0}, {12: float("nan")}, torch.ones(2)):
        with pytest.raises(StylerigError, match="input gain"):
            mapper.set_input_gain(bad)
    path = save_mapper(mapper, tmp_path / "m.pt", G.name)
    blob = torch.load(path, weights_only=True)
    assert blob["input_gain"][mapper.au_index(12)] == 2.0
    del blob["input_gain"]  # a file written before calibration existed
    torch.save(blob, tmp_path / "old.pt")
    assert torch.equal(load_mapper(tmp_path / "old.pt", G).input_gain, torch.ones(len(mapper.aus)))
    blob["input_gain"] = [1.0, -1.0, 1.0]
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(StylerigError, match="damaged AU mapper file"):
        load_mapper(tmp_path / "bad.pt", G)


def test_calibrate_mapper_command(tiny_stylegan2, tmp_path, capsys, monkeypatch):
    from stylerig_au.au import detect
    from stylerig_au.cli import main
    from stylerig_au.edit import learn
    from stylerig_au.models.checkpoints import save_stylegan2

    G = tiny_stylegan2
    mapper = new_mapper(G, make_dirs(G), num_samples=256)
    measure, calls = _gain_measure(G, mapper, {12: 0.5, 6: 1.6, 4: 1.0})
    monkeypatch.setattr(detect, "make_detector", lambda *a, **k: torch.nn.Identity())  # the synthetic measure stands in
    monkeypatch.setattr(learn, "openface_measure", lambda *a, **k: measure)
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")),
            "--mapper", str(save_mapper(mapper, tmp_path / "m.pt", G.name, {"command": "stylerig-au train-mapper"})),
            "--probes", "3", "--psi", "1.0"]
    out = tmp_path / "cal.pt"
    assert main(["calibrate-mapper", "--out", str(out), *args]) == 0
    assert "wrote" in capsys.readouterr().out
    cal = load_mapper(out, G)
    assert float(cal.input_gain[cal.au_index(12)]) == pytest.approx(2.0, rel=0.1)
    assert float(cal.input_gain[cal.au_index(4)]) == pytest.approx(1.0, rel=0.1)
    assert cal.meta["calibration"]["probes"] == 3 and cal.meta["command"] == "stylerig-au train-mapper"
    card = (tmp_path / "cal.md").read_text()
    assert "## Calibration with OpenFace" in card and "| AU12 |" in card
    n = len(calls)
    assert main(["calibrate-mapper", "--out", str(out), *args]) == 0  # resumes from the cache: nothing measured again
    assert len(calls) == n
    for bad, message in ((["--out", str(tmp_path / "c.txt")], "must end in .pt"),
                         (["--out", str(tmp_path / "c.pt"), "--mapper", str(tmp_path / "none.pt")], "no such AU mapper file")):
        assert main(["calibrate-mapper", *args, *bad]) != 0
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c.txt").exists() and not (tmp_path / "c.pt").exists()


def test_calibrate_mapper_with_the_student_keeps_its_own_cache_and_card(tiny_stylegan2, tmp_path, capsys, monkeypatch):
    from stylerig_au.au import detect
    from stylerig_au.au.student import StudentAU
    from stylerig_au.cli import main
    from stylerig_au.edit import learn
    from stylerig_au.models.checkpoints import save_stylegan2

    G = tiny_stylegan2
    mapper = new_mapper(G, make_dirs(G), num_samples=256)
    measure, calls = _gain_measure(G, mapper, {12: 0.5, 6: 1.6, 4: 1.0})
    used = []
    monkeypatch.setattr(detect, "make_detector", lambda name, **k: used.append(name) or StudentAU(tiny_student()))
    monkeypatch.setattr(learn, "student_measure", lambda *a, **k: measure)
    monkeypatch.setattr(learn, "openface_measure", lambda *a, **k: pytest.fail("OpenFace must not measure a student calibration"))
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")), "--estimator", "student",
            "--mapper", str(save_mapper(mapper, tmp_path / "m.pt", G.name, {"command": "stylerig-au train-mapper"})),
            "--probes", "3", "--psi", "1.0"]
    out = tmp_path / "cal.pt"
    assert main(["calibrate-mapper", "--out", str(out), *args]) == 0
    assert used == ["student"] and (tmp_path / "cal.calibration-cache-student.json").is_file()
    assert not (tmp_path / "cal.calibration-cache.json").exists()
    cal = load_mapper(out, G)
    assert float(cal.input_gain[cal.au_index(12)]) == pytest.approx(2.0, rel=0.1)
    assert cal.meta["calibration"]["detector"] == "student"
    card = (tmp_path / "cal.md").read_text()
    assert "## Calibration with the student detector" in card and "OpenFace stays independent" in card


def test_student_measure_reads_renders_as_training_does(tiny_stylegan2):
    from stylerig_au.au.student import StudentAU
    from stylerig_au.edit.learn import student_measure

    G = tiny_stylegan2
    student = StudentAU(tiny_student())
    ws = sample_ws(G, 3)
    got = student_measure(G, student, batch_size=2, size=64)(ws)  # the tiny G renders 32², brought up to 64²
    with torch.no_grad():
        img = torch.nn.functional.interpolate(G.synthesis(ws).clamp(-1, 1), size=(64, 64), mode="bilinear")
        want = student(img).numpy()
    assert got.shape == (3, len(student.aus)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_calibrate_the_bundled_mapper_on_one_probe_face(tmp_path, capsys):
    """calibrate-mapper on the real generator, OpenFace and the bundled mapper (1 probe face, 1 round):
    OpenFace sees the asked AUs move, and every gain is 2 / (measured change), within the limits."""
    import numpy as np

    from stylerig_au.cli import main

    from .helpers import require_asset

    for name in ("mobilestylegan-ffhq-1024", "openface-2.2-au", "dlib-landmarks-68"):
        require_asset(name)
    out = tmp_path / "cal.pt"
    assert main(["calibrate-mapper", "--out", str(out), "--probes", "1", "--rounds", "1"]) == 0
    assert "gains AU1" in capsys.readouterr().out
    from stylerig_au.models import load_generator

    mapper = load_mapper(out, load_generator())
    per_au = mapper.meta["calibration"]["per_au"]
    achieved = np.array([per_au[str(a)]["achieved"][0] for a in mapper.aus])
    assert np.isfinite(achieved).all() and np.median(achieved) > 0.5
    expected = np.clip(2.0 / np.where(achieved > 0.05, achieved, 1e-9), 0.5, 2.5)
    np.testing.assert_allclose(mapper.input_gain.numpy(), expected, rtol=1e-5)
    assert "## Calibration with OpenFace" in (tmp_path / "cal.md").read_text()


def test_card_says_how_a_local_mapper_was_trained(tiny_stylegan2, tmp_path):
    from stylerig_au.edit.mapper_card import write_mapper_card

    mapper = new_mapper(tiny_stylegan2, make_dirs(tiny_stylegan2), num_samples=64, hidden=16, bottleneck=8)
    settings = MapperTrainSettings(local=True, landmarks="net", w_colour=20, w_outside=0).resume_key() | {"steps": 3}
    card = write_mapper_card(tmp_path / "m.pt", "tiny", {"settings": settings, "device": "cpu"}, mapper.config).read_text()
    assert "colour (pooled colour inside the edited region) 20" in card and "outside-LPIPS 0" in card
    assert "local render), regions and identity crops from the bundled landmark net" in card
    init = {"file": "/x/old.pt", "created": "2026-12-01", "command": "stylerig-au train-mapper", "calibration_command": None}
    tuned = write_mapper_card(tmp_path / "t.pt", "tiny", {"settings": settings, "init": init}, mapper.config).read_text()
    assert "Started from: `old.pt` (created 2026-12-01; made by `stylerig-au train-mapper`; not calibrated), a fine-tuning." in tuned
    plain = write_mapper_card(tmp_path / "p.pt", "tiny", {"settings": MapperTrainSettings().resume_key()}, mapper.config).read_text()
    assert "local render" not in plain and "colour" not in plain
