"""Without --steps, `invert`, `edit` (and `demo`) and the Python API invert with the full setting on a GPU and the
quick one on a CPU, and say which they chose and how to change it. Both branches run here on the CPU: the
GPU branch with the device check (``invert.on_gpu``, or CUDA's availability for the CLI) patched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stylerig_au import invert
from stylerig_au.cli import main
from stylerig_au.edit import photo as photo_module


def test_defaults_and_notes():
    assert invert.default_steps("cpu") == invert.QUICK_STEPS == 60
    assert invert.default_steps("cuda") == invert.default_steps(torch.device("cuda:1")) == invert.FULL_STEPS == 500
    assert invert.default_lr(60) == invert.QUICK_LR and invert.default_lr(500) == invert.InvertConfig.lr
    assert "60 steps" in invert.steps_note("cpu") and "--steps 500" in invert.steps_note("cpu")
    assert "500 steps" in invert.steps_note("cuda:0") and "--steps 60" in invert.steps_note("cuda:0")
    assert photo_module.quick_config(None, "cpu").steps == 60 and photo_module.quick_config(None, "cuda").steps == 500
    assert photo_module.quick_config(7, "cuda", 0.01).steps == 7


@pytest.fixture
def fake_inversion(monkeypatch):
    """The invert command up to its InvertConfig: no generator is loaded and nothing is optimised."""
    import stylerig_au.models

    seen = {}

    def fake_invert_files(G, files, out_dir, config, **kwargs):
        seen.update(config=config, device=kwargs["device"])
        return []

    monkeypatch.setattr(stylerig_au.models, "load_generator", lambda spec, device="cpu": object())
    monkeypatch.setattr(invert, "invert_files", fake_invert_files)
    return seen


@pytest.mark.parametrize("gpu", [False, True])
def test_invert_command_chooses_steps_by_device(fake_inversion, monkeypatch, tmp_path, capsys, gpu):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    args = ["invert", str(photo), "--out", str(tmp_path / "out")]
    if gpu:  # as on a machine with a GPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
        args += ["--device", "cuda"]
    assert main(args) == 0
    config = fake_inversion["config"]
    assert (config.steps, config.lr) == ((500, 0.05) if gpu else (60, 0.08))
    err = capsys.readouterr().err
    assert ("500 steps, the full setting for a GPU (--steps 60" if gpu else "60 steps, the quick setting for a CPU (--steps 500") in err
    # given steps are used as they are, and nothing is said about them
    assert main(args + ["--steps", "7"]) == 0 and fake_inversion["config"].steps == 7
    assert "inversion:" not in capsys.readouterr().err


@pytest.mark.parametrize("gpu", [False, True])
def test_api_and_edit_choose_steps_by_device(tiny_stylegan2, monkeypatch, tmp_path, gpu):
    """load_subject (what `edit` calls without --steps) picks the steps by device and logs which, before inverting."""
    from stylerig_au.align import FaceTransform

    G = tiny_stylegan2
    photo = tmp_path / "me.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    monkeypatch.setattr(invert, "on_gpu", lambda device: gpu)  # the device check
    seen, notes = {}, []

    def fake_invert_photo(G, source, latent_path, config, **kwargs):
        seen["config"] = config
        quad = np.array([[0.0, 0.0], [0.0, 16.0], [16.0, 16.0], [16.0, 0.0]])
        transform = FaceTransform(quad=quad, source_size=(16, 16), output_size=G.resolution).to_dict()
        return {"ws": torch.zeros(G.num_ws, G.w_dim), "transform": transform, "steps": config.steps}

    monkeypatch.setattr(photo_module, "invert_photo", fake_invert_photo)
    subject = photo_module.load_subject(G, photo, cache_dir=tmp_path, log=notes.append)
    assert subject.inverted and seen["config"].steps == (500 if gpu else 60)
    assert notes == [invert.steps_note("cuda" if gpu else "cpu")]
    # settings given by the caller are kept, and nothing is said
    notes.clear()
    photo_module.load_subject(G, photo, photo_module.quick_config(3), cache_dir=tmp_path / "other", log=notes.append)
    assert seen["config"].steps == 3 and notes == []


@pytest.mark.parametrize("gpu", [False, True])
def test_edit_command_says_which_steps_it_chose(tiny_stylegan2, monkeypatch, tmp_path, capsys, gpu):
    from stylerig_au.align import FaceTransform
    from stylerig_au.models.checkpoints import save_stylegan2

    from .test_edit_cli import random_directions

    G = tiny_stylegan2
    photo = tmp_path / "me.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photo)
    monkeypatch.setattr(invert, "on_gpu", lambda device: gpu)  # the device check
    quad = np.array([[0.0, 0.0], [0.0, 32.0], [32.0, 32.0], [32.0, 0.0]])
    transform = FaceTransform(quad=quad, source_size=(32, 32), output_size=G.resolution).to_dict()
    monkeypatch.setattr(photo_module, "invert_photo", lambda G, source, latent_path, config, **kw: {
        "ws": G.mapping(torch.zeros(1, G.z_dim))[0].repeat(G.num_ws, 1), "transform": transform,
        "steps": config.steps, "losses": {"lpips": 0.5}})
    args = ["edit", str(photo), "--au", "12=+1", "--generator", str(save_stylegan2(G, tmp_path / "g.pt")),
            "--directions", str(random_directions(G).save(tmp_path / "d.pt")), "--device", "cpu", "--out", str(tmp_path / "e.png")]
    assert main(args) == 0
    err = capsys.readouterr().err
    steps = 500 if gpu else 60
    assert invert.steps_note("cuda" if gpu else "cpu") in err and f"inverted me.png ({steps} steps" in err
