"""Measure AU editing: for each face, edit and method, what the edit asked for and what it did.

Behind ``stylerig-au evaluate``. For every (face, edit, method) the unedited and the edited aligned
face are rendered from the same latent and both are read by an AU/pose/landmark *measure*
(OpenFace 2.2 on dlib landmarks by default, :func:`stylerig_au.samples.label_images`). One row holds:

``aus``
    per AU of the edit: ``target_change`` (a relative edit: its value; an absolute target: the target
    minus the measured unedited intensity), ``achieved_change`` (edited minus unedited intensity),
    ``error`` (achieved minus target change), ``before``, ``after`` and, for targets, ``target``.
``drift``
    off-target drift: mean |change| over the measured AUs that are not in the edit (0–5 units).
``identity_distance``
    dlib face-descriptor distance between the unedited and the edited face, both area-downsampled
    to 512² (same person below 0.6): the judge of identity (no training loss uses dlib by default).
``identity_sface``
    SFace's cosine distance between the same two faces (:func:`stylerig_au.metrics.sface_distance`,
    same person below about 0.6): a second opinion, from the network the training losses use.
``background_lpips``, ``background_rmse``
    LPIPS-VGG (at 256²) and RMSE (on [0, 1] values) between the unedited and the edited render
    outside the face: the face region (:func:`stylerig_au.align.face_mask` of the unedited render's
    landmarks) is blacked out in both images for LPIPS and weighted out of the RMSE.
``pose_change_deg``
    change of head pitch, yaw, roll in degrees; ``pose_change_max_deg``: the largest of the three.
``seconds``
    wall time of applying the edit and rendering the edited face (batch 1): the cost of editing an
    already-inverted latent (measuring is not included).

A face whose unedited render has no detectable face gets one row per edit and method with
``status = 'no_face'`` (kept out of the means); an edited render without a face gives
``status = 'edited_no_face'`` (AU numbers NaN, identity measured with the unedited face's box).

Rows are appended to ``rows.jsonl`` as they are made, so an interrupted run resumes: a rerun into
the same folder skips the rows already there. ``run.json`` records the settings, and a rerun with
other settings (generator, directions, psi, inversion steps) into the same folder is refused.

Methods
-------
``linear``
    the learned linear AU directions (conditional on the other AUs and head pose, restricted to the
    W+ slots that carry the AU, scale calibrated by measuring): :func:`load_default_directions`.
``naive``
    the baseline: one global W direction per AU, with no conditioning (it moves whatever the AU is
    correlated with) and no layer restriction (every used W+ slot), scale = the linear read-out's
    W units per AU unit, uncalibrated. See :func:`naive_directions` for how it is built.
``mapper``
    the AU-conditioned mapper M(w+, ΔAU) -> Δw+ (:func:`~stylerig_au.edit.mapper.load_default_mapper`),
    which starts from the linear directions and learns a face-dependent correction.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylerig_au.edit.directions import LinearDirections
from stylerig_au.edit.spec import Edit
from stylerig_au.errors import StylerigError

METHODS = ("linear", "naive", "mapper")
HELD_OUT_SEED_START = 2_000_000  # generated faces: seeds never used for learning directions
IDENTITY_SIZE = 512
LPIPS_SIZE = 256
THUMB_SIZE = 256
GRID_FACES = 6
RUN_FORMAT = "stylerig-au/evaluation"
RUN_FORMAT_VERSION = 1

MeasureFn = Callable[[np.ndarray], dict[str, np.ndarray]]
"""uint8 images [k, R, R, 3] -> ``aus`` float32 [k, K] (0–5, columns in ``Instruments.aus`` order),
``pose`` float32 [k, 3] (pitch, yaw, roll in radians), ``landmarks`` float32 [k, 68, 2] (pixels),
``face_found`` bool [k]; NaN rows where no face was found (the output of :func:`stylerig_au.samples.label_images`)."""

PairFn = Callable[[np.ndarray, np.ndarray], float]
"""Two uint8 images [R, R, 3] (unedited, edited) -> one distance (NaN when it cannot be measured)."""


@dataclass
class Instruments:
    """What measures the faces; inject fakes in tests.

    Attributes:
        measure: see :data:`MeasureFn`; ``aus``: the AU numbers of its ``aus`` columns.
        identity: see :data:`PairFn` (default: dlib descriptor distance on 512² downsamples).
        identity_sface: see :data:`PairFn` (default: SFace cosine distance on 512² downsamples); None: not measured.
        lpips: see :data:`PairFn` (default: LPIPS-VGG16 at 256²); called on background-only images.
        names: plain descriptions of the instruments (written into the report).
    """

    measure: MeasureFn
    aus: tuple[int, ...]
    identity: PairFn
    lpips: PairFn
    names: dict[str, str] = field(default_factory=dict)
    identity_sface: PairFn | None = None


def default_instruments(device: str | torch.device = "cpu") -> Instruments:
    """OpenFace 2.2 AUs + head pose on dlib landmarks, dlib and SFace identity distances, LPIPS-VGG16.

    Raises:
        StylerigError / AssetError: the OpenFace models are missing (their licence must be accepted).
    """
    from stylerig_au.au.detect import make_detector
    from stylerig_au.samples import label_images

    detector = make_detector("openface").to(device)

    from stylerig_au.metrics import identity_distance, sface_distance

    def identity_by(distance: Callable[..., np.ndarray]) -> PairFn:
        def identity(a: np.ndarray, b: np.ndarray) -> float:
            try:
                return float(distance(_downsample(a, IDENTITY_SIZE), _downsample(b, IDENTITY_SIZE), shared_frame=True)[0])
            except StylerigError:  # no face in either image
                return math.nan

        return identity

    def lpips(a: np.ndarray, b: np.ndarray) -> float:
        from stylerig_au.metrics import lpips as lpips_distance

        return float(lpips_distance(a, b, size=LPIPS_SIZE, device=device)[0])

    return Instruments(measure=lambda images: label_images(images, detector), aus=tuple(int(a) for a in detector.aus),
                       identity=identity_by(identity_distance), lpips=lpips,
                       identity_sface=identity_by(lambda a, b, **kw: sface_distance(a, b, device=device, **kw)),
                       names={"aus": "OpenFace 2.2 static AU SVRs on dlib 68 landmarks (stylerig_au)",
                              "pose": "OpenFace PDM fit to the dlib landmarks",
                              "identity": f"dlib ResNet face descriptor distance at {IDENTITY_SIZE}px",
                              "identity_sface": f"SFace cosine distance at {IDENTITY_SIZE}px (ArcFace 112² crop)",
                              "lpips": f"LPIPS-VGG16 v0.1 at {LPIPS_SIZE}px, face blacked out"})


def _downsample(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [R, R, 3] -> uint8 [size, size, 3] by area averaging (unchanged when R <= size)."""
    import torch.nn.functional as F

    if image.shape[0] <= size:
        return image
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(size, size), mode="area")
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


