"""Learning linear AU directions: read-outs, conditioning, slot groups and calibration (synthetic, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylerig_au.edit.learn import conditional_directions, learn_directions, regress, slot_groups
from stylerig_au.edit.spec import AU
from stylerig_au.errors import StylerigError
from stylerig_au.samples import Samples

K = 17
AUS = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45]


def _readout_rows(w_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, w_dim, generator=g) / w_dim**0.5, torch.randn(3, w_dim, generator=g) / w_dim**0.5


def _samples(w_dim: int, n: int = 400, noise: float = 0.02, generator: str = "tiny-stylegan2-32") -> Samples:
    """w ~ N(0, I); AU and pose labels exactly linear in w plus a little noise; a few faces 'not found'."""
    g = torch.Generator().manual_seed(1)
    rows, pose_rows = _readout_rows(w_dim)
    w = 3.0 * torch.randn(n, w_dim, generator=g)  # wide enough that no edit hits the step cap
    aus = w @ rows.T + 1.0 + noise * torch.randn(n, K, generator=g)
    pose = w @ pose_rows.T + noise * torch.randn(n, 3, generator=g)
    found = torch.ones(n, dtype=torch.bool)
    found[:5] = False
    aus[~found] = float("nan")
    pose[~found] = float("nan")
    meta = {"generator": generator, "aus": AUS, "psi": 1.0, "seed_start": 0, "detector": "synthetic"}
    return Samples(meta, torch.arange(n), w, aus, pose, torch.zeros(n, 68, 2), found, None)


def test_regression_recovers_linear_readouts_and_conditioning_isolates_each_au():
    w_dim = 32
    rows, pose_rows = _readout_rows(w_dim)
    r = regress(_samples(w_dim))
    assert (r.cv_r2 > 0.9).all() and (r.pose_cv_r2 > 0.9).all()
    assert np.allclose(r.au_rows, rows.numpy(), atol=0.05)
    dirs, scales = conditional_directions(r)
    assert np.allclose(np.linalg.norm(dirs, axis=1), 1.0)
    # one unit of AU k moves AU k's read-out by 1, every other AU and the pose by ~0
    effect = r.au_rows @ (dirs * scales[:, None]).T  # [read-out j, edited AU k]
    assert np.allclose(effect, np.eye(K), atol=1e-6)
    assert np.abs(r.pose_rows @ (dirs * scales[:, None]).T).max() < 1e-6
    # without conditioning, directions are just the read-out rows
    plain, plain_scales = conditional_directions(r, keep_pose=False, keep_aus=False)
    assert np.allclose(plain, r.au_rows / np.linalg.norm(r.au_rows, axis=1, keepdims=True))
    assert np.allclose(plain_scales, 1 / np.linalg.norm(r.au_rows, axis=1))


def test_regression_needs_enough_samples():
    with pytest.raises(StylerigError, match="at least 50"):
        regress(_samples(32, n=40))


def test_slot_groups_split_used_slots_by_resolution(tiny_stylegan2):
    groups = slot_groups(tiny_stylegan2)
    assert [name for name, _ in groups] == ["4-8px", "16px", "32px"]
    union = torch.stack([m for _, m in groups]).sum(0)
    assert torch.equal(union, torch.tensor([s.used for s in tiny_stylegan2.slots]).long())


def _slot_readout_measure(G, gain: float = 0.5):
    """Synthetic 'detector': AU k reads the slot ``slot_of[k]`` of W+ with the true read-out row, times ``gain``."""
    rows, _ = _readout_rows(G.w_dim)
    used = [s.index for s in G.slots if s.used]
    slot_of = [used[k % len(used)] for k in range(K)]
    calls = []

    def measure(ws: torch.Tensor) -> np.ndarray:
        calls.append(len(ws))
        picked = torch.stack([ws[:, slot_of[k]] for k in range(K)], dim=1)  # [P, K, w_dim]
        return (gain * (picked * rows[None]).sum(-1) + 1.0).numpy()

    return measure, slot_of, calls


def test_learn_finds_the_slots_calibrates_and_resumes(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    measure, slot_of, calls = _slot_readout_measure(G)
    probes = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(3)))[:, None].repeat(1, G.num_ws, 1)
    cache = tmp_path / "cache.json"
    dirs, results = learn_directions(G, _samples(G.w_dim), measure, probe_ws=probes, cache=cache, progress=False)
    groups = dict(slot_groups(G))
    for r in results:
        k = AUS.index(r.au)
        # the only slot group with an effect is the one holding the slot this AU is read from
        assert len(r.groups) == 1 and bool(groups[r.groups[0]][slot_of[k]])
        assert r.achieved_before_calibration == pytest.approx(1.0, abs=0.05)  # the gain halves the effect
    # after calibration a +2 edit measures +2 on the target and ~0 elsewhere (conditioning)
    before = measure(probes)
    for au in (1, 12, 26):
        change = measure(dirs.apply(probes, AU(au, 2.0))) - before
        k = AUS.index(au)
        assert change[:, k].mean() == pytest.approx(2.0, abs=0.1)
        assert np.abs(np.delete(change, k, axis=1)).mean() < 0.05
    assert dirs.meta["expressed"] == AUS
    # a rerun reads every AU from the cache instead of measuring again
    assert json.loads(cache.read_text())
    n_calls = len(calls)
    again, _ = learn_directions(G, _samples(G.w_dim), measure, probe_ws=probes, cache=cache, progress=False)
    assert len(calls) == n_calls
    assert torch.equal(again.scales, dirs.scales) and torch.equal(again.slot_masks, dirs.slot_masks)


def test_learn_rejects_samples_of_another_generator(tiny_stylegan2):
    measure, _, _ = _slot_readout_measure(tiny_stylegan2)
    probes = torch.zeros(1, tiny_stylegan2.num_ws, tiny_stylegan2.w_dim)
    with pytest.raises(StylerigError, match="made with"):
        learn_directions(tiny_stylegan2, _samples(tiny_stylegan2.w_dim, generator="other"), measure, probe_ws=probes, progress=False)


def test_weak_aus_are_capped_not_pushed_off_the_sample_range(tiny_stylegan2):
    G = tiny_stylegan2
    measure, _, _ = _slot_readout_measure(G, gain=0.02)  # the 'generator' barely expresses any AU
    probes = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)))[:, None].repeat(1, G.num_ws, 1)
    samples = _samples(G.w_dim)
    dirs, results = learn_directions(G, samples, measure, probe_ws=probes, progress=False)
    w = samples.valid().w
    for r in results:
        sigma = float((w @ dirs.direction(r.au)).std())
        assert r.step_capped and r.scale * 2.0 <= 6.0 * sigma + 1e-4 and r.scale <= 3.0 * r.linear_scale + 1e-6
    assert dirs.meta["expressed"] == []  # +2 edits measured far below 0.2


def test_labels_replace_the_openface_intensities_and_keeps_are_held_fixed():
    """``labels`` are what the AU read-outs fit; every ``keeps`` read-out stays at zero along each direction."""
    w_dim = 32
    samples = _samples(w_dim)
    g = torch.Generator().manual_seed(5)
    other_rows = torch.randn(K, w_dim, generator=g) / w_dim**0.5
    keep_rows = torch.randn(4, w_dim, generator=g) / w_dim**0.5
    labels = (samples.w @ other_rows.T).numpy()
    labels[~samples.face_found.numpy()] = np.nan  # rows without a face are dropped, NaN or not
    keeps = (samples.w @ keep_rows.T).numpy()
    r = regress(samples, labels=labels, keeps=keeps)
    assert np.allclose(r.au_rows, other_rows.numpy(), atol=0.02)
    assert r.keep_rows.shape == (4, w_dim) and (r.keep_cv_r2 > 0.99).all()
    dirs, scales = conditional_directions(r, keep_aus=False)
    step = dirs * scales[:, None]
    assert np.allclose(np.diag(r.au_rows @ step.T), 1.0)
    assert np.abs(r.keep_rows @ step.T).max() < 1e-6
    assert np.abs(r.pose_rows @ step.T).max() < 1e-6


def test_labels_with_nan_for_a_found_face_are_refused():
    samples = _samples(32)
    labels = samples.aus.numpy().copy()
    labels[10, 3] = np.nan
    with pytest.raises(StylerigError, match="NaN"):
        regress(samples, labels=labels)


def test_kept_columns_owned_by_an_au_are_free_for_that_aus_own_edit():
    """KeptQuantities.owners: AU k's direction may move the kept column AU k owns, and keeps the others."""
    w_dim = 32
    samples = _samples(w_dim)
    g = torch.Generator().manual_seed(7)
    keep_rows = torch.randn(K, w_dim, generator=g) / w_dim**0.5
    r = regress(samples, keeps=(samples.w @ keep_rows.T).numpy())
    r.keep_owners = tuple(AUS)
    dirs, scales = conditional_directions(r, keep_aus=False)
    effect = r.keep_rows @ (dirs * scales[:, None]).T  # [kept column j, edited AU k]
    off_diagonal = effect - np.diag(np.diag(effect))
    assert np.abs(off_diagonal).max() < 1e-6
    assert np.abs(np.diag(effect)).min() > 1e-3  # each AU's own column moves with it


