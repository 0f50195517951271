"""Shared helpers for tests that need real assets or photos.

``require_asset`` returns a pretrained asset's path, or skips the test when the asset cannot be had
here (e.g. the OpenFace models for a user who has not accepted their licence). CI sets
``STYLERIG_AU_REQUIRE_ASSETS=1``, which turns those skips into failures so nothing is skipped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stylerig_au import pretrained
from stylerig_au.errors import AssetError

REPO = Path(__file__).resolve().parent.parent


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it where assets are required (CI sets ``STYLERIG_AU_REQUIRE_ASSETS=1``)."""
    if os.environ.get("STYLERIG_AU_REQUIRE_ASSETS") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_asset(name: str) -> Path:
    """Path of the converted asset ``name`` (fetched if needed), or skip/fail with the registry's message."""
    try:
        return pretrained.path(name)
    except AssetError as err:
        skip_or_fail(str(err))


def faces_dir() -> Path:
    """The shared development photos: ``$STYLERIG_AU_FACES`` or ``../shared/faces`` beside the repo."""
    folder = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces"))
    if not folder.is_dir():
        skip_or_fail(f"development photos not found at {folder}; set STYLERIG_AU_FACES")
    return folder