# ----------------------------------------------------------------------------- edits and methods


@dataclass(frozen=True)
class NamedEdit:
    """An edit and how the user wrote it (``label``, e.g. ``'12=+2'``)."""

    label: str
    edit: Edit

    @property
    def key(self) -> str:
        """Canonical text of the edit (``repr``), the resume key."""
        return repr(self.edit)

    @property
    def strength(self) -> float:
        """L2 norm of the relative changes (AU units); absolute targets count as NaN."""
        if not self.edit.is_relative:
            return math.nan
        return float(math.sqrt(sum(v * v for v in self.edit.deltas.values())))


def parse_edits(text: str) -> list[NamedEdit]:
    """``'12=+2;4=+2;smile=1'`` -> one :class:`NamedEdit` per ``;``-separated item; each item takes the
    ``--au`` syntax of :mod:`stylerig_au.edit.syntax` (``12=+2,6=+1`` edits two AUs at once; ``4=@3`` is
    an absolute target).

    Raises:
        StylerigError: no edits, or an item that cannot be read (unknown AU, bad syntax), or a repeat.
    """
    from stylerig_au.edit.syntax import parse_au_option

    items = [t.strip() for t in text.split(";") if t.strip()]
    if not items:
        raise StylerigError("--edits is empty; give edits separated by ';', e.g. --edits '12=+2;4=+2;smile=1'")
    out: list[NamedEdit] = []
    for item in items:
        try:
            edit = parse_au_option(item)
        except StylerigError as err:
            raise StylerigError(f"--edits item '{item}': {err}") from None
        if not len(edit):
            raise StylerigError(f"--edits item '{item}' changes nothing")
        named = NamedEdit(item, edit)
        if any(n.key == named.key for n in out):
            raise StylerigError(f"--edits lists the same edit twice ('{item}')")
        out.append(named)
    return out


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``'linear,naive'`` -> ['linear', 'naive'].

    Raises:
        StylerigError: empty, or an unknown method.
    """
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not items:
        raise StylerigError(f"--methods is empty; choose from {', '.join(METHODS)}")
    for m in items:
        if m not in METHODS:
            raise StylerigError(f"unknown method '{m}'; choose from: {', '.join(METHODS)}")
    return list(dict.fromkeys(items))


def _is_mapper(source) -> bool:
    from stylerig_au.edit.mapper import AUMapper

    return isinstance(source, AUMapper)


def _describe(source) -> dict:
    """What a method's rows were made with (rows of another version are not reused)."""
    if _is_mapper(source):
        command = (getattr(source, "meta", None) or {}).get("command")
        return {"method": "AU-conditioned mapper" + (f" made by `{command}`" if command else ""),
                "created": getattr(source, "created", None)}
    return {"method": source.method, "created": source.created}