def test_identity_kept_gives_leading_principal_components_of_the_face_features(monkeypatch):
    """identity_kept: features of each stored image on its crop, unit length, centred, projected on the top PCs."""
    import stylerig_au.identity_net as identity_net
    from stylerig_au.edit.learn import identity_kept

    seen = {}

    class FakeNet:
        def crop_affine(self, landmarks):
            seen.setdefault("landmarks", []).append(landmarks)
            return np.eye(2, 3)

        def embed(self, images, affines):
            assert images.min() >= -1 and images.max() <= 1 and affines.shape == (len(images), 2, 3)
            return images.flatten(1)[:, :6].double() + 0.1 * torch.arange(6)

    monkeypatch.setattr(identity_net, "load_identity_net", lambda name, device="cpu": FakeNet())
    g = torch.Generator().manual_seed(3)
    n = 40
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    found = torch.ones(n, dtype=torch.bool)
    found[2] = False
    marks = torch.full((n, 68, 2), 15.5)  # pixel index 15.5 of a 32² render is 3.5 on the stored 8² images
    samples = Samples({"aus": AUS}, torch.arange(n), torch.zeros(n, 4), torch.zeros(n, K), torch.zeros(n, 3),
                      marks, found, images)
    values = identity_kept(resolution=32, components=3).values(samples)
    assert values.shape == (n, 3) and np.isnan(values[2]).all() and np.isfinite(np.delete(values, 2, 0)).all()
    kept = np.delete(values, 2, 0)
    assert np.allclose(kept.mean(0), 0, atol=1e-9)
    assert (np.diff(kept.var(0)) <= 1e-12).all()  # leading components first
    assert np.allclose(seen["landmarks"][0], 3.5)


