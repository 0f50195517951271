"""Learning linear AU directions from AU-labelled generator samples (behind ``stylerig-au learn-directions``).

Three steps, each a plain function:

1. :func:`regress`: one ridge regression per AU (and per head-pose angle) of the OpenFace label on w,
   with the ridge strength chosen by cross-validation; the cross-validated R² says how well each AU
   can be read out of W (an AU with R² near 0 is one this generator does not vary linearly).
2. :func:`conditional_directions`: for each AU the *minimum-norm* move in W that changes that AU's
   linear read-out by one unit while keeping every other AU's and the head pose's read-outs fixed,
   i.e. column k of the pseudo-inverse of the stacked read-out rows. Its direction is the AU's
   direction orthogonalised against the others (as :func:`stylerig_au.edit.directions.conditional`),
   its length the W distance per AU unit (the scale).
3. :func:`learn_directions`: render test edits restricted to groups of W+ slots (:func:`slot_groups`),
   measure them with the AU estimator, keep the slot groups that carry the AU (so an edit leaves
   the rest of the face alone), and rescale so that a +2 edit measures about +2.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylerig_au.edit.directions import LinearDirections
from stylerig_au.errors import StylerigError
from stylerig_au.fileio import read_json
from stylerig_au.imageio import batch_to_uint8
from stylerig_au.samples import Samples, label_images

POSE_NAMES = ("pitch", "yaw", "roll")
STEP = 2.0  # AU units of the measured test edits
MIN_R2 = 0.05  # below this an AU is "not linearly expressed" (kept, flagged in the file's meta)
MAX_STEP_SIGMAS = 6.0  # a +STEP edit never moves w further than this many sample stds along the direction
COVERAGE = 0.8  # slot groups kept: the strongest ones that together give this share of the measured effect
CALIBRATION_CLAMP = (0.5, 3.0)


@dataclass
class Readouts:
    """Linear read-outs of AUs and head pose from w (float64 numpy).

    Attributes:
        aus: AU numbers, the row order of ``au_rows``.
        au_rows: [K, w_dim] regression weights (AU units per W unit); ``au_bias``: [K].
        pose_rows: [3, w_dim] weights of pitch, yaw, roll (radians per W unit).
        cv_r2: [K] cross-validated R² per AU; ``pose_cv_r2``: [3].
        alphas: [K + 3 + M] the chosen ridge strengths; ``label_std``: [K] std of each AU's labels.
        w_mean: [w_dim] mean of the training w.
        keep_rows: [M, w_dim] read-outs of further quantities that the directions keep fixed
            (M may be 0); ``keep_cv_r2``: [M]; ``keep_owners``: as :attr:`KeptQuantities.owners`.
    """

    aus: list[int]
    au_rows: np.ndarray
    au_bias: np.ndarray
    pose_rows: np.ndarray
    cv_r2: np.ndarray
    pose_cv_r2: np.ndarray
    alphas: np.ndarray
    label_std: np.ndarray
    w_mean: np.ndarray
    keep_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    keep_cv_r2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    keep_owners: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class LabelTarget:
    """What the AU read-outs are fitted to: ``labels(samples)`` -> [N, K] per sample (None: the OpenFace intensities)."""

    name: str
    description: str
    labels: Callable[[Samples], np.ndarray | None]


@dataclass(frozen=True)
class KeptQuantities:
    """Per-sample quantities that the directions keep fixed: ``values(samples)`` -> [N, M].

    ``owners``: for each of the M columns, the AU whose own edit leaves that column free (e.g. the
    texture term of AU17 may change when AU17 is edited, not when AU12 is), or None for a column kept
    by every direction; None for all columns when not given.
    """

    name: str
    description: str
    values: Callable[[Samples], np.ndarray]
    owners: tuple[int | None, ...] | None = None


def _openface_for(samples: Samples, detector=None):
    """The OpenFace estimator (``detector``, else the registry's), checked to read the samples' AU order."""
    from stylerig_au.au.detect import make_detector

    detector = detector if detector is not None else make_detector("openface")
    if [int(a) for a in samples.meta["aus"]] != list(detector.aus):
        raise StylerigError("the samples' AU order is not the OpenFace estimator's")
    return detector


def _per_face(samples: Samples, read: Callable[[np.ndarray], torch.Tensor], batch: int, what: str) -> np.ndarray:
    """``read(idx)`` -> [len(idx), D] over the samples with a face, ``batch`` at a time without autograd,
    as float64 [N, D] with NaN rows where no face was found. Needs the stored images (``what`` names the use)."""
    if samples.images is None:
        raise StylerigError(f"{what} need the samples' images (load_samples(..., with_images=True))")
    found = np.flatnonzero(samples.face_found.numpy())
    parts = []
    with torch.no_grad():
        for start in range(0, len(found), batch):
            parts.append(read(found[start:start + batch]).double().cpu().numpy())
    width = parts[0].shape[1] if parts else 0
    out = np.full((len(samples.w), width), np.nan)
    if parts:
        out[found] = np.concatenate(parts)
    return out


def geometry_labels(samples: Samples, detector=None) -> np.ndarray:
    """The shape term of OpenFace's reading of every sample, float64 [N, K] (NaN where no face was found).

    Computed from the stored landmarks alone (:meth:`stylerig_au.au.openface.OpenFaceAU.geometry_part`):
    texture (a beard, glasses, skin) cannot change it, only moved landmarks can.
    """
    detector = _openface_for(samples, detector)
    out = np.full((len(samples.w), len(detector.aus)), np.nan)
    found = samples.face_found.numpy().astype(bool)
    if found.any():
        with torch.no_grad():
            out[found] = detector.geometry_part(samples.landmarks[found].double().cpu()).numpy()
    return out


def stored_landmarks(samples: Samples, idx: np.ndarray, resolution: int) -> torch.Tensor:
    """Landmarks float64 [len(idx), 68, 2] of samples ``idx`` in pixel indices of the stored images
    (the dataset keeps them in pixels of the generator's ``resolution``)."""
    scale = samples.images.shape[-1] / resolution
    return (samples.landmarks[idx].double() + 0.5) * scale - 0.5


def texture_terms(samples: Samples, resolution: int, detector=None, batch: int = 64) -> np.ndarray:
    """The texture (FHOG) term of OpenFace's reading of every sample, float64 [N, K] (NaN where no face).

    Read from the stored images (``samples.images``, needed) with the stored landmarks, which are in
    pixels of the generator's ``resolution`` (:meth:`stylerig_au.au.openface.OpenFaceAU.texture_part`).
    """
    detector = _openface_for(samples, detector)
    return _per_face(samples, lambda idx: detector.texture_part(samples.images[idx], stored_landmarks(samples, idx, resolution)),
                     batch, "the texture terms")


def texture_kept(resolution: int, aus: tuple[int, ...], detector=None, own_free: bool = False) -> KeptQuantities:
    """Keep the texture term of OpenFace's reading of ``aus`` fixed: what a beard, glasses or a skin
    change moves. ``own_free``: an AU's own texture term may change when that AU is edited (only the
    other AUs' are kept), so the edit can still show the wrinkles and folds of its own action."""
    def values(samples: Samples) -> np.ndarray:
        order = [int(a) for a in samples.meta["aus"]]
        return texture_terms(samples, resolution, detector)[:, [order.index(a) for a in aus]]

    suffix = "-others" if own_free else ""
    return KeptQuantities(f"texture-{'-'.join(map(str, aus))}{suffix}",
                          f"the texture (FHOG) term of OpenFace's reading of AU{'/'.join(map(str, aus))}"
                          + (", each AU's own left free for its edit" if own_free else ""), values,
                          owners=tuple(aus) if own_free else None)


def identity_embeddings(samples: Samples, resolution: int, net: str = "sface", batch: int = 32) -> np.ndarray:
    """Face-recognition features of every sample, float64 [N, D] (NaN rows where no face was found).

    Read from the stored images (``samples.images``, needed) on the crop the network's alignment takes
    from the stored landmarks (pixels of the generator's ``resolution``). ``net``: a key of
    :data:`stylerig_au.identity_net.IDENTITY_NETS`; use one that is not the evaluation's judge.
    """
    from stylerig_au.identity_net import load_identity_net

    if samples.images is None:  # before the network loads
        raise StylerigError("the identity features need the samples' images (load_samples(..., with_images=True))")
    ident = load_identity_net(net)

    def read(idx: np.ndarray) -> torch.Tensor:
        marks = stored_landmarks(samples, idx, resolution).numpy()
        affines = torch.as_tensor(np.stack([ident.crop_affine(m) for m in marks]), dtype=torch.float32)
        return ident.embed(samples.images[idx].float() / 127.5 - 1, affines)

    return _per_face(samples, read, batch, "the identity features")


def identity_kept(resolution: int, components: int = 16, net: str = "sface") -> KeptQuantities:
    """Keep the ``components`` leading principal components of the samples' (unit-length) face-recognition
    features fixed: the directions then move the AU without moving what ``net`` sees as the person."""
    def values(samples: Samples) -> np.ndarray:
        feats = identity_embeddings(samples, resolution, net)
        found = np.isfinite(feats).all(1)
        unit = feats[found] / np.linalg.norm(feats[found], axis=1, keepdims=True)
        centred = unit - unit.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = np.full((len(feats), components), np.nan)
        out[found] = centred @ vt[:components].T
        return out

    return KeptQuantities(f"identity-{net}-{components}", f"the {components} leading principal components of {net}'s face features",
                          values)


def attribute_values(samples: Samples, resolution: int, judge=None) -> np.ndarray:
    """Judged age (years) and gender logit (log-odds of P(male), clipped to ±8) of every sample,
    float64 [N, 2] (NaN rows where no face was found), read from the stored images with the box of the
    stored landmarks (:mod:`stylerig_au.attributes`)."""
    from stylerig_au.attributes import face_chips, load_judge

    judge = judge if judge is not None else load_judge()
    images = samples.images

    def read(idx: np.ndarray) -> torch.Tensor:
        marks = stored_landmarks(samples, idx, resolution).numpy()
        chips = []
        for i, lm in zip(idx, marks):
            lo, hi = lm.min(0), lm.max(0)
            box = tuple(int(round(v)) for v in (lo[0], lo[1], hi[0], hi[1]))
            chips.append(face_chips(images[i].permute(1, 2, 0).numpy(), box=box))
        attrs = judge.judge_chips([c.age for c in chips], [c.gender for c in chips])
        p = np.clip(attrs.male_prob, 1 / (1 + np.exp(8)), 1 / (1 + np.exp(-8)))
        return torch.from_numpy(np.stack([attrs.age, np.log(p / (1 - p))], 1))

    return _per_face(samples, read, 64, "the judged attributes")


def attributes_kept(resolution: int, judge=None) -> KeptQuantities:
    """Keep the judged age and gender (:func:`attribute_values`) fixed: InterFaceGAN's conditional
    manipulation, with the age/gender networks of :mod:`stylerig_au.attributes`."""
    return KeptQuantities("attributes-age-gender", "the judged age and gender (Cydral networks)",
                          lambda samples: attribute_values(samples, resolution, judge))


OPENFACE_TARGET = LabelTarget("openface", "the OpenFace intensities", lambda samples: None)
GEOMETRY_TARGET = LabelTarget("geometry", "the shape term of OpenFace's reading (landmarks only)", geometry_labels)
TARGETS = {t.name: t for t in (OPENFACE_TARGET, GEOMETRY_TARGET)}


def _ridge(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...], cv) -> tuple[np.ndarray, float, float, float]:
    """Ridge fit of one target: (row [w_dim], bias, chosen alpha, cross-validated R²; 0 for a constant target)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    model = RidgeCV(alphas=alphas).fit(x, y)
    if y.std() < 1e-6:
        return model.coef_, float(model.intercept_), float(model.alpha_), 0.0
    pred = cross_val_predict(RidgeCV(alphas=alphas), x, y, cv=cv)
    return model.coef_, float(model.intercept_), float(model.alpha_), 1.0 - float(((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def regress(samples: Samples, alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4), folds: int = 5,
            labels: np.ndarray | None = None, keeps: np.ndarray | None = None) -> Readouts:
    """Ridge read-outs of every AU and pose angle (and of the ``keeps`` columns) from w.

    Args:
        samples: the dataset; samples without a face are dropped.
        labels: [N, K] targets per sample of ``samples`` (all N, in order) instead of the OpenFace
            intensities (e.g. :func:`geometry_labels`); the AU order stays the samples'.
        keeps: [N, M] further per-sample quantities to read out (e.g. identity embedding components),
            which :func:`conditional_directions` then keeps fixed.
    Raises:
        StylerigError: fewer than 50 labelled samples.
    """
    from sklearn.model_selection import KFold

    valid = samples.face_found.numpy().astype(bool)
    data = samples.valid()
    if len(data) < 50:
        raise StylerigError(f"only {len(data)} labelled samples; learning directions needs at least 50 (use more --samples)")
    x = data.w.double().numpy()
    au_y = data.aus.double().numpy() if labels is None else np.asarray(labels, np.float64)[valid]
    keep_y = np.zeros((len(x), 0)) if keeps is None else np.asarray(keeps, np.float64)[valid]
    targets = np.concatenate([au_y, data.pose.double().numpy(), keep_y], axis=1)
    if not np.isfinite(targets).all():
        raise StylerigError("the labels or kept quantities have NaN values for samples with a face")
    k = au_y.shape[1]
    cv = KFold(folds, shuffle=True, random_state=0)
    fits = [_ridge(x, targets[:, j], alphas, cv) for j in range(targets.shape[1])]
    rows_a = np.stack([f[0] for f in fits])
    r2 = np.array([f[3] for f in fits])
    return Readouts(aus=[int(a) for a in data.meta["aus"]], au_rows=rows_a[:k], au_bias=np.array([f[1] for f in fits[:k]]),
                    pose_rows=rows_a[k:k + 3], cv_r2=r2[:k], pose_cv_r2=r2[k:k + 3],
                    alphas=np.array([f[2] for f in fits]), label_std=au_y.std(0), w_mean=x.mean(0),
                    keep_rows=rows_a[k + 3:], keep_cv_r2=r2[k + 3:])


def conditional_directions(readouts: Readouts, keep_pose: bool = True, keep_aus: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions [K, w_dim] and scales [K] (W units per AU unit) from the read-outs.

    Column k of the pseudo-inverse of the stacked rows (this AU, the other AUs if ``keep_aus``, the
    pose angles if ``keep_pose``, and the rows of ``readouts.keep_rows`` not owned by AU k) moves AU k's read-out by
    one unit and the others by zero, with the smallest possible step in W.
    """
    k = len(readouts.aus)
    owners = readouts.keep_owners or (None,) * len(readouts.keep_rows)
    dirs, scales = np.zeros_like(readouts.au_rows), np.zeros(k)
    for i in range(k):
        others = [readouts.au_rows[j] for j in range(k) if keep_aus and j != i]
        others += list(readouts.pose_rows) if keep_pose else []
        others += [row for row, owner in zip(readouts.keep_rows, owners) if owner != readouts.aus[i]]
        stack = np.stack([readouts.au_rows[i], *others])
        col = np.linalg.pinv(stack)[:, 0]
        norm = np.linalg.norm(col)
        if not np.isfinite(norm) or norm < 1e-12:
            raise StylerigError(f"AU{readouts.aus[i]} cannot be separated from the other read-outs")
        dirs[i], scales[i] = col / norm, norm
    return dirs, scales


def slot_groups(G) -> list[tuple[str, torch.Tensor]]:
    """Groups of used W+ slots by feature resolution: (name, bool mask [num_ws]), coarse to fine.

    4–8 px, 16, 32, 64 px, and everything from 128 px up (colour and texture).
    """
    bins = [("4-8px", 4, 8), ("16px", 16, 16), ("32px", 32, 32), ("64px", 64, 64), ("128px-up", 128, 1 << 30)]
    groups = []
    for name, lo, hi in bins:
        mask = torch.tensor([s.used and lo <= s.resolution <= hi for s in G.slots])
        if mask.any():
            groups.append((name, mask))
    return groups


def measure_aus(G, ws: torch.Tensor, detector, batch_size: int = 1) -> np.ndarray:
    """OpenFace intensities float32 [N, 17] (NaN rows where no face is found) of the renders of ws [N, num_ws, w_dim]."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ws), batch_size):
            img = G.synthesis(ws[start:start + batch_size]).clamp(-1, 1)
            out.append(label_images(batch_to_uint8(img), detector)["aus"])
    return np.concatenate(out)


@dataclass
class AUResult:
    """What was measured for one AU while learning (JSON-friendly)."""

    au: int
    cv_r2: float
    linear_scale: float
    step_capped: bool  # True when the scale was limited (step cap or calibration clamp): +2 then measures less
    group_effects: dict[str, float] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    achieved_before_calibration: float = float("nan")
    scale: float = float("nan")


def nan_mean(x: np.ndarray) -> float:
    """Mean of the finite values of ``x`` (NaN rows are faces OpenFace did not find); NaN when there are none."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def openface_measure(G, detector, batch_size: int = 1) -> Callable[[torch.Tensor], np.ndarray]:
    """``ws -> AU intensities`` by rendering with G and reading with the OpenFace ``detector`` (see :func:`measure_aus`)."""
    return lambda ws: measure_aus(G, ws, detector, batch_size)


class LocalMeasure:
    """``measure(ws, au)``: AU intensities float32 [N, K] of edits of ``probe_ws`` [N, num_ws, w_dim] rendered
    inside AU ``au``'s face region only (:mod:`stylerig_au.edit.local`), so step sizes and gains are
    calibrated for local edits. ``au=None`` renders ``ws`` as it is (e.g. the unedited probes).

    Args:
        G: a generator with ``feature_layers()``.
        read: images float32 [n, 3, R, R] in [-1, 1] -> intensities [n, K] (NaN rows where no face).
        probe_ws: the probe latents; their landmarks are found once (dlib, on the unedited renders), and a
            probe without a face reads NaN.
        num_aus: K.
    """

    def __init__(self, G, read: Callable[[torch.Tensor], np.ndarray], probe_ws: torch.Tensor, num_aus: int,
                 from_resolution: int | None = None) -> None:
        from stylerig_au.edit.local import DEFAULT_FROM_RESOLUTION, feature_layers

        feature_layers(G)  # refuse a generator that cannot blend before any work
        self.G, self.read, self.probe_ws, self.num_aus = G, read, probe_ws, int(num_aus)
        self.from_resolution = from_resolution or DEFAULT_FROM_RESOLUTION
        self._landmarks: np.ndarray | None = None

    def _render(self, ws: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.G.synthesis(ws).clamp(-1, 1)

    def landmarks(self) -> np.ndarray:
        """Landmarks float64 [N, 68, 2] of the unedited probes, continuous pixel coordinates (NaN rows: no face)."""
        from stylerig_au.edit.local import face_landmarks

        if self._landmarks is None:
            marks = np.full((len(self.probe_ws), 68, 2), np.nan)
            for k, w in enumerate(self.probe_ws):
                found = face_landmarks(batch_to_uint8(self._render(w[None]))[0])
                if found is not None:
                    marks[k] = found
            self._landmarks = marks
        return self._landmarks

    def __call__(self, ws: torch.Tensor, au: int | None = None) -> np.ndarray:
        if au is None:
            return np.concatenate([self.read(self._render(w[None])) for w in ws])
        from stylerig_au.edit.local import MASK_SIDE, region_mask, render_local

        if ws.shape != self.probe_ws.shape:
            raise StylerigError("a local measure reads edits of its own probe latents only")
        out = np.full((len(ws), self.num_aus), np.nan, np.float32)
        for k, marks in enumerate(self.landmarks()):
            if not np.isfinite(marks).all():
                continue
            mask = torch.from_numpy(region_mask(marks, [au], MASK_SIDE, self.G.resolution))[None, None]
            with torch.no_grad():
                img = render_local(self.G, self.probe_ws[k:k + 1], ws[k:k + 1], mask.to(ws.device),
                                   from_resolution=self.from_resolution).clamp(-1, 1)
            out[k] = self.read(img)[0]
        return out


def local_openface_measure(G, detector, probe_ws: torch.Tensor) -> LocalMeasure:
    """A :class:`LocalMeasure` read by the OpenFace ``detector`` (17 AUs, its order)."""
    return LocalMeasure(G, lambda img: label_images(batch_to_uint8(img), detector)["aus"], probe_ws, len(detector.aus))


def local_student_measure(G, student, probe_ws: torch.Tensor, size: int = 256) -> LocalMeasure:
    """A :class:`LocalMeasure` read by the student detector (its AU order), as :func:`student_measure` reads."""
    from stylerig_au.edit.mapper_train import to_side

    def read(img: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return student(to_side(img, size)).float().cpu().numpy()

    return LocalMeasure(G, read, probe_ws, len(student.aus))


def measure_edit(measure: Callable, ws: torch.Tensor, au: int) -> np.ndarray:
    """``measure(ws, au)`` for a measure that renders per AU (:class:`LocalMeasure`), else ``measure(ws)``."""
    return measure(ws, au) if isinstance(measure, LocalMeasure) else measure(ws)


def student_measure(G, student, batch_size: int = 1, size: int = 256) -> Callable[[torch.Tensor], np.ndarray]:
    """``ws -> AU intensities`` float32 [N, 17] (student AU order) by rendering with G and reading with the student.

    The renders are area-downsampled to ``size``² and read raw (no clipping, no re-alignment), as the
    mapper's training reads them (:mod:`stylerig_au.edit.mapper_train`); never NaN.
    """
    from stylerig_au.edit.mapper_train import to_side

    def measure(ws: torch.Tensor) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(ws), batch_size):
                img = to_side(G.synthesis(ws[start:start + batch_size]).clamp(-1, 1), size)
                out.append(student(img).float().cpu().numpy())
        return np.concatenate(out)

    return measure


def learn_directions(G, samples: Samples, measure: Callable[[torch.Tensor], np.ndarray], *, probe_ws: torch.Tensor, keep_pose: bool = True,
                     keep_aus: bool = True, target: LabelTarget | None = None, keep: KeptQuantities | None = None,
                     max_step_sigmas: float = MAX_STEP_SIGMAS, cache: str | os.PathLike | None = None, progress: bool = True,
                     log: Callable[[str], None] | None = None) -> tuple[LinearDirections, list[AUResult]]:
    """Learn masked, calibrated, conditional linear directions for every AU of the samples.

    Args:
        G: the generator the samples came from.
        samples: :func:`stylerig_au.samples.load_samples` output.
        measure: ws [P, num_ws, w_dim] -> AU intensities [P, K] in the samples' AU order, NaN rows for
            failures (:func:`openface_measure` renders and reads with OpenFace; a
            :class:`LocalMeasure` of ``probe_ws`` calibrates for edits kept to their AUs' region).
        probe_ws: W+ latents [P, num_ws, w_dim] the test edits are measured on (not training samples).
        target: what the read-outs predict (default: the OpenFace intensities, :data:`OPENFACE_TARGET`).
        keep: further per-sample quantities whose read-outs every direction keeps fixed (e.g. an
            identity embedding's principal components), or None.
        max_step_sigmas: a +2 edit never moves w further than this many sample standard deviations along
            its direction (directions that keep more fixed are longer and may need more room).
        cache: a JSON file of per-AU measurements; a rerun skips the AUs already in it (resume).
    Returns:
        (directions, per-AU results).
    """
    from tqdm import tqdm

    if samples.meta.get("generator") != G.name:
        raise StylerigError(f"the samples were made with {samples.meta.get('generator')!r}, not {G.name!r}")
    target = target or OPENFACE_TARGET
    readouts = regress(samples, labels=target.labels(samples), keeps=keep.values(samples) if keep else None)
    readouts.keep_owners = keep.owners if keep else None
    dirs, scales = conditional_directions(readouts, keep_pose=keep_pose, keep_aus=keep_aus)
    valid_w = samples.valid().w.double().numpy()
    groups = slot_groups(G)
    done: dict[str, dict] = {}
    cache_path = Path(cache) if cache is not None else None
    if cache_path is not None and cache_path.is_file():
        done = read_json(cache_path, "directions cache")
        done = done if isinstance(done, dict) else {}
    local = isinstance(measure, LocalMeasure)
    key = (f"{G.name}|pose={keep_pose}|aus={keep_aus}|target={target.name}|keep={keep.name if keep else None}"
           f"{'' if max_step_sigmas == MAX_STEP_SIGMAS else f'|cap={max_step_sigmas:g}'}"
           f"{'|local' if local else ''}"
           f"|n={len(samples.valid())}|probes={len(probe_ws)}"
           f"|groups={','.join(name for name, _ in groups)}")
    done = done.get(key, {}) if isinstance(done.get(key), dict) else {}
    base = measure(probe_ws) if len(done) < len(readouts.aus) else None
    results: list[AUResult] = []
    bar = tqdm(readouts.aus, desc="measure AU edits", unit="AU", disable=not progress)
    for i, au in enumerate(bar):
        if str(au) in done:
            results.append(AUResult(**done[str(au)]))
            continue
        d = torch.from_numpy(dirs[i]).float()
        sigma = float((valid_w @ dirs[i]).std())
        step = STEP * scales[i]
        capped = step > max_step_sigmas * sigma
        step = min(step, max_step_sigmas * sigma)
        res = AUResult(au=au, cv_r2=float(readouts.cv_r2[i]), linear_scale=float(scales[i]), step_capped=bool(capped))
        col = readouts.aus.index(au)
        for name, mask in groups:
            moved = probe_ws + step * mask[None, :, None].float() * d[None, None, :]
            res.group_effects[name] = nan_mean(measure_edit(measure, moved, au)[:, col] - base[:, col])
        ranked = sorted(groups, key=lambda g: -res.group_effects[g[0]])
        total = sum(max(0.0, e) for e in res.group_effects.values())
        kept, acc = [], 0.0
        for name, _ in ranked:
            if res.group_effects[name] <= 0 or (kept and acc >= COVERAGE * total):
                break
            kept.append(name)
            acc += res.group_effects[name]
        res.groups = kept or [name for name, _ in groups]
        mask = torch.zeros(G.num_ws, dtype=torch.bool)
        for name, m in groups:
            if name in res.groups:
                mask |= m
        moved = probe_ws + step * mask[None, :, None].float() * d[None, None, :]
        achieved = nan_mean(measure_edit(measure, moved, au)[:, col] - base[:, col])
        res.achieved_before_calibration = achieved
        # W units per AU unit along the masked direction, measured; clamped against noisy measurements
        per_unit = step / achieved if achieved > 1e-3 else scales[i] * CALIBRATION_CLAMP[1]
        wanted = per_unit
        per_unit = float(np.clip(per_unit, scales[i] * CALIBRATION_CLAMP[0], scales[i] * CALIBRATION_CLAMP[1]))
        # keep +STEP inside the sampled range: a weak AU then moves less than asked instead of breaking the face
        res.scale = min(per_unit, max_step_sigmas * sigma / STEP)
        res.step_capped = bool(capped or wanted > res.scale * 1.001)
        results.append(res)
        done[str(au)] = res.__dict__
        if cache_path is not None:
            from stylerig_au.fileio import atomic_write_text

            atomic_write_text(cache_path, json.dumps({key: done}, indent=1))
        if log:
            log(f"AU{au:02d}: R2 {res.cv_r2:.2f}, groups {'+'.join(res.groups)}, +{STEP:g} edit measured "
                f"{achieved:+.2f} before calibration, scale {res.scale:.2f} W/unit{' (step capped)' if capped else ''}")
    masks = {}
    for res in results:
        m = torch.zeros(G.num_ws)
        for name, g in groups:
            if name in res.groups:
                m[g] = 1.0
        masks[res.au] = m
    meta = {
        "samples": len(samples.valid()), "probes": int(len(probe_ws)), "keep_pose": keep_pose, "keep_aus": keep_aus,
        "target": target.name, "kept": keep.name if keep else None, "max_step_sigmas": max_step_sigmas,
        "calibrated_local": local,
        "kept_cv_r2": [float(r) for r in readouts.keep_cv_r2],
        "cv_r2": {int(a): float(r) for a, r in zip(readouts.aus, readouts.cv_r2)},
        "pose_cv_r2": dict(zip(POSE_NAMES, map(float, readouts.pose_cv_r2))),
        "expressed": [r.au for r in results if r.cv_r2 >= MIN_R2 and math.isfinite(r.achieved_before_calibration)
                      and r.achieved_before_calibration > 0.2],
        "per_au": {r.au: {k: v for k, v in r.__dict__.items() if k != "au"} for r in results},
        "samples_meta": {k: samples.meta.get(k) for k in ("psi", "seed_start", "detector")},
    }
    directions = LinearDirections({a: torch.from_numpy(dirs[i]).float() for i, a in enumerate(readouts.aus)},
                                  slots=G.slots, generator=G.name, masks=masks,
                                  scales={r.au: r.scale for r in results},
                                  method=f"ridge read-outs of {target.description}, pseudo-inverse conditioning (pose={keep_pose}, "
                                         f"other AUs={keep_aus}, kept: {keep.description if keep else 'nothing else'}), "
                                         "slot groups by measured effect, calibrated with OpenFace"
                                         + (" on edits kept to their AUs' face region" if local else ""),
                                  meta=meta)
    return directions, results
