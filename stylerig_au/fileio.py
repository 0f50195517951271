"""Writing files so that a crash or an error never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds and
    what it wrote is on disk and passes ``verify``.

    Args:
        path: the file to (re)place.
        verify: ``verify(tmp)`` reads the written file back and raises (any exception) when it is
            broken: a truncated image, a video without its frames. None: only the flush to disk.
    Raises:
        StylerigError: the write failed (OSError: a full disk, a read-only folder) or ``verify``
            failed; one line naming ``path``. ``path`` is then left exactly as it was.

    The parent folder is created. On any exception the temporary file is removed. The result gets the
    permissions a plain ``open()`` would give it (0666 minus the umask).
    """
    from stylerig_au.errors import StylerigError

    path = Path(path)
    kept = "the existing file is unchanged" if path.exists() else "nothing was written"
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        _flush_to_disk(tmp_path)  # a full disk may only show here (delayed allocation, NFS)
        if verify is not None:
            try:
                verify(tmp_path)
            except Exception as err:  # noqa: BLE001 - any failure to read it back means a broken file
                raise StylerigError(f"{path}: the written file does not read back ({type(err).__name__}: "
                                    f"{_one_line(err)}); {kept}") from None
        umask = os.umask(0)  # read the umask (there is no getter) ...
        os.umask(umask)  # ... and put it back
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as err:
        raise StylerigError(f"{path}: could not be written ({err.strerror or _one_line(err)}); {kept}") from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _flush_to_disk(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


MIN_FREE_BYTES = 8 << 20  # an output folder with less free space than this counts as full
NAME_MAX = 255  # the longest file name most file systems take (bytes)


def check_writable(path: str | os.PathLike, *, folder: bool = False, min_free: int = MIN_FREE_BYTES) -> None:
    """Check, before any slow work, that the file ``path`` (or, with ``folder``, files inside the folder
    ``path``) can be written: the nearest existing folder on the way must be a folder, writable, with at
    least ``min_free`` bytes free. Nothing is created (a probe file is made and removed at once).

    Raises:
        StylerigError: one line naming the path and the reason (a file where a folder is needed, a
            read-only or full disk, no permission).
    """
    from stylerig_au.errors import StylerigError

    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise StylerigError(f"{path} is a file, not a folder; give a folder")
    if not folder and path.is_dir():
        raise StylerigError(f"{path} is a folder; give a file name")
    if not folder and path.exists() and not path.is_file():  # /dev/full, a FIFO: the atomic rename would replace it
        raise StylerigError(f"{path} is not a regular file (a device or a pipe); give a file name in a folder")
    if len(os.fsencode(path.name)) > NAME_MAX - 24:  # the temporary file beside it adds ".", "." + 8 + ".partial"
        raise StylerigError(f"{path.name[:40]}...: the file name is too long; use at most {NAME_MAX - 24} bytes")
    existing = path if folder else path.parent
    existing = Path(os.path.abspath(existing))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StylerigError(f"{path}: cannot create it, {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".stylerig-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise StylerigError(f"{path}: cannot write in {existing} ({err.strerror or err}); choose a writable folder") from None
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise StylerigError(f"{path}: the disk of {existing} is full ({free / 1e6:.1f} MB free); free some space or "
                            "choose another folder")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (read back and compared before the rename); returns the path."""
    def same_text(tmp: Path) -> None:
        if tmp.read_text() != text:
            raise ValueError("the text read back differs from what was written")

    with atomic_path(path, verify=same_text) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_torch_save(path: str | os.PathLike, obj: object) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; every stored record's checksum is read back before the rename."""
    import torch

    with atomic_path(path, verify=check_zip_file) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def check_zip_file(path: Path) -> None:
    """Raise ValueError unless ``path`` is a complete zip file (torch.save's format) whose CRCs all match."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"record {bad} is damaged")


def read_json(path: str | os.PathLike, kind: str, fix: str = "delete it to start over") -> object:
    """The JSON value in ``path`` (one of our own caches or metadata files, called ``kind`` in messages).

    Raises StylerigError (one line: the file, the reason, ``fix``) when it cannot be read or parsed:
    a file cut short by a crash or a full disk, or someone else's file."""
    import json

    from stylerig_au.errors import StylerigError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise StylerigError(f"{path}: damaged {kind} ({type(err).__name__}: {_one_line(err)[:120]}); {fix}") from None


def load_error_reason(err: BaseException) -> str:
    """A short, one-line reason why a weights file could not be read, for an error message.

    torch's weights-only loader suggests loading with ``weights_only=False``, which could run code from
    the file: that advice is never passed on; such a file is described as holding other Python objects."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "weights_only" in text or "Weights only load failed" in text:
        if "allowed global" in text or "Unsupported global" in text:
            return "it holds Python objects besides tensors, which are not loaded because that could run code"
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
        detail = " ".join(found.group(1).split())[:160] if found else ""
        return f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first[:160]}" if first else type(err).__name__


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
        raise StylerigError(f"{path}: not a stylerig-au {kind} ({load_error_reason(err)}){what_to_do}") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise StylerigError(f"{path}: not a stylerig-au {kind}{what_to_do}")
    if not isinstance(record.get("format_version", 0), int):
        raise StylerigError(f"{path}: damaged {kind} (its format_version is not a number){what_to_do}")
    if record.get("format_version", 0) > version:
        raise StylerigError(f"{path}: {kind} format {record['format_version']} is newer than this stylerig_au; upgrade it")
    return record


def result_json(result: dict) -> str:
    """``result`` as indented JSON text (ending in a newline) with each entry of its ``rows`` list, if any, on
    one compact line: the per-edit rows of an evaluation stay greppable at about 80 % of the size."""
    import json

    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        return json.dumps(result, indent=1) + "\n"
    marker = "\u0000rows\u0000"
    text = json.dumps(dict(result, rows=marker), indent=1)
    body = "[\n" + ",\n".join("  " + json.dumps(row, separators=(",", ":")) for row in rows) + "\n ]"
    return text.replace(json.dumps(marker), body, 1) + "\n"
