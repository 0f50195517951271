"""OpenFace model files: parsing the raw formats, converting to one .pt, loading, and their errors.

Fast tests write small fake raw files in OpenFace's formats; the slow one converts the real files.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import Delaunay

from stylerig_au.au import openface_model as om
from stylerig_au.errors import AssetError
from tests.helpers import require_asset


def fake_mean_shape() -> np.ndarray:
    """A face-like [68, 3] layout in millimetres (y down), in dlib/iBUG point order."""
    pts = []
    t = np.linspace(-np.pi * 0.45, np.pi * 0.45, 17)
    pts += [(70 * np.sin(a), -10 + 80 * np.cos(a), 20 * np.cos(a)) for a in t]  # jaw 0-16
    pts += [(-55 + 10 * i, -40 - 5 * np.sin(np.pi * i / 4), -10) for i in range(5)]  # right brow
    pts += [(15 + 10 * i, -40 - 5 * np.sin(np.pi * i / 4), -10) for i in range(5)]  # left brow
    pts += [(0, -30 + 8 * i, -20 - 5 * i) for i in range(4)]  # nose bridge 27-30
    pts += [(-12 + 6 * i, 10, -25) for i in range(5)]  # nostrils 31-35
    for cx in (-32, 32):  # eyes 36-47
        pts += [(cx + 12 * np.cos(a), -25 + 5 * np.sin(a), -15) for a in np.linspace(np.pi, -np.pi, 6, endpoint=False)]
    pts += [(25 * np.cos(a), 35 - 8 * np.sin(a), -15) for a in np.linspace(np.pi, -np.pi, 12, endpoint=False)]  # outer lip
    pts += [(15 * np.cos(a), 35 - 3 * np.sin(a), -15) for a in np.linspace(np.pi, -np.pi, 8, endpoint=False)]  # inner lip
    return np.array(pts, dtype=np.float64)


def _cv_matrix(m: np.ndarray) -> bytes:
    m = np.asarray(m, dtype="<f8")
    return struct.pack("<iii", m.shape[0], m.shape[1], 6) + m.tobytes()


def _text_matrix(comment: str, m: np.ndarray, fmt: str = "%.6f") -> str:
    rows = "\n".join(" ".join(fmt % v for v in row) for row in np.atleast_2d(m))
    return f"# {comment}\n{m.shape[0]}\n{m.shape[1]}\n{6 if fmt != '%d' else 4}\n{rows}\n"


def write_fake_raw(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write every file of REQUIRED_FILES in OpenFace's formats (random SVRs, a synthetic PDM)."""
    rng = np.random.default_rng(seed)
    (folder / "svr_combined").mkdir(parents=True, exist_ok=True)
    lines = [f"{f} AU{au:02d}" for au, f in om.STATIC_SVR_FILES.items()]
    (folder / om.STATIC_LIST).write_text("\n".join(["svm_combined/AU_1_static.dat AU01", *lines]) + "\n")
    for k, f in enumerate(om.STATIC_SVR_FILES.values()):
        means = rng.normal(0, 0.05, (1, om.NUM_FEATURES))
        weights = rng.normal(0, 0.02, (om.NUM_FEATURES, 1))
        (folder / f).write_bytes(struct.pack("<i", 0) + _cv_matrix(means) + _cv_matrix(weights) + struct.pack("<d", 0.5 + 0.1 * k))
    mean = fake_mean_shape()
    basis = np.linalg.qr(rng.normal(size=(204, 34)))[0]
    eigen = np.linspace(400, 5, 34)
    stacked_mean = np.concatenate([mean[:, 0], mean[:, 1], mean[:, 2]])[:, None]
    pdm = _text_matrix("mean", stacked_mean) + _text_matrix("components", basis) + _text_matrix("eigenvalues", eigen[None])
    (folder / om.PDM_FILE).write_text(pdm)
    tris = Delaunay(mean[:, :2]).simplices
    (folder / om.TRIS_FILE).write_text(_text_matrix("tris", tris, fmt="%d"))
    return om.raw_members(folder)


@pytest.fixture(scope="session")
def fake_model_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("openface_raw")
    out = folder / "openface-2.2-au.pt"
    om.convert(write_fake_raw(folder), out)
    return out


def test_required_files_cover_17_static_svrs_pdm_and_triangulation():
    assert len(om.STATIC_SVR_FILES) == 17 and len(om.REQUIRED_FILES) == 20
    assert {om.STATIC_LIST, om.PDM_FILE, om.TRIS_FILE} <= set(om.REQUIRED_FILES)
    assert all(f.startswith("svr_combined/") and "static" in f for f in om.STATIC_SVR_FILES.values())


def test_convert_and_load_round_trip(tmp_path):
    members = write_fake_raw(tmp_path, seed=3)
    out = tmp_path / "sub" / "model.pt"
    om.convert(members, out)
    blob = om.load(out)
    assert blob["aus"] == list(om.STATIC_SVR_FILES)
    assert blob["means"].shape == blob["weights"].shape == (17, om.NUM_FEATURES)
    assert blob["bias"].shape == (17,) and blob["bias"][0].item() == pytest.approx(0.5)
    means, weights, bias = om.read_static_svr(members[om.STATIC_SVR_FILES[12]])
    k = blob["aus"].index(12)
    np.testing.assert_array_equal(blob["means"][k].numpy(), means)
    np.testing.assert_array_equal(blob["weights"][k].numpy(), weights)
    assert blob["bias"][k].item() == bias
    np.testing.assert_allclose(blob["pdm_mean"].numpy(), fake_mean_shape(), atol=1e-6)
    assert blob["pdm_basis"].shape == (68, 3, 34) and blob["pdm_eigen"].shape == (34,)
    assert blob["triangles"].dtype == torch.int64 and blob["triangles"].shape[1] == 3
    assert not list(out.parent.glob("*.tmp"))


def test_pdm_basis_keeps_openface_block_layout(tmp_path):
    members = write_fake_raw(tmp_path)
    _, basis, _ = om.read_pdm(members[om.PDM_FILE])
    raw = om._read_text_matrices(members[om.PDM_FILE])[1]
    # row i of the raw matrix is x of point i, row 68 + i its y, row 136 + i its z
    np.testing.assert_allclose(basis[5, 1], raw[68 + 5])
    np.testing.assert_allclose(basis[67, 2], raw[136 + 67])


def test_convert_reports_missing_members(tmp_path):
    members = write_fake_raw(tmp_path)
    del members[om.PDM_FILE]
    with pytest.raises(AssetError, match="missing.*PDM"):
        om.convert(members, tmp_path / "x.pt")


def test_dynamic_model_is_rejected(tmp_path):
    members = write_fake_raw(tmp_path)
    path = members[om.STATIC_SVR_FILES[1]]
    path.write_bytes(struct.pack("<i", 1) + path.read_bytes()[4:])
    with pytest.raises(ValueError, match="not a static model"):
        om.read_static_svr(path)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        om.load(tmp_path / "nope.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(AssetError, match="not a converted OpenFace"):
        om.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(AssetError, match="cannot read"):
        om.load(tmp_path / "junk.pt")


@pytest.mark.slow
def test_real_asset_converts_to_the_published_layout():
    blob = om.load(require_asset("openface-2.2-au"))
    assert blob["aus"] == [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]
    assert blob["means"].shape == (17, 4702) and blob["triangles"].shape == (111, 3)
    assert (blob["pdm_eigen"] > 0).all()
