"""Writing files so that a crash or an error never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The parent folder is created. On an exception the temporary file is removed and ``path`` is left
    as it was. The result gets the permissions a plain ``open()`` would give it (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)  # read the umask (there is no getter) ...
        os.umask(umask)  # ... and put it back
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def load_record(path: str | os.PathLike, fmt: str, version: int, kind: str, hint: str = "") -> dict:
    """Read a ``torch.save`` dict of our own format (weights-only, so loading runs no code).

    Args:
        path: the file.
        fmt: the expected value of its ``'format'`` key; ``version``: the newest ``format_version`` we read.
        kind: what the file is called in messages (e.g. "latent file"); ``hint``: how to make one.
    Returns:
        The dict, checked for format and version.
    Raises:
        StylerigError: missing file, unreadable file, another format, or a newer version.
    """
    import torch

    from stylerig_au.errors import StylerigError

    path = Path(path)
    what_to_do = f"; {hint}" if hint else ""
    if not path.is_file():
        raise StylerigError(f"{path}: no such {kind}{what_to_do}")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not one of ours"
        raise StylerigError(f"{path}: not a stylerig-au {kind} ({type(err).__name__}){what_to_do}") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise StylerigError(f"{path}: not a stylerig-au {kind}{what_to_do}")
    if record.get("format_version", 0) > version:
        raise StylerigError(f"{path}: {kind} format {record['format_version']} is newer than this stylerig_au; upgrade it")
    return record
