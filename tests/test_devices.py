"""``--device`` handling: the shared parser/resolver, and every command that takes ``--device`` run
through the CLI's own entry point with a faked CUDA (no GPU needed).

The fake keeps torch's real argument check of ``torch.cuda.set_device`` (a device without an index
raises ValueError there, which is how ``invert --device cuda`` crashed on an H200), records the index
and stops the command, so nothing after the device choice runs.
"""

from __future__ import annotations

import pytest
import torch
from torch.cuda._utils import _get_device_index

from stylerig_au.cli import main
from stylerig_au.devices import parse_device, resolve_device
from stylerig_au.errors import StylerigError


class Reached(Exception):
    """Raised by the fake set_device: the command got as far as selecting its GPU."""


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with 2 fake GPUs; returns the list of indices handed to torch.cuda.set_device."""
    chosen: list[int] = []

    def set_device(device):
        chosen.append(_get_device_index(device))  # torch's own check: raises for torch.device('cuda')
        raise Reached

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    return chosen


# ---------------------------------------------------------------------------------------- the resolver


@pytest.mark.parametrize(
    "spec,want",
    [("cpu", ("cpu", None)), ("cuda", ("cuda", None)), ("cuda:3", ("cuda", 3)), (" CUDA:0 ", ("cuda", 0))],
)
def test_parse_device_spellings(spec, want):
    assert parse_device(spec) == want


@pytest.mark.parametrize("spec", ["banana", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "gpu", "", "auto", "cuda:0:1", "mps"])
def test_parse_device_rejects(spec):
    with pytest.raises(StylerigError, match="is not a device: use cpu, cuda or cuda:N"):
        parse_device(spec)


def test_auto_only_where_allowed():
    assert parse_device("auto", allow_auto=True) == ("auto", None)
    with pytest.raises(StylerigError, match=r"\(or auto\)"):
        parse_device("auto:1", allow_auto=True)


def test_resolve_cpu_touches_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device called for cpu"))
    assert resolve_device("cpu") == "cpu"


def test_resolve_auto_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", allow_auto=True) == "cpu"


def test_resolve_cuda_uses_an_index(monkeypatch, fake_cuda):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(_get_device_index(d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == "cuda:1"  # the current GPU
    assert resolve_device("cuda:0") == "cuda:0"
    assert resolve_device("auto", allow_auto=True) == "cuda:1"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("cuda") == "cuda:0"  # torchrun: LOCAL_RANK, not the current GPU
    assert resolve_device("cuda:1") == "cuda:1"  # an explicit index stays
    assert calls == [1, 0, 1, 0, 1]


def test_resolve_errors(monkeypatch, fake_cuda):
    with pytest.raises(StylerigError, match=r"GPU 5 does not exist here \(2 GPUs: use cuda:0 to cuda:1\)"):
        resolve_device("cuda:5")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(StylerigError, match="GPU 3 does not exist"):
        resolve_device("cuda")
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(StylerigError, match="bad torchrun environment"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(StylerigError, match="CUDA is not available here; use --device cpu"):
        resolve_device("cuda:0")
    assert fake_cuda == []


# ---------------------------------------------------------------------------------------- every command


def _photo(tmp_path):
    from stylerig_au.imageio import save_image

    path = tmp_path / "face.png"
    save_image(path, __import__("numpy").zeros((8, 8, 3), dtype="uint8"))
    return path


# command -> argv without --device (built in tmp_path); each reaches its device choice before any heavy work.
COMMANDS = {
    "demo": lambda t: ["demo", "--out", str(t / "demo")],
    "invert": lambda t: ["invert", str(_photo(t)), "--out", str(t / "inv")],
    "generate": lambda t: ["generate", "--seeds", "0", "--out", str(t / "gen")],
    "edit": lambda t: ["edit", str(_photo(t)), "--au", "12=+1", "--out", str(t / "e.png")],
    "animate": lambda t: ["animate", str(_photo(t)), "--au", "12=+1", "--out", str(t / "a.gif")],
    "sweep": lambda t: ["sweep", str(_photo(t)), "--aus", "12", "--out", str(t / "s.png")],
    "evaluate": lambda t: ["evaluate", "--generated", "1", "--edits", "12=+2", "--out", str(t / "ev")],
    "edited-samples": lambda t: ["edited-samples", str(t / "es"), "--num", "1"],
    "train-detector": lambda t: ["train-detector", "--data", str(t / "data"), "--out", str(t / "s.pt")],
    "train-landmarks": lambda t: ["train-landmarks", "--data", str(t / "data"), "--out", str(t / "l.pt")],
    "train-mapper": lambda t: ["train-mapper", "--out", str(t / "m.pt")],
    "calibrate-mapper": lambda t: ["calibrate-mapper", "--out", str(t / "c.pt")],
    "learn-directions": lambda t: ["learn-directions", "--out", str(t / "d.pt")],
}


def test_every_device_command_is_covered():
    """A new command with --device must be added to COMMANDS above."""
    import importlib

    from stylerig_au.cli import COMMANDS as CLI

    with_device = set()
    for name, (module, attr, _) in CLI.items():
        command = getattr(importlib.import_module(f"stylerig_au.commands.{module}"), attr)
        if any("--device" in p.opts for p in command.params):
            with_device.add(name)
    assert with_device == set(COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("spec,env,index", [("cuda", {}, 0), ("cuda:1", {}, 1), ("cuda", {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, 1)])
def test_command_selects_gpu_by_index(command, spec, env, index, fake_cuda, monkeypatch, tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(Reached):
        main(COMMANDS[command](tmp_path) + ["--device", spec])
    assert fake_cuda == [index]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    "spec,cuda,message",
    [
        ("banana", True, "error: --device 'banana' is not a device: use cpu, cuda or cuda:N"),
        ("cuda:99", True, "error: --device cuda:99: GPU 99 does not exist here (2 GPUs: use cuda:0 to cuda:1)"),
        ("cuda", False, "error: --device cuda requested but CUDA is not available here; use --device cpu"),
    ],
)
def test_command_rejects_bad_device(command, spec, cuda, message, fake_cuda, monkeypatch, tmp_path, capsys):
    if not cuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = COMMANDS[command](tmp_path) + ["--device", spec]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    if command == "generate" and spec == "banana":
        message = message.replace("cuda:N", "cuda:N (or auto)")
    assert err == [message]
    assert fake_cuda == []


def test_one_reading_of_the_torchrun_environment(monkeypatch):
    """Device choice, sharded inversion and distributed training read torchrun's variables the same way."""
    from stylerig_au import invert
    from stylerig_au.devices import torchrun_env, torchrun_local_rank
    from stylerig_au.edit.mapper_train import init_distributed

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert torchrun_env() == invert.shard_info() == (0, 1, 0) and torchrun_local_rank() is None
    assert init_distributed("cpu")[0].world == 1
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert torchrun_env() == (2, 3, 2) and torchrun_local_rank() == 2  # LOCAL_RANK defaults to RANK (one machine)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(StylerigError, match="bad torchrun environment: RANK=3 WORLD_SIZE=3"):
        invert.shard_info()