def make_editor(G, source, local: bool = False, motion: bool = False):
    """An :class:`~stylerig_au.edit.editor.Editor` for one method: linear directions or an AU mapper;
    ``local``: its edits are rendered inside their AUs' face region only; ``motion``: shown as the
    unedited face moved by the edit's landmark motion (:mod:`stylerig_au.edit.motion`)."""
    from stylerig_au.edit.editor import Editor

    if _is_mapper(source):
        return Editor(G, None, method="mapper", mapper=source, local=local, motion=motion)
    return Editor(G, source, local=local, motion=motion)


def naive_directions(linear: LinearDirections, readouts=None) -> LinearDirections:
    """The naive baseline: one global W direction per AU, unconditioned, on every used W+ slot.

    With ``readouts`` (:func:`stylerig_au.edit.learn.regress` of an AU sample dataset), AU ``k``'s
    direction is its ridge read-out row ``a_k`` normalised, with scale ``1 / |a_k|`` (W units per AU
    unit of the read-out): the plain "regression gradient" of InterFaceGAN-style editing.

    Without them it is rebuilt from the linear directions file alone. Learned linear directions are
    the columns of the pseudo-inverse of the stacked read-out rows (AUs and head pose), so with
    ``M = [d_k * s_k]`` (direction x the pseudo-inverse norm, ``meta['per_au'][k]['linear_scale']``, else
    the file's scale) the rows of ``pinv(M)`` are the AU read-outs ``a_k`` restricted to the span of
    ``M``: the exact read-outs minus their head-pose components. So this naive direction is
    unconditioned on the other AUs but (unlike the data version) not on head pose; it is what the
    file allows. Slot masks and calibration are dropped in both cases.

    Raises:
        StylerigError: read-outs of another AU set than the directions, or a degenerate read-out.
    """
    if readouts is not None:
        rows = {int(a): np.asarray(readouts.au_rows[i], np.float64) for i, a in enumerate(readouts.aus)}
        source = "ridge read-outs of an AU sample dataset"
    else:
        per_au = (linear.meta or {}).get("per_au") or {}

        def pinv_norm(au: int) -> float:
            entry = per_au.get(au, per_au.get(str(au), {})) if isinstance(per_au, dict) else {}
            value = entry.get("linear_scale") if isinstance(entry, dict) else None
            return float(value) if value is not None and math.isfinite(float(value)) and float(value) > 0 else linear.scale(au)

        m = np.stack([linear.direction(a).double().numpy() * pinv_norm(a) for a in linear.aus], axis=1)  # [w_dim, K]
        readout = np.linalg.pinv(m)  # [K, w_dim]
        rows = {a: readout[i] for i, a in enumerate(linear.aus)}
        used = "meta linear_scale" if per_au else "file scales"
        source = f"pinv of the linear directions x pseudo-inverse norms ({used}); head-pose components not recoverable"
    dirs, scales = {}, {}
    for au, row in rows.items():
        norm = float(np.linalg.norm(row))
        if not math.isfinite(norm) or norm < 1e-12:
            raise StylerigError(f"naive baseline: AU{au} has a zero read-out")
        dirs[au] = torch.from_numpy(row / norm).float()
        scales[au] = 1.0 / norm
    return LinearDirections(dirs, slots=linear.slots, generator=linear.generator, scales=scales, created=linear.created,
                            method=f"naive: global unconditioned W direction per AU, all used slots, uncalibrated ({source})",
                            meta={"baseline": "naive", "source": source, "from_directions_created": linear.created})


# ----------------------------------------------------------------------------- faces


@dataclass
class Face:
    """One face to edit: ``name`` (resume key), ``record`` (``ws`` float32 [num_ws, w_dim], ``noise``, ``generator``)."""

    name: str
    record: dict


def generated_faces(G, n: int, seed_start: int = HELD_OUT_SEED_START, psi: float = 0.8,
                    device: str | torch.device = "cpu") -> list[Face]:
    """``n`` faces from seeds ``seed_start ..``: w = mapping(z, psi) repeated on every W+ slot (no inversion)."""
    from stylerig_au.models import seed_to_z

    if n < 1:
        raise StylerigError(f"--generated needs at least 1 face, got {n}")
    faces = []
    with torch.no_grad():
        for seed in range(seed_start, seed_start + n):
            w = G.mapping(seed_to_z(seed, G.z_dim).to(device), psi=psi)
            faces.append(Face(f"seed{seed}", {"ws": w[0][None].repeat(G.num_ws, 1).float(), "noise": {}, "generator": G.name}))
    return faces


