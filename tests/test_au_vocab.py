"""The AU vocabulary and the parser of users' AU specifications."""

from __future__ import annotations

import pytest

from stylerig_au.au import openface_model
from stylerig_au.au.vocab import AU, AU_NUMBERS, COMBINATIONS, REGIONS, au_number, describe, parse_au_spec
from stylerig_au.errors import StylerigError


def test_table_covers_the_openface_aus():
    assert AU_NUMBERS == tuple(openface_model.STATIC_SVR_FILES)
    assert AU[12].name == "Lip Corner Puller" and AU[12].region == "mouth" and AU[12].label == "AU12"
    assert AU[6].name == "Cheek Raiser" and AU[45].name == "Blink"
    assert sorted(n for ns in REGIONS.values() for n in ns) == sorted(AU_NUMBERS)
    assert set(REGIONS["brows"]) == {1, 2, 4}


def test_combinations_use_known_aus():
    assert COMBINATIONS["happiness"] == {6: 1.0, 12: 1.0}
    assert COMBINATIONS["surprise"] == {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0}
    for parts in COMBINATIONS.values():
        assert set(parts) <= set(AU)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("AU12=+2", {12: 2.0}),
        ("12:2.5", {12: 2.5}),
        ("au12 = -1.5", {12: -1.5}),
        ("AU06=1, AU12=2", {6: 1.0, 12: 2.0}),
        ("1:1 2:.5", {1: 1.0, 2: 0.5}),
        ("smile", {6: 1.0, 12: 1.0}),
        ("Smile=2", {6: 2.0, 12: 2.0}),
        ("-AU4", {4: -1.0}),
        ("AU4", {4: 1.0}),
        ("smile, AU12=1", {6: 1.0, 12: 2.0}),
        ("surprise=0.5", {1: 0.5, 2: 0.5, 5: 0.5, 26: 0.5}),
    ],
)
def test_parse_au_spec(text, expected):
    assert parse_au_spec(text) == expected


@pytest.mark.parametrize("text", ["AU3=1", "13:2", "au99"])
def test_unknown_au_lists_valid_ones(text):
    with pytest.raises(StylerigError, match=r"unknown AU .*valid AUs: 1, 2, 4, .*45"):
        parse_au_spec(text)


def test_unknown_name_lists_valid_names():
    with pytest.raises(StylerigError, match=r"unknown AU name 'grin'; valid names: smile"):
        parse_au_spec("grin")


@pytest.mark.parametrize("text", ["", "  ", "AU12==2", "AU12=abc", "=2"])
def test_malformed_specs_are_user_errors(text):
    with pytest.raises(StylerigError):
        parse_au_spec(text)


def test_au_number_and_describe():
    assert au_number("AU01") == 1 and au_number(26) == 26 and au_number(" au45 ") == 45
    assert describe(12) == "AU12 Lip Corner Puller (mouth)"
    with pytest.raises(StylerigError):
        au_number("x")