def test_a_local_measure_gets_each_au_and_keys_its_own_cache(tiny_stylegan2, tmp_path, monkeypatch):
    from stylerig_au.edit import learn as learn_module

    G = tiny_stylegan2
    measure, _, _ = _slot_readout_measure(G)
    seen = []

    class FakeLocal(learn_module.LocalMeasure):
        def __init__(self) -> None:  # no detector, no rendering: the synthetic read-out at half strength
            pass

        def __call__(self, ws, au=None):
            seen.append(au)
            return 0.5 * measure(ws)

    probes = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(3)))[:, None].repeat(1, G.num_ws, 1)
    cache = tmp_path / "cache.json"
    plain, plain_results = learn_directions(G, _samples(G.w_dim), measure, probe_ws=probes, cache=cache, progress=False)
    local, local_results = learn_directions(G, _samples(G.w_dim), FakeLocal(), probe_ws=probes, cache=cache, progress=False)
    assert seen[0] is None and set(seen[1:]) == set(AUS)  # the unedited probes once, then every edit with its AU
    assert local.meta["calibrated_local"] and not plain.meta["calibrated_local"]
    assert "face region" in local.method and "face region" not in plain.method
    # measured on its own (weaker) renders, not read from the global run's cache: larger steps for +2
    for p, q in zip(plain_results, local_results):
        assert q.achieved_before_calibration == pytest.approx(p.achieved_before_calibration / 2, rel=0.05)
        assert q.scale > p.scale * 1.5 or q.step_capped