def photo_paths(folder: str | os.PathLike) -> list[Path]:
    """The photos of ``folder`` (sorted).

    Raises:
        StylerigError: not a folder, or no photos in it.
    """
    from stylerig_au.imageio import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise StylerigError(f"--photos {folder}: no such folder")
    paths = list_images([folder])
    if not paths:
        raise StylerigError(f"--photos {folder}: no photos in it (.jpg, .png, ...)")
    return paths


def photo_face(G, path: Path, cache_dir: Path, config, device: str | torch.device = "cpu",
               log: Callable[[str], None] | None = None) -> Face:
    """One photo aligned and inverted (or its cached latent ``cache_dir/<stem>.pt`` reused)."""
    from stylerig_au.edit.photo import load_subject

    try:
        subject = load_subject(G, path, config, cache_dir=cache_dir, device=device, log=log)
    except StylerigError as err:
        raise StylerigError(f"{err} (evaluate uses the one face of each photo: crop the photo or remove it from --photos)") from None
    return Face(path.stem, subject.record)


# ----------------------------------------------------------------------------- measuring one face


def background_metrics(base: np.ndarray, edited: np.ndarray, landmarks: np.ndarray, lpips: PairFn) -> tuple[float, float]:
    """(LPIPS, RMSE) between two uint8 [R, R, 3] renders outside the face (mask from ``landmarks`` [68, 2]).

    RMSE is on [0, 1] values, weighted by ``1 - face_mask``; LPIPS compares both images with the face
    blacked out (by the same mask). NaN when the landmarks are NaN.
    """
    from stylerig_au.align import face_mask

    if not np.isfinite(landmarks).all():
        return math.nan, math.nan
    keep = 1.0 - face_mask(landmarks, base.shape[0])[..., None]  # [R, R, 1], 1 = background
    a, b = base.astype(np.float64) / 255.0, edited.astype(np.float64) / 255.0
    weight = float(keep.sum()) * 3
    rmse = math.sqrt(float((keep * (a - b) ** 2).sum()) / weight) if weight > 0 else math.nan
    mask_u8 = lambda x: np.round(x * keep * 255.0).clip(0, 255).astype(np.uint8)
    return float(lpips(mask_u8(a), mask_u8(b))), rmse


def _f(x: float) -> float | None:
    """JSON-friendly float: NaN/inf -> None."""
    x = float(x)
    return x if math.isfinite(x) else None


def measure_row(face: str, named: NamedEdit, method: str, base: dict[str, np.ndarray], edited: dict[str, np.ndarray],
                base_img: np.ndarray, edited_img: np.ndarray, seconds: float, instruments: Instruments) -> dict[str, Any]:
    """One result row (JSON-friendly; NaN -> null) from the measures of the unedited and edited face.

    ``base`` / ``edited``: one face's measure (``aus`` [K], ``pose`` [3] radians, ``landmarks`` [68, 2]).
    """
    aus = list(instruments.aus)
    row: dict[str, Any] = {"face": face, "edit": named.label, "edit_key": named.key, "method": method,
                           "strength": _f(named.strength), "seconds": seconds}
    found = bool(np.isfinite(edited["aus"]).all())
    row["status"] = "ok" if found else "edited_no_face"
    change = edited["aus"] - base["aus"]
    per = []
    for au, term in named.edit.items():
        k = aus.index(au)
        target = term.value - float(base["aus"][k]) if term.absolute else term.value
        entry = {"au": au, "absolute": term.absolute, "target_change": _f(target), "achieved_change": _f(change[k]),
                 "error": _f(change[k] - target), "before": _f(base["aus"][k]), "after": _f(edited["aus"][k])}
        if term.absolute:
            entry["target"] = term.value
        per.append(entry)
    row["aus"] = per
    others = [i for i, a in enumerate(aus) if a not in named.edit]
    row["drift"] = _f(np.abs(change[others]).mean()) if others else None
    row["identity_distance"] = _f(instruments.identity(base_img, edited_img))
    row["identity_sface"] = _f(instruments.identity_sface(base_img, edited_img)) if instruments.identity_sface else None
    lp, rmse = background_metrics(base_img, edited_img, base["landmarks"], instruments.lpips)
    row["background_lpips"], row["background_rmse"] = _f(lp), _f(rmse)
    pose = np.degrees(edited["pose"].astype(np.float64) - base["pose"].astype(np.float64))
    row["pose_change_deg"] = {n: _f(v) for n, v in zip(("pitch", "yaw", "roll"), pose)}
    row["pose_change_max_deg"] = _f(np.abs(pose).max()) if np.isfinite(pose).all() else None
    return row


# ----------------------------------------------------------------------------- the run


