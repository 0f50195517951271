"""The top-level CLI: help, version, lazy command loading and exit codes."""

from __future__ import annotations

import subprocess
import sys

from stylerig_au.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, _, summary) in COMMANDS.items():
        assert name in out and summary[:30] in out


def test_every_registered_command_imports_and_has_help(capsys):
    for name in COMMANDS:
        assert main([name, "--help"]) == 0, name
        assert "Usage:" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from stylerig_au.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_sigterm_stops_a_command_like_ctrl_c(monkeypatch, capsys):
    """kill (SIGTERM) raises KeyboardInterrupt inside the command, so it stops as on Ctrl-C; the
    process's own SIGTERM handler is back afterwards."""
    import os
    import signal
    import time

    import click

    import stylerig_au.commands.doctor as doctor_module

    @click.command()
    def killed() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(doctor_module, COMMANDS["doctor"][1], killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["doctor"]) == 130
    assert "aborted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before