def test_local_measure_reads_edits_of_its_probes_in_their_regions(tiny_stylegan2, monkeypatch):
    from stylerig_au.edit import learn as learn_module
    from stylerig_au.edit import local as local_module
    from stylerig_au.edit.local import FaceMarks
    from tests.test_local_edit import mean_face

    G = tiny_stylegan2
    probes = torch.zeros(2, G.num_ws, G.w_dim)
    reads = []

    def read(images):
        reads.append(images.shape)
        return np.full((len(images), K), 2.5, np.float32)

    m = learn_module.LocalMeasure(G, read, probes, K)
    found = iter([FaceMarks((0, 0, G.resolution, G.resolution), mean_face(G.resolution)), None])  # the second: no face
    monkeypatch.setattr("stylerig_au.edit.local.find_face", lambda image: next(found))
    masks = []

    def fake_render_local(G_, base, edit, mask, from_resolution=16):
        masks.append(mask)
        return torch.zeros(1, 3, G.resolution, G.resolution)

    monkeypatch.setattr(local_module, "render_local", fake_render_local)
    out = m(probes + 1.0, au=12)
    assert out.shape == (2, K) and (out[0] == 2.5).all() and np.isnan(out[1]).all()  # no face: NaN row
    assert len(masks) == 1 and masks[0].shape[-2:] == (local_module.MASK_SIDE, local_module.MASK_SIDE)
    assert masks[0].max() == 1.0 and masks[0].min() == 0.0
    m(probes + 2.0, au=1)  # the landmarks were found once
    base = m(probes)  # no AU: the latents rendered as they are, one read per latent
    assert base.shape == (2, K) and reads[-1] == (1, 3, G.resolution, G.resolution)
    with pytest.raises(StylerigError, match="its own probe latents"):
        m(torch.zeros(3, G.num_ws, G.w_dim), au=12)


def test_local_measures_read_with_openface_or_the_student(tiny_stylegan2, monkeypatch):
    from stylerig_au.edit import learn as learn_module

    G = tiny_stylegan2
    probes = torch.zeros(1, G.num_ws, G.w_dim)
    detector = type("D", (), {"aus": tuple(AUS)})()
    monkeypatch.setattr(learn_module, "label_images", lambda images, det: {"aus": np.ones((len(images), K), np.float32)})
    of = learn_module.local_openface_measure(G, detector, probes)
    assert of.num_aus == K and (of(probes) == 1).all()

    class Student(torch.nn.Module):
        aus = (1, 2, 4)

        def forward(self, x):
            assert x.shape[-1] == 256  # read as the mapper's training reads: 256² renders
            return torch.full((len(x), 3), 0.5)

    st = learn_module.local_student_measure(G, Student(), probes)
    assert st.num_aus == 3 and (st(probes) == 0.5).all()


def test_attribute_values_read_each_found_sample_with_the_judge() -> None:
    """Age and gender log-odds per sample from the stored 256² images, with boxes from the stored landmarks."""
    from stylerig_au.attributes import Attributes
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.edit.learn import attribute_values, attributes_kept
    from stylerig_au.imageio import load_image
    from tests.helpers import require_asset
    from tests.test_attributes import dev_photos

    require_asset("dlib-landmarks-5")
    require_asset("dlib-landmarks-68")
    photo = load_image(dev_photos()[0])  # 1024² aligned: stands for a generator render at resolution 1024
    marks = landmarks_68(photo)
    small = torch.nn.functional.interpolate(torch.from_numpy(photo).permute(2, 0, 1)[None].float(), size=256, mode="area")
    n = 3
    meta = {"generator": "g", "aus": AUS}
    found = torch.tensor([True, False, True])
    samples = Samples(meta, torch.arange(n), torch.zeros(n, 8), torch.zeros(n, K), torch.zeros(n, 3),
                      torch.from_numpy(np.stack([marks] * n)).float(), found, small.round().to(torch.uint8).repeat(n, 1, 1, 1))
    calls = []

    class FakeJudge:
        def judge_chips(self, age_chips, gender_chips):
            calls.append((len(age_chips), age_chips[0].shape, gender_chips[0].shape))
            return Attributes(age=np.array([30.0, 41.0]), male_prob=np.array([0.5, 1.0]))

    values = attribute_values(samples, 1024, FakeJudge())
    assert calls == [(2, (64, 64, 3), (32, 32, 3))]  # one batch of the two samples with a face
    assert values.shape == (3, 2) and np.isnan(values[1]).all()
    assert values[0].tolist() == [30.0, 0.0] and values[2, 0] == 41.0 and values[2, 1] == pytest.approx(8.0)  # log-odds clipped
    kept = attributes_kept(1024, FakeJudge())
    assert kept.values(samples).shape == (3, 2) and "age and gender" in kept.description