@dataclass
class EvalResult:
    """What :func:`evaluate` did: the report (as written to ``report.json``), files written, rows made, rows
    reused from an earlier run, and faces that could not be used (``face``, ``error``; retried by a rerun)."""

    report: dict
    files: dict[str, Path]
    made: int
    skipped: int
    failed: list[dict[str, str]] = field(default_factory=list)


def _read_rows(path: Path) -> list[dict]:
    """The rows of ``rows.jsonl`` (a torn last line from a crash is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _append_row(path: Path, rows: list[dict], row: dict) -> None:
    """Append one row: the whole file is rewritten atomically (rows.jsonl never holds half a row)."""
    from stylerig_au.fileio import atomic_write_text

    rows.append(row)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _check_run(out: Path, settings: dict) -> None:
    from stylerig_au.fileio import atomic_write_text

    file = out / "run.json"
    fixed = {k: v for k, v in settings.items() if k not in ("methods", "edits", "faces")}
    if file.is_file():
        try:
            old = json.loads(file.read_text())
        except json.JSONDecodeError:
            old = {}
        diff = [k for k, v in fixed.items() if old.get(k) != v]
        # a setting only the earlier run had (e.g. its local or motion render) differs too
        diff += [k for k in old if k not in fixed and k not in ("format", "format_version")]
        if diff:
            raise StylerigError(f"--out {out} holds an evaluation with other settings ({', '.join(diff)}); "
                                "use another --out folder or the same settings")
        return
    atomic_write_text(file, json.dumps({"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, **fixed}, indent=1) + "\n")


def evaluate(G, faces: Iterable[Face] | Sequence[Callable[[], Face]], edits: Sequence[NamedEdit],
             methods: dict[str, Any], out: str | os.PathLike, *, instruments: Instruments | None = None,
             settings: dict | None = None, face_names: Sequence[str] | None = None, progress: bool = True,
             device: str | torch.device = "cpu", log: Callable[[str], None] | None = None, local: bool = False,
             motion: bool = False) -> EvalResult:
    """Edit every face with every edit and method, measure, and write the report into ``out``.

    Args:
        G: the generator (protocol) the latents and directions belong to.
        faces: :class:`Face` objects, or callables that make one (so a photo is only inverted when a row
            of it is missing); with callables, ``face_names`` gives their names (for resuming).
        edits: from :func:`parse_edits`; every AU must have a direction in every method and a column in
            ``instruments.aus``.
        methods: method name -> :class:`LinearDirections` (:func:`naive_directions` for 'naive') or an
            :class:`~stylerig_au.edit.mapper.AUMapper` ('mapper').
        out: the output folder: ``rows.jsonl``, ``run.json``, ``report.json``, ``report.md``, plots,
            ``grid.png``, ``thumbs/``.
        instruments: the measures (default :func:`default_instruments`, loaded only if a row is missing).
        settings: plain settings that identify the run (a rerun with other ones is refused).
        local: render every edit inside its AUs' face region only (:mod:`stylerig_au.edit.local`).
        motion: show every edit as the face moved by the edit's landmark motion (:mod:`stylerig_au.edit.motion`).
    Returns:
        :class:`EvalResult`.
    Raises:
        StylerigError: an AU of an edit without a direction or a measured column; another run's folder.
    """
    from tqdm import tqdm

    from stylerig_au.imageio import save_image, to_uint8

    out = Path(out)
    faces = list(faces)
    names = list(face_names) if face_names is not None else [f.name for f in faces]  # type: ignore[union-attr]
    if len(names) != len(faces):
        raise StylerigError("face_names must name every face")
    if not faces:
        raise StylerigError("no faces to evaluate")
    if not edits:
        raise StylerigError("no edits to evaluate")
    if not methods:
        raise StylerigError("no methods to evaluate")
    editors = {m: make_editor(G, d, local, motion) for m, d in methods.items()}
    for name, editor in editors.items():
        for named in edits:
            try:
                editor.check_aus(named.edit)
            except StylerigError as err:
                raise StylerigError(f"method {name}, edit '{named.label}': {err}") from None
    if instruments is not None:
        _check_measured(edits, instruments.aus)
    settings = {"generator": G.name, **(settings or {}),
                "directions": {m: _describe(d) for m, d in methods.items()}}
    out.mkdir(parents=True, exist_ok=True)
    _check_run(out, {k: v for k, v in settings.items() if k != "directions"})
    rows_path = out / "rows.jsonl"
    rows = _read_rows(rows_path)
    have = {(r["face"], r["edit_key"], r["method"]) for r in rows if r.get("settings_key") == _settings_key(settings, r["method"])}
    todo = [(names[i], e, m) for i in range(len(faces)) for e in edits for m in methods if (names[i], e.key, m) not in have]
    skipped = len(faces) * len(edits) * len(methods) - len(todo)
    if log and skipped:
        log(f"{out}: {skipped} of {skipped + len(todo)} rows already measured; resuming")
    thumbs = out / "thumbs"
    bar = tqdm(total=len(todo), desc="evaluate", unit="row", disable=not progress)
    made = 0
    failed: list[dict[str, str]] = []
    for i, item in enumerate(faces):
        missing = [(e, m) for e in edits for m in methods if (names[i], e.key, m) not in have]
        if not missing:
            continue
        if instruments is None:
            instruments = default_instruments(device)
            _check_measured(edits, instruments.aus)
        try:
            face = item() if callable(item) else item
        except StylerigError as err:  # e.g. a photo with no face or several: skip it, say so, go on
            failed.append({"face": names[i], "error": str(err)})
            (log or tqdm.write)(f"skipped {names[i]}: {err}")
            bar.update(len(missing))
            continue
        record = face.record
        base_img = to_uint8(next(iter(editors.values())).render(record)[0])
        base = {k: v[0] for k, v in instruments.measure(base_img[None]).items()}
        save_image(_thumb(thumbs, names[i], None, None), _downsample(base_img, THUMB_SIZE), value_range=(0, 255))
        current = {au: float(base["aus"][k]) for k, au in enumerate(instruments.aus)}
        for named, method in missing:
            skey = _settings_key(settings, method)
            if not bool(base.get("face_found", np.isfinite(base["aus"]).all())) or not np.isfinite(base["aus"]).all():
                row = {"face": names[i], "edit": named.label, "edit_key": named.key, "method": method,
                       "strength": _f(named.strength), "status": "no_face", "settings_key": skey}
            else:
                editor = editors[method]
                tick = time.perf_counter()
                ws = editor.edit(record, named.edit, current_aus=current if not named.edit.is_relative else None)
                image = editor.render(record, named.edit, ws=ws[None])
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - tick
                edited_img = to_uint8(image[0])
                edited = {k: v[0] for k, v in instruments.measure(edited_img[None]).items()}
                row = measure_row(names[i], named, method, base, edited, base_img, edited_img, seconds, instruments)
                row["settings_key"] = skey
                save_image(_thumb(thumbs, names[i], named, method), _downsample(edited_img, THUMB_SIZE), value_range=(0, 255))
            _append_row(rows_path, rows, row)
            made += 1
            bar.update(1)
    bar.close()
    keys = {(n, e.key, m) for n in names for e in edits for m in methods}
    current_rows = [r for r in rows if (r["face"], r["edit_key"], r["method"]) in keys
                    and r.get("settings_key") == _settings_key(settings, r["method"])]
    if not current_rows and failed:
        raise StylerigError(f"no face could be evaluated; {failed[0]['face']}: {failed[0]['error']}")
    report = summarize(current_rows, edits, list(methods), settings, instruments.names if instruments else {})
    report["skipped_faces"] = failed
    files = write_outputs(out, report, names, edits, list(methods))
    return EvalResult(report, files, made, skipped, failed)


def _check_measured(edits: Sequence[NamedEdit], aus: Sequence[int]) -> None:
    for named in edits:
        for au in named.edit:
            if au not in aus:
                raise StylerigError(f"edit '{named.label}': AU{au} is not measured by the AU estimator "
                                    f"(it measures AU {', '.join(map(str, aus))})")


def _settings_key(settings: dict, method: str) -> str:
    """Which directions a row was made with (a row of other directions is not reused)."""
    d = settings.get("directions", {}).get(method, {})
    return f"{method}|{d.get('method')}|{d.get('created')}"


def _thumb(folder: Path, face: str, named: NamedEdit | None, method: str | None) -> Path:
    import hashlib

    if named is None:
        return folder / f"{face}__original.png"
    digest = hashlib.sha1(named.key.encode()).hexdigest()[:10]
    return folder / f"{face}__{method}__{digest}.png"


# ----------------------------------------------------------------------------- report


def _mean(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def _stats(rows: list[dict]) -> dict[str, Any]:
    """Means over measured rows (``status == 'ok'``)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    terms = [t for r in ok for t in r["aus"]]
    return {
        "rows": len(rows), "measured": len(ok),
        "no_face": sum(r.get("status") != "ok" for r in rows),
        "target_change": _mean(t["target_change"] for t in terms),
        "achieved_change": _mean(t["achieved_change"] for t in terms),
        "abs_error": _mean(abs(t["error"]) if t["error"] is not None else None for t in terms),
        "au_mse": _mean(t["error"] ** 2 if t["error"] is not None else None for t in terms),
        "drift": _mean(r["drift"] for r in ok),
        "identity_distance": _mean(r["identity_distance"] for r in ok),
        "identity_sface": _mean(r.get("identity_sface") for r in ok),  # rows made before it: None
        "background_lpips": _mean(r["background_lpips"] for r in ok),
        "background_rmse": _mean(r["background_rmse"] for r in ok),
        "pose_change_max_deg": _mean(r["pose_change_max_deg"] for r in ok),
        "seconds": _mean(r.get("seconds") for r in ok),
    }


