"""The one overwrite rule, used by every command that writes files.

An existing file is replaced only when

1. the user asked for it (``--overwrite``), or
2. this tool made it from the same inputs with the same settings (a cache hit: it is reused, or
   remade identically), or
3. it is the declared output (``--out FILE``) and not one of the inputs.

Before any slow work, a command also refuses an output that *is* one of its inputs (the same file
under another spelling, through a symlink or a hard link), and two inputs that would write the same
output (``a/me.jpg`` and ``b/me.jpg`` both making ``me.pt``).

How a file says who made it: latent files and ``align``'s JSON carry their source's sha256 and the
settings; PNGs written with ``save_image(..., provenance=...)`` carry a ``stylerig-au`` text chunk
(:func:`read_provenance`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from stylerig_au.errors import StylerigError

PROVENANCE_KEY = "stylerig-au"  # the PNG text chunk holding what made the file (a JSON dict)


def _keys(path: Path) -> set:
    """What identifies a file: its resolved path (symlinks and ``..`` undone) and, when it exists, its inode."""
    keys: set = {path.resolve()}
    try:
        st = path.stat()
        keys.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    return keys


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: equal after resolving symlinks and ``..``, or (both
    existing) the same inode, as for a hard link."""
    return bool(_keys(Path(a)) & _keys(Path(b)))


class Inputs:
    """The files a command reads, to check outputs against (built once: a check costs one stat per output)."""

    def __init__(self, paths: Iterable[str | os.PathLike | None]) -> None:
        self._by_key: dict = {}
        for path in (Path(p) for p in paths if p is not None):
            for key in _keys(path):
                self._by_key.setdefault(key, path)

    def refuse_as_outputs(self, outputs: Iterable[str | os.PathLike | None]) -> None:
        """Raise StylerigError when an output is one of the inputs, or two outputs are one file (None: ignored)."""
        seen: dict = {}
        for out in (Path(o) for o in outputs if o is not None):
            keys = _keys(out)
            source = next((self._by_key[k] for k in keys if k in self._by_key), None)
            if source is not None:
                alias = "" if str(out) == str(source) else f" (the same file as the input {source})"
                raise StylerigError(f"{out}{alias} is an input; writing the output there would destroy it: "
                                    "choose another output name or folder")
            if keys & seen.keys():
                raise StylerigError(f"two outputs are the same file {out}; give them different names")
            seen.update(dict.fromkeys(keys, out))


def refuse_inputs_as_outputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise StylerigError when an output is one of the inputs (see :func:`same_file`), or two outputs
    are one file; None entries are ignored. Call it before any slow work."""
    Inputs(inputs).refuse_as_outputs(outputs)


def refuse_shared_outputs(plans: Mapping[Path, Iterable[Path]]) -> None:
    """``plans``: each input -> the files it would write. Raise StylerigError when two inputs would
    write the same file (inputs with one stem), naming both and what to do."""
    seen: dict[Path, Path] = {}
    for source, outputs in plans.items():
        for out in outputs:
            key = out.resolve()
            if key in seen and not same_file(seen[key], source):  # (a file named twice is one input)
                raise StylerigError(f"{seen[key]} and {source} would both write {out.name}; rename one, or "
                                    "run them into different output folders")
            seen[key] = source


def check_replaceable(path: str | os.PathLike, *, overwrite: bool, made_here: Callable[[Path], bool] | None = None,
                      what: str = "it was not made by this command from the same input with the same settings") -> None:
    """Raise StylerigError unless ``path`` may be written: it is absent, ``overwrite`` is set, or
    ``made_here(path)`` says this tool made it from the same inputs with the same settings.

    ``what``: why it is not replaceable, for the message (e.g. 'it holds a latent made with 500 steps').
    """
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if made_here is not None and made_here(path):
        return
    raise StylerigError(f"{path} already exists and {what}; pass --overwrite to replace it, or choose another output")


def read_provenance(path: str | os.PathLike) -> dict | None:
    """What made a PNG written by ``save_image(..., provenance=...)`` (a dict), or None for any other file."""
    from PIL import Image

    from stylerig_au.imageio import no_pillow_pixel_check

    try:
        with no_pillow_pixel_check(), Image.open(path) as img:  # reads the header and text chunks only
            text = getattr(img, "text", {}).get(PROVENANCE_KEY)
        return json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - unreadable, not an image, not ours: no provenance
        return None


def made_with(provenance: dict) -> Callable[[Path], bool]:
    """A ``made_here`` test for :func:`check_replaceable`: the file's provenance equals ``provenance``."""
    return lambda path: read_provenance(path) == json.loads(json.dumps(provenance))
