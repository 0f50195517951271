"""The OpenFace 2.2 AU estimator: plumbing on a fake model (fast) and behaviour on real photos (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylerig_au.au import openface_model as om
from stylerig_au.au.openface import ALIGN_SIZE, OpenFaceAU, similarity_to_reference, triangle_mask
from tests.helpers import faces_dir, require_asset, skip_or_fail
from tests.test_openface_model import fake_mean_shape, fake_model_path  # noqa: F401 - fixture


def _photo_with_face(seed: int, size: int = 200, scale: float = 1.2, angle: float = 0.1, shift=(0.0, 0.0)):
    """A textured uint8 photo and landmarks of the fake PDM mean face placed in it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = 128 + 60 * np.sin(xx[..., None] / (5 + rng.uniform(0, 5, 3))) * np.cos(yy[..., None] / (7 + rng.uniform(0, 5, 3)))
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    c, s = math.cos(angle), math.sin(angle)
    lm = scale * fake_mean_shape()[:, :2] @ np.array([[c, s], [-s, c]]) + np.array([size / 2 + shift[0], size / 2 + shift[1]])
    return img, lm


@pytest.fixture
def fake_estimator(fake_model_path) -> OpenFaceAU:  # noqa: F811
    return OpenFaceAU(fake_model_path)


def test_similarity_recovers_scale_and_rotation():
    ref = torch.from_numpy(fake_mean_shape()[:, :2])
    angle, scale = 0.3, 2.0
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    src = (scale * ref @ rot.T + torch.tensor([40.0, -7.0]))[None]
    a = similarity_to_reference(src, ref)[0]
    torch.testing.assert_close(a @ (scale * rot), torch.eye(2, dtype=torch.float64))


def test_triangle_mask_fills_a_square_made_of_two_triangles():
    pts = torch.tensor([[[10.0, 10.0], [50.0, 10.0], [50.0, 40.0], [10.0, 40.0]]])
    mask = triangle_mask(pts, torch.tensor([[0, 1, 2], [0, 2, 3]]), 64)
    assert mask.shape == (1, 64, 64)
    assert mask[0, 10:41, 10:51].all() and mask.sum() == 31 * 41


def test_output_shape_range_and_batch_consistency(fake_estimator):
    photos, marks = zip(*[_photo_with_face(k, angle=0.1 * k, shift=(5 * k, -3 * k)) for k in range(3)])
    batched = fake_estimator.predict_photos(list(photos), list(marks))
    assert batched.shape == (3, 17) and batched.dtype == np.float32
    assert (batched >= 0).all() and (batched <= 5).all()
    for k in range(3):
        np.testing.assert_allclose(fake_estimator.predict_photos([photos[k]], [marks[k]])[0], batched[k], atol=1e-4)


def test_aligned_face_is_masked_and_8bit(fake_estimator):
    img, lm = _photo_with_face(0)
    faces, fit = fake_estimator.align([torch.from_numpy(img).permute(2, 0, 1).float()], torch.from_numpy(lm)[None])
    assert faces.shape == (1, 3, ALIGN_SIZE, ALIGN_SIZE)
    assert torch.equal(faces, faces.round()) and faces.min() >= 0 and faces.max() <= 255
    covered = (faces[0] > 0).any(0).float().mean()
    assert 0.2 < covered < 0.95  # the face is kept, the corners are masked out
    assert fit.local.shape == (1, 34)


def test_mean_face_aligns_with_scale_0_7_and_no_rotation(fake_estimator):
    _, lm = _photo_with_face(1, size=240, scale=1.0, angle=0.0)
    lm_t = torch.from_numpy(lm)[None]
    warp = fake_estimator.warp_matrices(lm_t, fake_estimator.fit(lm_t))[0]
    torch.testing.assert_close(warp[:, :2], 0.7 * torch.eye(2, dtype=torch.float64), atol=1e-3, rtol=0)


def test_gradient_flows_to_the_image(fake_estimator):
    img, lm = _photo_with_face(2)
    x = torch.from_numpy(img).permute(2, 0, 1).float().requires_grad_(True)
    y = fake_estimator([x], torch.from_numpy(lm)[None], clip=False)
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_predict_features_is_the_linear_svr(fake_model_path):  # noqa: F811
    blob = om.load(fake_model_path)
    est = OpenFaceAU(blob)
    x = torch.randn(4, om.NUM_FEATURES, dtype=torch.float64) * 0.1
    expected = ((x[:, None] - blob["means"]) * blob["weights"]).sum(-1) + blob["bias"]
    torch.testing.assert_close(est.predict_features(x, clip=False).double(), expected, atol=1e-4, rtol=1e-4)
    assert est.predict_features(x * 1000).max() <= 5 and est.predict_features(x * 1000).min() >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(fake_estimator):
    photos, marks = zip(*[_photo_with_face(k, angle=0.05 * k) for k in range(4)])
    cpu = fake_estimator.predict_photos(list(photos), list(marks))
    gpu = fake_estimator.to("cuda").predict_photos(list(photos), list(marks))
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)


# ----------------------------------------------------------------------------- real model, real photos


@pytest.fixture(scope="module")
def real_estimator() -> OpenFaceAU:
    return OpenFaceAU(require_asset("openface-2.2-au"))


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    from stylerig_au.au.landmarks import landmarks_68

    img = data.astronaut()
    return img, landmarks_68(img, require_asset("dlib-landmarks-68"))


