"""The OpenFace 2.2 static AU intensity model: converter (raw files -> one .pt) and loader.

The raw files live in OpenFace's ``lib/local/FaceAnalyser/AU_predictors/`` folder (academic,
non-commercial licence; never shipped with this project). :func:`convert` reads exactly
:data:`REQUIRED_FILES` and writes one ``torch.save`` dict:

==================  ==========================  =====================================================
key                 shape / type                meaning
==================  ==========================  =====================================================
``aus``             list[int] (17)              AU numbers, in OpenFace's ``AU_all_static.txt`` order
``means``           float64 [17, 4702]          per-AU feature means subtracted before the dot product
``weights``         float64 [17, 4702]          linear SVR weights
``bias``            float64 [17]                linear SVR biases
``pdm_mean``        float64 [68, 3]             PDM mean shape (mm), rows = landmarks, cols = x, y, z
``pdm_basis``       float64 [68, 3, 34]         PDM principal components (same layout)
``pdm_eigen``       float64 [34]                PDM eigenvalues (variances of the local parameters)
``triangles``       int64 [T, 3]                triangulation of the 68 landmarks used for the face mask
``meta``            dict                        source, licence, feature layout
==================  ==========================  =====================================================

A static model predicts ``clip((x - means) @ weights + bias, 0, 5)`` with
``x = FHOG(4464, row-major cells × 31) ++ PDM basis @ p_local (204) ++ p_local (34)``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig_au.errors import AssetError
from stylerig_au.fileio import atomic_torch_save

ASSET_NAME = "openface-2.2-au"
STATIC_LIST = "AU_all_static.txt"
PDM_FILE = "In-the-wild_aligned_PDM_68.txt"
TRIS_FILE = "tris_68_full.txt"

# AU number -> SVR file (relative to AU_predictors/), as listed in AU_all_static.txt.
STATIC_SVR_FILES: dict[int, str] = {
    1: "svr_combined/AU_1_static_intensity_comb.dat",
    2: "svr_combined/AU_2_static_intensity_comb.dat",
    4: "svr_combined/AU_4_static_intensity_comb.dat",
    5: "svr_combined/AU_5_static_intensity.dat",
    6: "svr_combined/AU_6_static_intensity_comb.dat",
    7: "svr_combined/AU_7_static_intensity_comb.dat",
    9: "svr_combined/AU_9_static_intensity.dat",
    10: "svr_combined/AU_10_static_intensity_comb.dat",
    12: "svr_combined/AU_12_static_intensity_comb.dat",
    14: "svr_combined/AU_14_static_intensity.dat",
    15: "svr_combined/AU_15_static_intensity_comb.dat",
    17: "svr_combined/AU_17_static_intensity_comb.dat",
    20: "svr_combined/AU_20_static_intensity.dat",
    23: "svr_combined/AU_23_static_intensity_comb.dat",
    25: "svr_combined/AU_25_static_intensity.dat",
    26: "svr_combined/AU_26_static_intensity_comb.dat",
    45: "svr_combined/AU_45_static_intensity_comb.dat",
}

REQUIRED_FILES: tuple[str, ...] = (STATIC_LIST, PDM_FILE, TRIS_FILE, *STATIC_SVR_FILES.values())

NUM_HOG = 12 * 12 * 31
NUM_GEOM = 68 * 3 + 34
NUM_FEATURES = NUM_HOG + NUM_GEOM


# ----------------------------------------------------------------------------- raw parsers


def _read_cv_matrix(buf: bytes, offset: int) -> tuple[np.ndarray, int]:
    """One binary OpenCV-style matrix: int32 rows, cols, type, then rows*cols float64 values."""
    rows, cols, cvtype = struct.unpack_from("<iii", buf, offset)
    offset += 12
    if cvtype != 6:  # CV_64FC1
        raise ValueError(f"unexpected matrix type {cvtype} (want 6 = CV_64F)")
    count = rows * cols
    data = np.frombuffer(buf, dtype="<f8", count=count, offset=offset).reshape(rows, cols)
    return data.copy(), offset + 8 * count


def read_static_svr(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Parse one static linear SVR ``.dat``: returns (means [4702], weights [4702], bias)."""
    buf = Path(path).read_bytes()
    (kind,) = struct.unpack_from("<i", buf, 0)
    if kind != 0:
        raise ValueError(f"{path.name}: kind {kind} is not a static model (0)")
    means, off = _read_cv_matrix(buf, 4)
    weights, off = _read_cv_matrix(buf, off)
    (bias,) = struct.unpack_from("<d", buf, off)
    if means.shape != (1, NUM_FEATURES) or weights.shape != (NUM_FEATURES, 1):
        raise ValueError(f"{path.name}: means {means.shape} / weights {weights.shape}, want (1, {NUM_FEATURES}) / ({NUM_FEATURES}, 1)")
    if off + 8 != len(buf):
        raise ValueError(f"{path.name}: {len(buf) - off - 8} trailing bytes")
    return means[0], weights[:, 0], float(bias)


