"""The ``stylerig-au`` command line: a thin click group.

Each command lives in ``stylerig_au/commands/<name>.py`` and is only imported when it runs, so
``stylerig-au --help`` stays fast and never imports torch. Commands raise
:class:`~stylerig_au.errors.StylerigError` for user mistakes; :func:`main` turns that into a
one-line ``error: ...``. Exit statuses (:data:`EXIT_CODES`): 0 success, 1 an error (or some inputs of a
batch failed), 2 a usage error (unknown option, bad option value, missing argument: also one
``error: ...`` line), 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import errno
import importlib
import signal
import sys
import threading
import warnings

import click

from stylerig_au import __version__
from stylerig_au.errors import StylerigError, StylerigWarning

EXIT_CODES = {"ok": 0, "error": 1, "usage": 2, "interrupted": 130}
# OSErrors of the environment (the disk, permissions, paths): one line, not a traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                      errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.EIO}

# command name -> (module under stylerig_au.commands, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("demo", "demo", "Align, invert, edit and paste back a real photo; measure it and write a grid."),
    "doctor": ("doctor", "doctor", "Report versions, GPU, compilers, op implementations and assets."),
    "align": ("align", "align", "FFHQ-align the faces of photos (and keep the transform for paste-back)."),
    "detect": ("detect", "detect", "Estimate the intensities of 17 facial Action Units in photos."),
    "invert": ("invert", "invert", "Invert photos into the generator's W+ space (latent files + reconstructions)."),
    "metrics": ("metrics", "metrics", "MSE, PSNR, SSIM, LPIPS and identity distance between images."),
    "pretrained": ("pretrained", "pretrained", "List, fetch and verify the pretrained assets."),
    "generate": ("generate", "generate", "Render faces for a list of seeds with a generator, plus a grid."),
    "edit": ("edit", "edit", "Edit the Action Units of a photo (pasted back) or a latent file."),
    "animate": ("animate", "animate", "Animate an AU edit of a photo or latent file as a GIF (or MP4)."),
    "sweep": ("sweep", "sweep", "Grid of a face with several AUs (rows) at several intensities (columns)."),
    "edited-samples": ("edited_samples", "edited_samples", "Make OpenFace-labelled faces and their AU-mapper (or refined) edits, to train the student on."),
    "train-detector": ("train_detector", "train_detector", "Train the fast differentiable student AU detector (distilled from OpenFace)."),
    "evaluate": ("evaluate", "evaluate", "Measure AU edits: target vs achieved, drift, identity, background, pose, speed."),
    "train-landmarks": ("train_landmarks", "train_landmarks", "Train the differentiable landmark net (distilled from dlib's 68 points on generator faces)."),
    "train-mapper": ("train_mapper", "train_mapper", "Train the AU-conditioned mapper M(w+, ΔAU) -> Δw+ (student-supervised; torchrun-ready)."),
    "calibrate-mapper": ("calibrate_mapper", "calibrate_mapper", "Rescale the AU mapper's per-AU inputs so OpenFace (or the student) measures the asked-for change."),
    "learn-directions": ("learn_directions", "learn_directions", "Learn linear AU directions from AU-labelled generator samples."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"stylerig_au.commands.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stylerig-au")
def cli() -> None:
    """Edit facial Action Units (FACS AUs) of real face photos with a StyleGAN."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and exit with status 1.

    SIGTERM (``kill``, a batch scheduler's pre-emption) stops a command as Ctrl-C does, so a long one
    (training, inversion, calibration) ends with its usual message and a rerun resumes from its saved
    state."""
    previous = signal.getsignal(signal.SIGTERM)
    install = threading.current_thread() is threading.main_thread() and previous is not None
    if install:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # raises KeyboardInterrupt, as for SIGINT
    try:
        return _run(argv)
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("always", StylerigWarning)
        previous_show = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            return _dispatch(argv)
        finally:
            warnings.showwarning = previous_show


def _dispatch(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="stylerig-au", standalone_mode=False)
    except StylerigError as err:
        return _error(str(err), EXIT_CODES["error"])
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_CODES["interrupted"]
    except click.UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group (`stylerig-au`, `... pretrained`): its help
            err.show()
            return err.exit_code
        ctx = err.ctx
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return _error(f"{err.format_message()}{where}", EXIT_CODES["usage"])
    except click.ClickException as err:
        return _error(err.format_message(), err.exit_code)
    except click.exceptions.Exit as err:
        return err.exit_code
    except MemoryError:
        return _error("out of memory; use a smaller photo (or fewer at a time, or a smaller --batch-size)", EXIT_CODES["error"])
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        return _error(f"{where}{err.strerror or err}; check that the folder exists, is writable and has free space",
                      EXIT_CODES["error"])
    return EXIT_CODES["ok"]


def _error(message: str, code: int) -> int:
    """Print ``error: <message>`` on one line to stderr; return the exit status ``code``."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one plain ``warning: ...`` line; every other warning as Python shows it."""
    if issubclass(category, StylerigWarning):
        from tqdm import tqdm  # writes above a progress bar that may be on screen

        tqdm.write(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


if __name__ == "__main__":
    sys.exit(main())
