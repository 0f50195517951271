"""Composable, immutable AU edits: what to change, not how.

An :class:`Edit` maps AU numbers to a :class:`Term`: a relative change (``+2`` intensity steps on the
0–5 scale) or an absolute target (``to=3.0``, reached by measuring the current intensity), each with
an optional restriction to some W+ slots. Edits compose and scale::

    AU(12, +2) + AU(6, +1)           # two AUs at once (the same AU's deltas add up)
    0.5 * presets.smile               # half a smile (vocabulary combination AU6 + AU12)
    -AU(4)                            # AU4 by -1
    AU(4, to=3.0)                     # brow lowerer to intensity 3
    only_layers(AU(12, 2), "middle")  # or AU(12, 2).only_layers("middle", 0, 1)
    Edit.parse("AU12=+2,6:1")         # the CLI's syntax (stylerig_au.au.vocab.parse_au_spec)

Layer restrictions are symbolic ('coarse' | 'middle' | 'fine' or slot indices) and are resolved
against a generator's slots only when applied (:func:`layer_mask`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from stylerig_au.au.vocab import AU as _AU_TABLE
from stylerig_au.au.vocab import AU_NUMBERS, COMBINATIONS, au_number, parse_au_spec
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot

GROUPS = ("coarse", "middle", "fine")
INTENSITY_MAX = 5.0  # AU intensities are on a 0-5 scale: targets lie in it, changes are at most its width

LayerToken = int | str
LayerSet = frozenset  # of LayerToken


@dataclass(frozen=True)
class Term:
    """What an edit does to one AU.

    Attributes:
        value: the relative change (``absolute=False``) or the target intensity (``absolute=True``),
            in AU intensity units (0–5 scale).
        absolute: True for a target, False for a change.
        layers: a conjunction of slot restrictions; each is a frozenset of group names and slot
            indices (a union). Empty: every slot the AU's direction uses.
    """

    value: float
    absolute: bool = False
    layers: tuple[LayerSet, ...] = ()

    def __repr__(self) -> str:
        return f"Term({f'to={self.value:g}' if self.absolute else f'{self.value:+g}'}{', layers=' + _layers_repr(self.layers) if self.layers else ''})"


def _layers_repr(layers: tuple[LayerSet, ...]) -> str:
    return " & ".join("{" + ", ".join(repr(t) for t in _sorted_tokens(s)) + "}" for s in layers)


def _sorted_tokens(tokens: Iterable[LayerToken]) -> list[LayerToken]:
    return sorted(tokens, key=lambda t: (isinstance(t, str), GROUPS.index(t) if isinstance(t, str) else t))


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(float(x)):
        raise StylerigError(f"{what} must be a finite number, got {x!r}")
    return float(x)


class Edit(Mapping):
    """An immutable edit: a mapping AU number -> :class:`Term`, in AU order.

    Supports ``+`` (compose), ``k * edit`` / ``edit * k`` / ``edit / k`` (scale relative changes),
    ``-edit``, ``==`` and hashing. Absolute targets cannot be scaled or negated.
    """

    __slots__ = ("_terms",)

    def __init__(self, terms: Mapping[int | str, Term] | None = None) -> None:
        items: dict[int, Term] = {}
        for au, term in (terms or {}).items():
            if not isinstance(term, Term):
                raise StylerigError(f"edit terms must be Term objects, got {type(term).__name__} for AU {au}")
            items[au_number(au)] = term
        object.__setattr__(self, "_terms", tuple(sorted(items.items())))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Edit is immutable; build a new one with +, * or only_layers")

    # --- mapping
    def __getitem__(self, au: int | str) -> Term:
        try:
            number = au_number(au)
        except StylerigError:
            raise KeyError(au) from None
        for n, term in self._terms:
            if n == number:
                return term
        raise KeyError(number)

    def __iter__(self) -> Iterator[int]:
        return (n for n, _ in self._terms)

    def __len__(self) -> int:
        return len(self._terms)

    # --- identity
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edit) and self._terms == other._terms

    def __hash__(self) -> int:
        return hash(("Edit", self._terms))

    def __repr__(self) -> str:
        if not self._terms:
            return "Edit()"
        parts = []
        for n, t in self._terms:
            text = f"AU({n}, to={t.value:g})" if t.absolute else f"AU({n}, {t.value:+g})"
            for layer_set in t.layers:
                text = f"only_layers({text}, {', '.join(repr(x) for x in _sorted_tokens(layer_set))})"
            parts.append(text)
        return " + ".join(parts)

    # --- algebra
    def __add__(self, other: object) -> "Edit":
        if isinstance(other, numbers.Number) and other == 0:  # lets sum([...]) work
            return self
        if not isinstance(other, Edit):
            return NotImplemented
        out = dict(self._terms)
        for n, b in other._terms:
            a = out.get(n)
            if a is None:
                out[n] = b
                continue
            if a.layers != b.layers:
                raise StylerigError(f"cannot add two AU{n} terms restricted to different layers; "
                                    "add the edits first, then restrict them with only_layers")
            if a.absolute != b.absolute:
                raise StylerigError(f"cannot add a relative change to an absolute target for AU{n}; use one or the other")
            if a.absolute:
                if a.value != b.value:
                    raise StylerigError(f"conflicting targets for AU{n}: to={a.value:g} and to={b.value:g}")
                continue
            out[n] = replace(a, value=a.value + b.value)
        return Edit(out)

    __radd__ = __add__

    def __mul__(self, k: object) -> "Edit":
        if isinstance(k, Edit):
            raise StylerigError("edits cannot be multiplied together; use + to combine them")
        if not isinstance(k, numbers.Real):
            return NotImplemented
        k = _number(k, "an edit's scale")
        targets = [n for n, t in self._terms if t.absolute]
        if targets:
            raise StylerigError(f"cannot scale absolute targets (AU{', AU'.join(map(str, targets))}); "
                                "scale relative edits only, or change the target with AU(n, to=...)")
        return Edit({n: replace(t, value=t.value * k) for n, t in self._terms})

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> "Edit":
        if not isinstance(k, numbers.Real):
            return NotImplemented
        if float(k) == 0.0:
            raise StylerigError("cannot divide an edit by zero")
        return self * (1.0 / float(k))

    def __neg__(self) -> "Edit":
        return self * -1.0

    def __pos__(self) -> "Edit":
        return self

    # --- views
    @property
    def is_relative(self) -> bool:
        """True when no term is an absolute target (so the edit can be scaled)."""
        return not any(t.absolute for _, t in self._terms)

    @property
    def deltas(self) -> dict[int, float]:
        """AU -> relative change, for the relative terms."""
        return {n: t.value for n, t in self._terms if not t.absolute}

    @property
    def targets(self) -> dict[int, float]:
        """AU -> target intensity, for the absolute terms."""
        return {n: t.value for n, t in self._terms if t.absolute}

    def only_layers(self, *layers: LayerToken | Iterable[int]) -> "Edit":
        """This edit restricted to some W+ slots (see :func:`only_layers`)."""
        return only_layers(self, *layers)

    @classmethod
    def parse(cls, text: str) -> "Edit":
        """An edit from the CLI syntax, e.g. ``'AU12=+2,6:1'`` or ``'smile=0.5'`` (relative changes only)."""
        return Edit({n: Term(v) for n, v in parse_au_spec(text).items()})


def _resolve_au_name(name: str) -> int | None:
    """AU number for a FACS name such as 'Lip Corner Puller' (case/space/hyphen-insensitive), else None."""
    key = "".join(c for c in name.lower() if c.isalnum())
    for n, unit in _AU_TABLE.items():
        if "".join(c for c in unit.name.lower() if c.isalnum()) == key:
            return n
    return None


def AU(au: int | str, delta: float | None = None, *, to: float | None = None) -> Edit:  # noqa: N802 - reads as a noun
    """One AU edit: ``AU(12, +2)`` (a change), ``AU(12)`` (+1), ``AU('AU4', to=3.0)`` (a target).

    ``au`` may be a number (12, '12', 'AU12'), a FACS name ('Lip Corner Puller') or a combination
    name from the vocabulary ('smile', scaled by ``delta``).

    Raises:
        StylerigError: unknown AU (the message lists valid ones), both ``delta`` and ``to``, a
            non-finite value, or a target outside 0–5 or on a combination.
    """
    if delta is not None and to is not None:
        raise StylerigError("give either a change (AU(n, +2)) or a target (AU(n, to=3)), not both")
    if isinstance(au, str) and not au.strip().lower().removeprefix("au").isdigit():
        key = au.strip().lower().replace("_", "-")
        if key in COMBINATIONS:
            if to is not None:
                raise StylerigError(f"absolute targets are per AU; write e.g. "
                                    f"{' + '.join(f'AU({n}, to=...)' for n in COMBINATIONS[key])}")
            k = 1.0 if delta is None else _number(delta, f"the amount of '{key}'")
            return Edit({n: Term(w * k) for n, w in COMBINATIONS[key].items()})
        named = _resolve_au_name(au)
        if named is None:
            raise StylerigError(f"unknown AU '{au}'; valid AUs: {', '.join(map(str, AU_NUMBERS))}; "
                                f"names: {', '.join(COMBINATIONS)}")
        au = named
    number = au_number(au)
    if to is not None:
        target = _number(to, f"AU{number}'s target")
        if not 0.0 <= target <= INTENSITY_MAX:
            raise StylerigError(f"AU{number}'s target {target:g} is outside the intensity range 0–{INTENSITY_MAX:g}")
        return Edit({number: Term(target, absolute=True)})
    return Edit({number: Term(1.0 if delta is None else _number(delta, f"AU{number}'s change"))})


def check_change(value: float, what: str) -> float:
    """``value`` if it is a possible change on the 0–5 intensity scale (at most ±5), else StylerigError naming ``what``."""
    if not -INTENSITY_MAX <= value <= INTENSITY_MAX:
        raise StylerigError(f"{what} {value:+g} is outside ±{INTENSITY_MAX:g}: intensities run 0–{INTENSITY_MAX:g}, "
                            "so no change is larger; use e.g. +2, or a target such as @3")
    return value


def check_scale(edit: Edit) -> Edit:
    """``edit`` if every relative change (summed per AU) lies within ±5, the width of the 0–5 scale; else StylerigError."""
    for au, value in edit.deltas.items():
        check_change(value, f"the change of AU{au}")
    return edit


def _layer_tokens(layers: Sequence[LayerToken | Iterable[int]]) -> LayerSet:
    tokens: set[LayerToken] = set()
    for item in layers:
        if isinstance(item, str):
            if item not in GROUPS:
                raise StylerigError(f"unknown layer group '{item}'; use {', '.join(GROUPS)} or slot indices")
            tokens.add(item)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            if int(item) < 0:
                raise StylerigError(f"slot index {item} is negative; slots count from 0")
            tokens.add(int(item))
        elif isinstance(item, Iterable):
            tokens |= _layer_tokens(list(item))
        else:
            raise StylerigError(f"layers are group names ({', '.join(GROUPS)}) or slot indices, got {item!r}")
    return frozenset(tokens)


def only_layers(edit: Edit, *layers: LayerToken | Iterable[int]) -> Edit:
    """``edit`` restricted to some W+ slots: group names ('coarse', 'middle', 'fine') and/or slot indices
    (ints or iterables such as ``range(4, 8)``), taken as a union. Restricting twice intersects.

    The restriction also intersects with each AU's own slot mask when applied; slots a generator
    does not use never move.
    """
    if not isinstance(edit, Edit):
        raise StylerigError(f"only_layers expects an Edit (e.g. AU(12, 2)), got {type(edit).__name__}")
    tokens = _layer_tokens(layers)
    if not tokens:
        raise StylerigError("only_layers needs at least one group ('coarse', 'middle', 'fine') or slot index")
    return Edit({n: replace(t, layers=t.layers + (tokens,) if tokens not in t.layers else t.layers)
                 for n, t in edit.items()})


def layer_mask(layers: tuple[LayerSet, ...], slots: Sequence[StyleSlot]) -> torch.Tensor:
    """Resolve a term's layer restriction against a generator's slots: bool [num_ws] (all True if none).

    Raises:
        StylerigError: a slot index outside 0 .. num_ws-1.
    """
    num_ws = len(slots)
    mask = torch.ones(num_ws, dtype=torch.bool)
    for tokens in layers:
        allowed = torch.zeros(num_ws, dtype=torch.bool)
        for t in tokens:
            if isinstance(t, str):
                allowed |= torch.tensor([s.group == t for s in slots], dtype=torch.bool)
            elif t >= num_ws:
                raise StylerigError(f"slot index {t} is out of range for a generator with {num_ws} W+ slots")
            else:
                allowed[t] = True
        mask &= allowed
    return mask


class _Presets:
    """Named edits from the vocabulary's combinations: ``presets.smile``, ``presets.brow_raise``, ...
    (hyphens become underscores), each +1 per AU. ``presets['open-mouth']`` works too."""

    def _key(self, name: str) -> str:
        return name.replace("_", "-")

    def __getattr__(self, name: str) -> Edit:
        if name.startswith("__") or self._key(name) not in COMBINATIONS:
            raise AttributeError(f"no preset {name!r}; presets: {', '.join(self.names())}")
        return AU(self._key(name))

    def __getitem__(self, name: str) -> Edit:
        if self._key(name) not in COMBINATIONS:
            raise StylerigError(f"no preset '{name}'; presets: {', '.join(self.names())}")
        return AU(self._key(name))

    def __dir__(self) -> list[str]:
        return self.names()

    def names(self) -> list[str]:
        return [n.replace("-", "_") for n in COMBINATIONS]

    def __repr__(self) -> str:
        return f"presets({', '.join(self.names())})"


presets = _Presets()
