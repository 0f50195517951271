"""The composable edit objects: construction, algebra, layer restrictions, parsing, presets, errors."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.au.vocab import COMBINATIONS
from stylerig_au.edit import AU, Edit, Term, only_layers, presets
from stylerig_au.edit.spec import layer_mask
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot


def test_construction_forms():
    assert AU(12, +2) == Edit({12: Term(2.0)})
    assert AU("AU12", 2) == AU("12", 2.0) == AU(12, 2)
    assert AU(12) == AU(12, 1.0)
    assert AU("Lip Corner Puller", 3) == AU(12, 3)
    assert AU(4, to=3.0) == Edit({4: Term(3.0, absolute=True)})
    assert dict(AU("smile", 2)) == {n: Term(2.0 * w) for n, w in COMBINATIONS["smile"].items()}


def test_unknown_au_lists_valid_ones():
    with pytest.raises(StylerigError, match="valid AUs: 1, 2, 4"):
        AU(13, 1)
    with pytest.raises(StylerigError, match="valid AUs"):
        AU("grin")
    with pytest.raises(StylerigError, match="either"):
        AU(12, 1, to=2)
    with pytest.raises(StylerigError, match="outside"):
        AU(12, to=7)
    with pytest.raises(StylerigError, match="finite"):
        AU(12, float("nan"))


def test_composition_adds_same_au_and_is_order_free():
    e = AU(12, +2) + AU(6, +1) + AU(12, -0.5)
    assert e.deltas == {6: 1.0, 12: 1.5}
    assert AU(12, 2) + AU(6, 1) == AU(6, 1) + AU(12, 2)
    assert hash(AU(12, 2) + AU(6, 1)) == hash(AU(6, 1) + AU(12, 2))
    assert sum([AU(1), AU(2), AU(1)]) == AU(1, 2) + AU(2)
    assert len({AU(1), AU(1, 1.0), AU(2)}) == 2


def test_absolute_targets_compose_and_conflict():
    e = AU(4, to=3.0) + AU(12, 1)
    assert e.targets == {4: 3.0} and e.deltas == {12: 1.0} and not e.is_relative
    assert AU(4, to=3.0) + AU(4, to=3.0) == AU(4, to=3.0)
    with pytest.raises(StylerigError, match="conflicting targets for AU4"):
        AU(4, to=3.0) + AU(4, to=2.0)
    with pytest.raises(StylerigError, match="relative change to an absolute target"):
        AU(4, to=3.0) + AU(4, 1)


def test_scaling_and_negation():
    smile = AU(6, 1) + AU(12, 2)
    assert 0.5 * smile == smile * 0.5 == smile / 2 == AU(6, 0.5) + AU(12, 1.0)
    assert -smile == AU(6, -1) + AU(12, -2)
    assert -(-smile) == smile
    with pytest.raises(StylerigError, match="cannot scale absolute targets"):
        2 * AU(4, to=3.0)
    with pytest.raises(StylerigError, match="cannot scale absolute targets"):
        -AU(4, to=3.0)
    with pytest.raises(StylerigError, match="together"):
        smile * smile
    with pytest.raises(StylerigError, match="zero"):
        smile / 0


def test_immutable():
    e = AU(12, 2)
    with pytest.raises(AttributeError):
        e._terms = ()
    with pytest.raises(TypeError):
        e[12] = Term(3.0)  # type: ignore[index]


def test_only_layers_forms_and_intersection():
    e = AU(12, 2) + AU(6, 1)
    a = only_layers(e, "coarse", 5)
    assert a == e.only_layers(5, "coarse") and a != e
    assert a[12].layers == (frozenset({"coarse", 5}),)
    assert e.only_layers(range(2, 4)) == e.only_layers(2, 3)
    twice = a.only_layers("fine")
    assert twice[6].layers == (frozenset({"coarse", 5}), frozenset({"fine"}))
    assert a.only_layers("coarse", 5) == a  # restricting to the same set again changes nothing
    scaled = 3 * a
    assert scaled[12].layers == a[12].layers and scaled[12].value == 6.0
    with pytest.raises(StylerigError, match="unknown layer group"):
        e.only_layers("top")
    with pytest.raises(StylerigError, match="at least one"):
        e.only_layers()
    with pytest.raises(StylerigError, match="different layers"):
        AU(12, 1).only_layers("coarse") + AU(12, 1).only_layers("fine")
    assert "only_layers(AU(12, +2), 5, 'coarse')" in repr(a)


def test_layer_mask_resolution():
    slots = [StyleSlot(0, 4, "coarse"), StyleSlot(1, 8, "coarse"), StyleSlot(2, 16, "middle"),
             StyleSlot(3, 0, "fine", used=False), StyleSlot(4, 64, "fine")]
    assert layer_mask((), slots).tolist() == [True] * 5
    assert layer_mask((frozenset({"coarse", 4}),), slots).tolist() == [True, True, False, False, True]
    both = (frozenset({"coarse", 4}), frozenset({"fine"}))
    assert layer_mask(both, slots).tolist() == [False, False, False, False, True]
    assert layer_mask((frozenset({"middle"}),), slots).dtype == torch.bool
    with pytest.raises(StylerigError, match="out of range"):
        layer_mask((frozenset({9}),), slots)


def test_parse_uses_the_vocabulary():
    assert Edit.parse("AU12=+2,6:1") == AU(12, 2) + AU(6, 1)
    assert Edit.parse("smile=0.5") == 0.5 * presets.smile
    assert Edit.parse("-AU4") == -AU(4)
    with pytest.raises(StylerigError, match="unknown AU"):
        Edit.parse("AU13=1")


def test_presets_come_from_the_vocabulary():
    assert presets.smile == Edit({n: Term(w) for n, w in COMBINATIONS["smile"].items()})
    assert presets.open_mouth == presets["open-mouth"] == AU("open-mouth")
    assert set(presets.names()) == {n.replace("-", "_") for n in COMBINATIONS}
    with pytest.raises(AttributeError, match="no preset"):
        presets.grin  # noqa: B018
    with pytest.raises(StylerigError, match="no preset"):
        presets["grin"]


def test_repr_round_trips_through_eval():
    e = only_layers(AU(12, 2.5) + AU(4, to=3), "middle") + AU(6, -1)
    assert eval(repr(e), {"AU": AU, "only_layers": only_layers}) == e  # noqa: S307
    assert repr(Edit()) == "Edit()"
