"""The command line's edit syntax: ``--au`` and ``--preset`` values into one :class:`~stylerig_au.edit.spec.Edit`.

``--au`` takes one or more items (separated by commas or spaces; the option may repeat):

=================  ==============================================================
``12=+2``          AU12 up by 2 intensity steps (0–5 scale); ``AU12=2``, ``12:2`` too
``4=-1`` / ``-4``  AU4 down by 1 (a sign alone means ±1; ``12`` alone means +1)
``4=@3``           AU4 *to* intensity 3: an absolute target (its current intensity is
                   measured on the face first, with the OpenFace estimator)
``smile=0.5``      a named combination (here AU6 and AU12 by +0.5 each)
=================  ==============================================================

``--preset NAME[=STRENGTH]`` adds a named combination (``smile``, ``brow-raise``, ...) scaled by
STRENGTH (default 1). Repeated AUs add up; an AU cannot get both a change and a target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from stylerig_au.edit.spec import AU, Edit, check_scale, presets
from stylerig_au.errors import StylerigError

_TARGET = re.compile(r"^(?P<au>[^=:@\s]+)\s*[=:]\s*@\s*(?P<value>[+-]?(?:\d+\.?\d*|\.\d+))$")
_PRESET = re.compile(r"^(?P<name>[A-Za-z][A-Za-z_-]*)(?:\s*[=:]\s*(?P<value>[+-]?(?:\d+\.?\d*|\.\d+)))?$")


def parse_au_option(text: str) -> Edit:
    """One ``--au`` value (see the module docstring) -> Edit.

    Raises:
        StylerigError: empty text, a malformed item (the message shows the syntax), an unknown AU or name,
            or changes of one AU adding up to more than ±5.
    """
    items = [t for t in re.split(r"[,\s]+", re.sub(r"\s*([=:@])\s*", r"\1", text.strip())) if t]
    if not items:
        raise StylerigError("empty --au value; write e.g. --au 12=+2 (a change) or --au 4=@3 (a target)")
    edit = Edit()
    for item in items:
        if "@" in item:
            match = _TARGET.match(item)
            if not match:
                raise StylerigError(f"cannot read --au '{item}'; an absolute target is AU=@VALUE, e.g. --au 4=@3 "
                                    "(AU4 to intensity 3)")
            edit = edit + AU(match["au"], to=float(match["value"]))
        else:
            try:
                edit = edit + Edit.parse(item)
            except StylerigError as err:
                raise StylerigError(f"--au '{item}': {err}; changes are AU=+N (e.g. 12=+2), targets AU=@N (e.g. 4=@3)") from None
    return check_scale(edit)


def parse_preset_option(text: str) -> Edit:
    """One ``--preset NAME[=STRENGTH]`` value -> Edit (the preset scaled by STRENGTH, default 1).

    Raises:
        StylerigError: malformed value or unknown preset (the message lists them).
    """
    match = _PRESET.match(text.strip())
    if not match:
        raise StylerigError(f"cannot read --preset '{text}'; write NAME or NAME=STRENGTH, e.g. smile=0.5; "
                            f"presets: {', '.join(n.replace('_', '-') for n in presets.names())}")
    edit = presets[match["name"].lower()]
    return edit if match["value"] is None else float(match["value"]) * edit


def parse_edit_options(aus: Sequence[str] = (), preset_names: Sequence[str] = ()) -> Edit:
    """All ``--au`` and ``--preset`` values, added up into one Edit.

    Raises:
        StylerigError: nothing given, any value that :func:`parse_au_option` / :func:`parse_preset_option` rejects,
            or an AU whose changes add up to more than ±5 (the width of the 0–5 scale, as targets are bounded by it).
    """
    if not aus and not preset_names:
        raise StylerigError("nothing to edit; give --au (e.g. --au 12=+2) and/or --preset (e.g. --preset smile)")
    edit = Edit()
    for text in aus:
        edit = edit + parse_au_option(text)
    for text in preset_names:
        edit = edit + parse_preset_option(text)
    return check_scale(edit)


def parse_number_list(text: str, what: str) -> list[float]:
    """``'-2,-1,0,1,2'`` -> [-2.0, -1.0, 0.0, 1.0, 2.0] (finite numbers, commas or spaces).

    Raises:
        StylerigError: an empty list or an item that is not a finite number (``what`` names the option).
    """
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not items:
        raise StylerigError(f"{what} is empty; give numbers such as -2,-1,0,1,2")
    out = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise StylerigError(f"{what}: '{item}' is not a number; give numbers such as -2,-1,0,1,2") from None
        if not math.isfinite(value):
            raise StylerigError(f"{what}: '{item}' is not a finite number")
        out.append(value)
    return out
