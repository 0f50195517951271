"""The Action Unit vocabulary: AU numbers, FACS names, face regions, named combinations, and parsing.

Users name AU targets in several ways; :func:`parse_au_spec` accepts all of them::

    "AU12=+2"          AU12 by +2 (intensities are on FACS-like 0–5 steps)
    "12:2.5"           AU12 by 2.5
    "au6=1, au12=2"    several, separated by commas or spaces
    "smile"            a named combination (AU6 + AU12), strength 1 per AU
    "smile=2"          the combination scaled by 2
    "-AU4" / "AU4"     a sign alone means ±1

Unknown AUs or names raise :class:`~stylerig_au.errors.StylerigError` listing what is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stylerig_au.errors import StylerigError


@dataclass(frozen=True)
class ActionUnit:
    """One FACS Action Unit.

    Attributes:
        number: FACS number (1, 2, 4, ...).
        name: FACS name, e.g. 'Lip Corner Puller'.
        region: the face region it moves: 'brows', 'eyes', 'nose', 'cheeks', 'mouth', 'jaw'.
        muscle: the main muscle behind it.
    """

    number: int
    name: str
    region: str
    muscle: str

    @property
    def label(self) -> str:
        """'AU01'-style label, as OpenFace writes it."""
        return f"AU{self.number:02d}"


_TABLE = (
    (1, "Inner Brow Raiser", "brows", "frontalis, pars medialis"),
    (2, "Outer Brow Raiser", "brows", "frontalis, pars lateralis"),
    (4, "Brow Lowerer", "brows", "corrugator supercilii, depressor supercilii"),
    (5, "Upper Lid Raiser", "eyes", "levator palpebrae superioris"),
    (6, "Cheek Raiser", "cheeks", "orbicularis oculi, pars orbitalis"),
    (7, "Lid Tightener", "eyes", "orbicularis oculi, pars palpebralis"),
    (9, "Nose Wrinkler", "nose", "levator labii superioris alaeque nasi"),
    (10, "Upper Lip Raiser", "mouth", "levator labii superioris"),
    (12, "Lip Corner Puller", "mouth", "zygomaticus major"),
    (14, "Dimpler", "mouth", "buccinator"),
    (15, "Lip Corner Depressor", "mouth", "depressor anguli oris"),
    (17, "Chin Raiser", "jaw", "mentalis"),
    (20, "Lip Stretcher", "mouth", "risorius, platysma"),
    (23, "Lip Tightener", "mouth", "orbicularis oris"),
    (25, "Lips Part", "mouth", "depressor labii inferioris, relaxed mentalis"),
    (26, "Jaw Drop", "jaw", "masseter relaxed, pterygoids"),
    (45, "Blink", "eyes", "relaxed levator palpebrae, orbicularis oculi"),
)

AU: dict[int, ActionUnit] = {n: ActionUnit(n, name, region, muscle) for n, name, region, muscle in _TABLE}
"""Every AU this toolkit knows (the 17 OpenFace 2.2 intensity AUs), by number."""

AU_NUMBERS: tuple[int, ...] = tuple(AU)

REGIONS: dict[str, tuple[int, ...]] = {
    region: tuple(n for n, au in AU.items() if au.region == region) for region in dict.fromkeys(au.region for au in AU.values())
}
"""Face region -> the AUs that move it."""

# Prototypical combinations (EMFACS-style prototypes, reduced to the AUs above).
COMBINATIONS: dict[str, dict[int, float]] = {
    "smile": {6: 1.0, 12: 1.0},
    "happiness": {6: 1.0, 12: 1.0},
    "social-smile": {12: 1.0},
    "surprise": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},
    "sadness": {1: 1.0, 4: 1.0, 15: 1.0},
    "anger": {4: 1.0, 5: 1.0, 7: 1.0, 23: 1.0},
    "fear": {1: 1.0, 2: 1.0, 4: 1.0, 5: 1.0, 7: 1.0, 20: 1.0, 26: 1.0},
    "disgust": {9: 1.0, 15: 1.0, 17: 1.0},
    "contempt": {14: 1.0},
    "brow-raise": {1: 1.0, 2: 1.0},
    "frown": {4: 1.0},
    "blink": {45: 1.0},
    "open-mouth": {25: 1.0, 26: 1.0},
}

_ITEM = re.compile(r"^(?P<sign>[+-]?)(?P<name>[a-z][a-z-]*|(?:au)?\d+)(?:\s*[=:]\s*(?P<value>[+-]?(?:\d+\.?\d*|\.\d+)))?$")


def au_number(token: str | int) -> int:
    """The AU number named by ``12``, ``'12'``, ``'AU12'``, ``'au012'``; unknown -> StylerigError."""
    text = str(token).strip().lower().removeprefix("au")
    if not text.isdigit() or int(text) not in AU:
        raise StylerigError(f"unknown AU '{token}'; valid AUs: {', '.join(str(n) for n in AU_NUMBERS)}")
    return int(text)


def parse_au_spec(text: str) -> dict[int, float]:
    """Parse a user's AU targets into {AU number: amount}.

    Args:
        text: items separated by commas or whitespace; each ``[±]AU[=|:value]`` or a
            combination name from :data:`COMBINATIONS` with an optional ``=value`` scale.

    Returns:
        AU number -> amount (repeated AUs add up), in the order first named.

    Raises:
        StylerigError: empty text, a malformed item, an unknown AU or an unknown name.
    """
    items = [t for t in re.split(r"[,\s]+", re.sub(r"\s*([=:])\s*", r"\1", text.strip().lower())) if t]
    if not items:
        raise StylerigError("no AU given; write e.g. 'AU12=+2', '12:2.5' or 'smile'")
    out: dict[int, float] = {}
    for item in items:
        match = _ITEM.match(item)
        if not match:
            raise StylerigError(f"cannot read '{item}'; write AU=value (e.g. 'AU12=+2', '12:2.5') or a name ({', '.join(COMBINATIONS)})")
        sign = -1.0 if match["sign"] == "-" else 1.0
        value = sign * (float(match["value"]) if match["value"] is not None else 1.0)
        name = match["name"]
        if name[0].isalpha() and not re.fullmatch(r"au\d+", name):
            if name not in COMBINATIONS:
                raise StylerigError(f"unknown AU name '{name}'; valid names: {', '.join(COMBINATIONS)}; or AU numbers {', '.join(map(str, AU_NUMBERS))}")
            parts = COMBINATIONS[name]
        else:
            parts = {au_number(name): 1.0}
        for au, weight in parts.items():
            out[au] = out.get(au, 0.0) + weight * value
    return out


def describe(number: int) -> str:
    """One line, e.g. 'AU12 Lip Corner Puller (mouth)'."""
    au = AU[au_number(number)]
    return f"{au.label} {au.name} ({au.region})"
