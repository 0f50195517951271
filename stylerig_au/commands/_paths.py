"""Click parameter types for output paths, checked when the command line is read: before any model loads.

``--out`` of every command uses :class:`OutputFile` or :class:`OutputFolder`, so an unwritable output
(a file where a folder is needed, a read-only or full disk) is one ``error:`` line, not a traceback after
the work (see :func:`stylerig_au.fileio.check_writable`).
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.errors import StylerigError


class _Output(click.Path):
    folder = False

    def __init__(self) -> None:
        super().__init__(path_type=Path, file_okay=not self.folder, dir_okay=self.folder)

    def convert(self, value, param, ctx):
        from stylerig_au.fileio import check_writable

        path = super().convert(value, param, ctx)
        try:
            check_writable(path, folder=self.folder)
        except StylerigError as err:
            self.fail(str(err), param, ctx)
        return path


class OutputFile(_Output):
    """A file the command will write: its folder must be creatable, writable and not full."""

    name = "output file"


class OutputFolder(_Output):
    """A folder the command will write into: it must be (or be creatable as) a writable, not full, folder."""

    name = "output folder"
    folder = True