@pytest.mark.slow
def test_smile_has_high_au6_and_au12(real_estimator, astronaut):
    img, lm = astronaut
    au = dict(zip(real_estimator.aus, real_estimator.predict_photos([img], [lm])[0]))
    # the astronaut smiles broadly: OpenFace with dlib landmarks gives AU12 ≈ 3.5, AU6 ≈ 1.9
    assert au[12] > 2.5 and au[6] > 1.0
    assert au[12] == max(au.values())
    assert au[4] < 0.5 and au[15] < 0.5  # no frown, no lip-corner depressor


@pytest.mark.slow
def test_smile_scores_above_a_neutral_face(real_estimator, astronaut):
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import load_image

    neutral = load_image(faces_dir() / "unaligned" / "01.jpg")
    lm = landmarks_68(neutral, require_asset("dlib-landmarks-68"))
    assert lm is not None
    k = real_estimator.aus.index(12)
    smile = real_estimator.predict_photos([astronaut[0]], [astronaut[1]])[0, k]
    assert smile - real_estimator.predict_photos([neutral], [lm])[0, k] > 2.0


@pytest.mark.slow
def test_agrees_with_pyfaceau_oracle(real_estimator, astronaut):
    from stylerig_au.au import oracle

    if not oracle.available():
        skip_or_fail("pyfaceau oracle not installed (make env installs it)")
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import list_images, load_image

    raw = require_asset("openface-2.2-au")  # licence accepted; the raw folder is the registry's source
    folder = _raw_folder()
    if folder is None:
        skip_or_fail(f"raw OpenFace AU_predictors folder not found (converted file at {raw})")
    ref = oracle.PyFaceAUOracle(folder)
    photos = [astronaut[0]] + [load_image(p) for p in list_images([faces_dir() / "celebahq-dev"])[:3]]
    marks = [astronaut[1]] + [landmarks_68(p, require_asset("dlib-landmarks-68")) for p in photos[1:]]
    ours = real_estimator.predict_photos(photos, marks)
    theirs = np.stack([ref.predict(p, m) for p, m in zip(photos, marks)])
    mae = np.abs(ours - theirs).mean(0)
    assert mae.max() < 0.15, dict(zip(real_estimator.aus, mae.round(3)))


def _raw_folder():
    import os
    from pathlib import Path

    for d in os.environ.get("STYLERIG_AU_PRETRAINED_PATH", "").split(os.pathsep):
        folder = Path(d) / "openface-2.2" / "AU_predictors"
        if d and (folder / om.STATIC_LIST).is_file():
            return folder
    return None


def test_geometry_part_is_the_shape_term_of_the_unclipped_reading(fake_estimator):
    """hog term + geometry term + offset == the unclipped prediction; the geometry term needs only landmarks."""
    photos, marks = zip(*[_photo_with_face(k, angle=0.05 * k) for k in range(2)])
    lms = torch.from_numpy(np.stack(marks))
    imgs = [torch.from_numpy(p).permute(2, 0, 1) for p in photos]
    x = fake_estimator.features(imgs, lms).double()
    full = fake_estimator.predict_features(x, clip=False).double()
    n_geo = x.shape[1] - 4464
    hog_term = x[:, :-n_geo] @ fake_estimator.weights[:-n_geo].double()
    torch.testing.assert_close(fake_estimator.texture_part(imgs, lms), hog_term)
    geo = fake_estimator.geometry_part(lms)
    assert geo.shape == (2, len(fake_estimator.aus)) and geo.dtype == torch.float64
    torch.testing.assert_close(hog_term + geo + fake_estimator.offset.double(), full, atol=1e-3, rtol=1e-4)
    # scale-free: the same face twice as large has the same shape term
    torch.testing.assert_close(fake_estimator.geometry_part(lms * 2.0), geo, atol=1e-6, rtol=1e-6)


def test_texture_terms_of_samples_read_the_stored_images_with_rescaled_landmarks(fake_estimator):
    """learn.texture_terms: per-sample FHOG terms from the stored (downsampled) images; NaN rows without a face."""
    from stylerig_au.edit.learn import texture_kept, texture_terms
    from stylerig_au.errors import StylerigError
    from stylerig_au.samples import Samples

    photos, marks = zip(*[_photo_with_face(k, size=100, scale=0.6) for k in range(3)])
    images = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous()
    full_res_marks = (torch.from_numpy(np.stack(marks)) + 0.5) * 4 - 0.5  # as if found on a 400² render
    found = torch.tensor([True, False, True])
    meta = {"aus": list(fake_estimator.aus)}
    samples = Samples(meta, torch.arange(3), torch.zeros(3, 8), torch.zeros(3, 17), torch.zeros(3, 3),
                      full_res_marks, found, images)
    terms = texture_terms(samples, resolution=400, detector=fake_estimator)
    assert np.isnan(terms[1]).all() and np.isfinite(terms[[0, 2]]).all()
    expect = fake_estimator.texture_part(images[[0, 2]], torch.from_numpy(np.stack([marks[0], marks[2]])))
    np.testing.assert_allclose(terms[[0, 2]], expect.numpy(), atol=1e-3)
    two = texture_kept(400, (fake_estimator.aus[0], fake_estimator.aus[3]), fake_estimator)
    np.testing.assert_allclose(two.values(samples)[[0, 2]], terms[[0, 2]][:, [0, 3]])
    without_images = Samples(meta, samples.seeds, samples.w, samples.aus, samples.pose, samples.landmarks, found, None)
    with pytest.raises(StylerigError, match="images"):
        texture_terms(without_images, resolution=400, detector=fake_estimator)