def _read_text_matrices(path: Path) -> list[np.ndarray]:
    """OpenFace's text matrix format: optional '#' comment, then rows, cols, type, then the values."""
    tokens: list[str] = []
    for line in Path(path).read_text().splitlines():
        if not line.strip().startswith("#"):
            tokens.extend(line.split())
    mats, i = [], 0
    while i < len(tokens):
        rows, cols, _ = int(tokens[i]), int(tokens[i + 1]), int(tokens[i + 2])
        i += 3
        mats.append(np.array(tokens[i : i + rows * cols], dtype=np.float64).reshape(rows, cols))
        i += rows * cols
    return mats


def read_pdm(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 68-point PDM: mean [68, 3], basis [68, 3, 34], eigenvalues [34] (x, y, z stored as blocks)."""
    mean, basis, eigen = _read_text_matrices(path)[:3]
    n = mean.shape[0] // 3
    mean3 = mean[:, 0].reshape(3, n).T
    basis3 = basis.reshape(3, n, -1).transpose(1, 0, 2)
    return mean3, basis3, eigen.reshape(-1)


def read_triangles(path: Path) -> np.ndarray:
    """Triangulation file: count, 3, type header then one vertex-index triple per line -> int64 [T, 3]."""
    tris = _read_text_matrices(path)[0].astype(np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.min() < 0 or tris.max() >= 68:
        raise ValueError(f"{path.name}: not a triangulation of 68 points")
    return tris


def _read_static_list(path: Path) -> list[tuple[str, int]]:
    pairs = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("svr_combined/"):
            pairs.append((parts[0], int(parts[1].removeprefix("AU"))))
    return pairs


# ----------------------------------------------------------------------------- convert / load


def convert(members: dict[str, Path], out: Path) -> None:
    """Read the raw OpenFace files named in :data:`REQUIRED_FILES` and ``torch.save`` one dict at ``out``.

    Args:
        members: file name relative to ``AU_predictors/`` -> local path (all of REQUIRED_FILES).
        out: destination ``.pt`` (written to a temporary name, then renamed).
    """
    missing = [m for m in REQUIRED_FILES if m not in members]
    if missing:
        raise AssetError(f"{ASSET_NAME}: raw files missing: {', '.join(missing)}")
    listed = _read_static_list(members[STATIC_LIST])
    listed_files = {au: f for f, au in listed}
    if listed_files != STATIC_SVR_FILES:
        raise AssetError(f"{ASSET_NAME}: {STATIC_LIST} does not list the 17 expected static SVRs; is this OpenFace 2.2?")
    aus = [au for _, au in listed]
    parsed = [read_static_svr(members[listed_files[au]]) for au in aus]
    mean3, basis3, eigen = read_pdm(members[PDM_FILE])
    tris = read_triangles(members[TRIS_FILE])
    blob: dict[str, Any] = {
        "aus": aus,
        "means": torch.from_numpy(np.stack([p[0] for p in parsed])),
        "weights": torch.from_numpy(np.stack([p[1] for p in parsed])),
        "bias": torch.tensor([p[2] for p in parsed], dtype=torch.float64),
        "pdm_mean": torch.from_numpy(mean3),
        "pdm_basis": torch.from_numpy(basis3),
        "pdm_eigen": torch.from_numpy(eigen),
        "triangles": torch.from_numpy(tris),
        "meta": {
            "format": "stylerig_au.openface-2.2-au/1",
            "source": "OpenFace 2.2.0 lib/local/FaceAnalyser/AU_predictors (static SVRs, svr_combined)",
            "license": "OpenFace academic licence: academic and non-commercial research only",
            "features": "fhog[12x12 cells row-major x 31] ++ pdm_basis@p_local [x0..x67,y0..y67,z0..z67] ++ p_local[34]",
            "prediction": "clip((x - means) @ weights + bias, 0, 5)",
        },
    }
    atomic_torch_save(out, blob)


def load(path: str | os.PathLike | None = None, accept_license: bool = False) -> dict[str, Any]:
    """Load the converted model dict (see module docstring).

    ``path=None`` asks the asset registry (``accept_license`` accepts OpenFace's non-commercial
    licence for a fetch).
    """
    from stylerig_au import pretrained

    explicit = path is not None
    if path is None:
        path = pretrained.path(ASSET_NAME, accept_license=accept_license)
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{ASSET_NAME}: file '{path}' does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user problem
        raise pretrained.damaged(ASSET_NAME, path, err, explicit) from None
    if not isinstance(blob, dict) or blob.get("meta", {}).get("format") != "stylerig_au.openface-2.2-au/1":
        raise AssetError(f"{ASSET_NAME}: '{path}' is not a converted OpenFace AU model")
    return blob


def raw_members(folder: str | os.PathLike) -> dict[str, Path]:
    """Map :data:`REQUIRED_FILES` to paths inside a local ``AU_predictors`` folder (for development)."""
    folder = Path(folder)
    return {name: folder / name for name in REQUIRED_FILES}