def summarize(rows: list[dict], edits: Sequence[NamedEdit], methods: Sequence[str], settings: dict,
              instrument_names: dict[str, str]) -> dict[str, Any]:
    """The report: settings, per-row results, means per method x AU, per method x edit, per method, overall.

    Per AU, the means are over every edit term of that AU (``target_change``, ``achieved_change``,
    ``abs_error`` = mean |achieved - target|, ``within_0.5`` = share of terms with |error| <= 0.5);
    ``au_mse`` (per method, edit, overall) is the mean of (achieved - target)² over the edit terms;
    the other means are over rows.
    """
    per_au: dict[str, dict] = {}
    per_edit: dict[str, dict] = {}
    per_method: dict[str, dict] = {}
    for m in methods:
        mrows = [r for r in rows if r["method"] == m]
        per_method[m] = _stats(mrows)
        per_edit[m] = {e.label: {"edit": e.key, "strength": _f(e.strength), **_stats([r for r in mrows if r["edit_key"] == e.key])}
                       for e in edits}
        aus = sorted({au for e in edits for au in e.edit})
        per_au[m] = {}
        for au in aus:
            terms = [t for r in mrows if r.get("status") == "ok" for t in r["aus"] if t["au"] == au]
            errs = [abs(t["error"]) for t in terms if t["error"] is not None]
            per_au[m][str(au)] = {"terms": len(terms), "target_change": _mean(t["target_change"] for t in terms),
                                  "achieved_change": _mean(t["achieved_change"] for t in terms),
                                  "abs_error": _mean(errs), "within_0.5": (sum(e <= 0.5 for e in errs) / len(errs)) if errs else None}
    return {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": settings,
            "instruments": instrument_names, "edits": [{"label": e.label, "edit": e.key} for e in edits],
            "methods": list(methods), "rows": rows, "per_au": per_au, "per_edit": per_edit,
            "per_method": per_method, "overall": _stats(rows)}


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def report_markdown(report: dict) -> str:
    """``report.md``: the settings and three tables (per method, per method x AU, per method x edit)."""
    s = report["settings"]
    lines = ["# AU editing evaluation", "",
             (f"{report['date']} · generator `{s.get('generator')}` · faces: {s.get('faces')} · "
              f"methods: {', '.join(report['methods'])}"), ""]
    for m, d in s.get("directions", {}).items():
        lines.append(f"- **{m}**: {d.get('method')} (created {d.get('created')})")
    lines += ["", ("Changes are AU intensity units (OpenFace, 0–5). drift: mean |change| of the AUs not in the edit; "
                   "ID dlib: dlib identity distance (same person < 0.6; the judge); ID SFace: SFace cosine "
                   "distance (same person below about 0.6); bg: background outside the face mask; "
                   "pose: largest head-angle change (degrees); s: seconds to edit + render one image."), "",
              "## Per method", "",
              "| method | rows | measured | abs err | AU-MSE | drift | ID dlib | ID SFace | bg LPIPS | bg RMSE | pose° | s/img |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, p in report["per_method"].items():
        lines.append(f"| {m} | {p['rows']} | {p['measured']} | {_fmt(p['abs_error'])} | {_fmt(p.get('au_mse'))} | {_fmt(p['drift'])} | "
                     f"{_fmt(p['identity_distance'])} | {_fmt(p.get('identity_sface'))} | {_fmt(p['background_lpips'], 3)} | "
                     f"{_fmt(p['background_rmse'], 4)} | "
                     f"{_fmt(p['pose_change_max_deg'], 1)} | {_fmt(p['seconds'])} |")
    lines += ["", "## Per AU: target vs achieved change", "",
              "| method | AU | terms | target | achieved | abs err | within 0.5 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, aus in report["per_au"].items():
        for au, p in aus.items():
            lines.append(f"| {m} | AU{au} | {p['terms']} | {_fmt(p['target_change'])} | {_fmt(p['achieved_change'])} | "
                         f"{_fmt(p['abs_error'])} | {_fmt(p['within_0.5'])} |")
    lines += ["", "## Per edit", "",
              "| method | edit | measured | target | achieved | abs err | drift | ID dlib | ID SFace | bg LPIPS | pose° |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, edits in report["per_edit"].items():
        for label, p in edits.items():
            lines.append(f"| {m} | `{label}` | {p['measured']} | {_fmt(p['target_change'])} | {_fmt(p['achieved_change'])} | "
                         f"{_fmt(p['abs_error'])} | {_fmt(p['drift'])} | {_fmt(p['identity_distance'])} | {_fmt(p.get('identity_sface'))} | "
                         f"{_fmt(p['background_lpips'], 3)} | {_fmt(p['pose_change_max_deg'], 1)} |")
    o = report["overall"]
    lines += ["", (f"Overall: {o['measured']} of {o['rows']} rows measured; mean |error| {_fmt(o['abs_error'])}, "
                   f"drift {_fmt(o['drift'])}, ID dlib {_fmt(o['identity_distance'])}, ID SFace {_fmt(o.get('identity_sface'))}."), "",
              "Plots: `au_target_vs_achieved.png`, `identity_vs_strength.png`; faces: `grid.png`.", ""]
    return "\n".join(lines)


def write_outputs(out: Path, report: dict, faces: Sequence[str], edits: Sequence[NamedEdit], methods: Sequence[str]) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, the two plots and ``grid.png`` (all atomically); returns their paths."""
    from stylerig_au.fileio import atomic_write_text

    files = {"report_json": out / "report.json", "report_md": out / "report.md"}
    atomic_write_text(files["report_json"], json.dumps(report, indent=1) + "\n")
    atomic_write_text(files["report_md"], report_markdown(report))
    files.update(plot_report(out, report))
    grid = write_grid(out, faces, edits, methods)
    if grid is not None:
        files["grid"] = grid
    return files


def plot_report(out: Path, report: dict) -> dict[str, Path]:
    """``au_target_vs_achieved.png`` (one panel per AU: target vs achieved change per row, by method) and
    ``identity_vs_strength.png`` (identity distance vs the edit's strength, by method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stylerig_au.fileio import atomic_path

    files = {}
    ok = [r for r in report["rows"] if r.get("status") == "ok"]
    aus = sorted({int(a) for m in report["per_au"].values() for a in m})
    methods = report["methods"]
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    ncols = min(4, max(1, len(aus)))
    nrows = max(1, math.ceil(len(aus) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(aus):]:
        ax.axis("off")
    for ax, au in zip(axes.flat, aus):
        lo, hi = 0.0, 1.0
        for m in methods:
            pts = [(t["target_change"], t["achieved_change"]) for r in ok if r["method"] == m for t in r["aus"]
                   if t["au"] == au and t["target_change"] is not None and t["achieved_change"] is not None]
            if pts:
                x, y = np.array(pts).T
                ax.scatter(x, y, s=18, alpha=0.7, color=colors[m], label=m)
                lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
        ax.set_title(f"AU{au}")
        ax.set_xlabel("target change")
        ax.set_ylabel("achieved change")
        ax.grid(alpha=0.3)
    if aus and ok:
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    files["plot_au"] = out / "au_target_vs_achieved.png"
    with atomic_path(files["plot_au"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for m in methods:
        pts = [(r["strength"], r["identity_distance"]) for r in ok if r["method"] == m
               and r.get("strength") is not None and r.get("identity_distance") is not None]
        if pts:
            x, y = np.array(pts).T
            ax.scatter(x, y, s=18, alpha=0.7, color=colors[m], label=m)
    ax.axhline(0.6, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("edit strength (L2 norm of AU changes)")
    ax.set_ylabel("identity distance (dlib)")
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(fontsize=8)
    fig.tight_layout()
    files["plot_identity"] = out / "identity_vs_strength.png"
    with atomic_path(files["plot_identity"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return files


def write_grid(out: Path, faces: Sequence[str], edits: Sequence[NamedEdit], methods: Sequence[str],
               max_faces: int = GRID_FACES, cell: int = 128) -> Path | None:
    """``grid.png``: one row per (face, method) for the first ``max_faces`` faces; columns: the unedited
    face, then each edit (a missing render stays white). None when no thumbnail exists yet."""
    from stylerig_au.edit import media
    from stylerig_au.imageio import load_image, save_image

    thumbs = out / "thumbs"
    blank = np.full((cell, cell, 3), 255, np.uint8)

    def tile(path: Path) -> np.ndarray:
        return load_image(path) if path.is_file() else blank

    rows, labels = [], []
    for face in faces[:max_faces]:
        original = _thumb(thumbs, face, None, None)
        if not original.is_file():
            continue
        for m in methods:
            rows.append([tile(original)] + [tile(_thumb(thumbs, face, e, m)) for e in edits])
            labels.append(f"{face}\n{m}")
    if not rows:
        return None
    grid = media.labelled_grid(rows, labels, ["original"] + [e.label for e in edits], cell=cell)
    path = out / "grid.png"
    save_image(path, grid, value_range=(0, 255))
    return path
