"""Edit a photo or a latent file: invert once (cached), edit in W+, render, paste back.

A *subject* is what the edit commands work on: a latent record (see :mod:`stylerig_au.invert`) and,
when it came from a photo, the photo and its alignment, so that edited faces go back into the photo
at its own size::

    G = load_generator()
    editor = Editor(G, load_default_directions(G), measure=OpenFaceMeasure())
    subject = load_subject(G, "me.jpg", InvertConfig(steps=60, lr=0.08))   # inverts, or reuses me.pt
    face = render_face(editor, subject, AU(12, +2) + AU(6, +1))            # uint8 [R, R, 3]
    save_image("me_smile.png", compose(subject, face))                      # the photo, edited

The latent of a photo is cached as ``<cache_dir>/<photo stem>.pt`` and reused when its
``source_sha256`` matches the photo's bytes and it was made by the same generator with the same
inversion settings (any settings when the caller did not choose them: a 500-step latent from
``invert`` is reused, not redone in 60). Any other file there (another photo's latent, other
settings, not a latent) is never replaced without ``overwrite`` (:mod:`stylerig_au.outputs`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stylerig_au.edit.editor import Editor
from stylerig_au.edit.spec import Edit
from stylerig_au.errors import StylerigError

LATENT_SUFFIXES = (".pt", ".pth")
IMAGE_OUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class Subject:
    """A face to edit.

    Attributes:
        source: the photo or latent file as given.
        record: the latent record (``ws`` float32 [num_ws, w_dim] on the editing device, ``noise``, ...).
        latent_path: where the record is stored (the cache file for a photo).
        photo: the original photo uint8 [H, W, 3], or None for a latent file.
        transform: the photo's :class:`~stylerig_au.align.FaceTransform`, or None for a latent file.
        inverted: True when the photo was inverted by this call, False when a latent was reused or given.
        extras: the photo's colour profile, transparency and 16-bit colours
            (:class:`~stylerig_au.imageio.PhotoExtras`), which the edited photo keeps where its format can.
    """

    source: Path
    record: dict
    latent_path: Path
    photo: np.ndarray | None = None
    transform: object | None = None
    inverted: bool = False
    extras: object | None = None

    @property
    def is_photo(self) -> bool:
        return self.photo is not None

    @property
    def stem(self) -> str:
        return self.source.stem


def is_latent_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names a latent file (``.pt`` / ``.pth``) rather than a photo."""
    return Path(path).suffix.lower() in LATENT_SUFFIXES


def quick_config(steps: int | None = None, device: str = "cpu", lr: float | None = None):
    """The inversion settings of the edit commands: ``steps`` (default: :func:`~stylerig_au.invert.default_steps`,
    60 on a CPU, 500 on a GPU) and ``lr`` (default: :func:`~stylerig_au.invert.default_lr`). Checkpoints are off."""
    from stylerig_au.invert import InvertConfig, default_lr, default_steps

    if steps is None:
        steps = default_steps(device)
    if steps < 1:
        raise StylerigError(f"inversion needs at least 1 step, got {steps}")
    return InvertConfig(steps=steps, lr=default_lr(steps) if lr is None else lr, checkpoint_every=0)


def check_latent(G, record: dict, name: str = "latent") -> None:
    """Raise StylerigError unless ``record`` is a latent of generator ``G``: a generator name, a real
    floating-point W+ of G's shape with finite values, and noise maps (if any) only for G's noise layers,
    each of its shape. Keys this version does not use are ignored."""
    from stylerig_au.invert import noise_modules

    ws = record.get("ws")
    gen = record.get("generator")
    if not isinstance(ws, torch.Tensor) or not ws.is_floating_point():
        raise StylerigError(f"{name}: damaged latent file (no floating-point 'ws' tensor)")
    if not isinstance(gen, str):
        raise StylerigError(f"{name}: damaged latent file (no generator name)")
    noise = record.get("noise")
    if noise is not None and not isinstance(noise, dict):
        raise StylerigError(f"{name}: damaged latent file ('noise' is a {type(noise).__name__}, not a dict of maps)")
    layers = noise_modules(G)
    for key, value in (noise or {}).items():
        if key not in layers:
            raise StylerigError(f"{name}: latent has a noise map for {key!r}, which {G.name} does not have; "
                                "it was made for another generator or is damaged")
        want = tuple(layers[key].noise_const.shape[-2:])
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or tuple(value.shape[-2:]) != want \
                or value.numel() != want[0] * want[1]:
            raise StylerigError(f"{name}: damaged latent file (noise map {key!r} is not a float map of {want[0]}x{want[1]})")
    if gen != G.name:
        raise StylerigError(f"{name}: latent was made with generator {gen!r}, not {G.name!r}; "
                            f"pass --generator {gen} (or invert the photo again with this generator)")
    if tuple(ws.shape) != (G.num_ws, G.w_dim):
        raise StylerigError(f"{name}: latent has shape {list(ws.shape)} but {G.name} needs W+ [{G.num_ws}, {G.w_dim}]")
    if not bool(torch.isfinite(ws).all()):
        raise StylerigError(f"{name}: latent has non-finite values")


def latent_cache_path(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None, face: int | None = None) -> Path:
    """Where the latent of photo ``source`` (face ``face``) is cached: ``<cache_dir>/<stem>[_face<K>].pt``
    (``cache_dir`` defaults to the photo's folder)."""
    source = Path(source)
    cache = Path(cache_dir) if cache_dir is not None else source.parent
    return cache / (f"{source.stem}.pt" if face is None else f"{source.stem}_face{face}.pt")


def _cache_mismatch(record: dict, G, digest: str, config, face: int | None = None, any_settings: bool = False) -> str | None:
    """Why a cached latent cannot stand for this photo, face, generator and inversion ``config``
    (None: it can). ``any_settings``: accept the latent whatever settings it was made with."""
    from stylerig_au.invert import latent_mismatch

    why = latent_mismatch(record, G.name, digest, face or 0, None if any_settings else config)
    if why is None and record.get("transform") is None:
        why = "holds a latent of the photo used as an aligned face (no paste-back)"
    if why is not None and not any_settings and latent_mismatch(record, G.name, digest, face or 0, None) is None:
        why += "; leave out --steps/--lr to reuse it"  # only the settings differ
    return why


def _on_device(record: dict, device) -> dict:
    """A latent record with float32 ``ws`` on ``device`` and a ``noise`` dict (empty when it has none)."""
    return {**record, "ws": record["ws"].float().to(device), "noise": record.get("noise") or {}}


def load_subject(
    G,
    source: str | os.PathLike,
    config=None,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    lpips_model: torch.nn.Module | None = None,
    upsample: int = 1,
    face: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    any_settings: bool = False,
    overwrite: bool = False,
) -> Subject:
    """A photo (aligned and inverted, or its cached latent reused) or a latent file, ready to edit.

    Args:
        G: the generator (protocol); latents must belong to it.
        source: a photo (any format :func:`~stylerig_au.imageio.load_image` reads) or a ``.pt`` latent file.
        config: :class:`~stylerig_au.invert.InvertConfig` for photos (default :func:`quick_config`: the steps
            chosen by ``device``, said through ``log`` before a photo is inverted).
        cache_dir: where the photo's latent ``<stem>.pt`` is kept (default: the photo's folder).
        device: where W+ lives and the generator runs.
        lpips_model: perceptual loss for the inversion (default LPIPS-VGG16, loaded only if needed).
        upsample: dlib detector upsampling for small faces.
        face: for a photo with several faces, which one (0 = leftmost, as ``align --all-faces`` numbers
            them); its latent is cached as ``<stem>_face<K>.pt``. Default: the photo's one face.
        progress: show a tqdm bar while inverting; ``log``: where notes go (default: tqdm.write).
        any_settings: reuse a cached latent of this photo whatever inversion settings made it (the
            caller did not choose ``config``; it is used only when the photo must be inverted).
        overwrite: replace a cache file that cannot be reused (another photo's latent, other
            settings, not a latent at all); without it that is an error, before any inversion.

    Raises:
        StylerigError: missing/unreadable photo, no face, several faces without ``face``, no face
            ``face``, a damaged latent file, a latent of another generator or shape, or a cache file
            that cannot be reused and may not be replaced.
    """
    from tqdm import tqdm

    from stylerig_au.align import FaceTransform
    from stylerig_au.imageio import load_extras, load_image
    from stylerig_au.invert import load_latent, sha256_file, steps_note

    log = log or (lambda msg: tqdm.write(msg))
    source = Path(source)
    if is_latent_file(source):
        if face is not None:
            raise StylerigError(f"{source}: --face chooses a face of a photo; a latent file holds one face already")
        record = load_latent(source)
        check_latent(G, record, str(source))
        return Subject(source, _on_device(record, device), source, None, None, False)

    photo = load_image(source)  # a clear error for a missing or corrupt photo, before any work
    steps_by_device = config is None
    config = config or quick_config(device=str(device))
    latent_path = latent_cache_path(source, cache_dir, face)
    digest = sha256_file(source)
    record = None
    if latent_path.exists() or latent_path.is_symlink():
        try:
            cached, why = load_latent(latent_path), None
        except StylerigError:
            cached, why = None, "is not a stylerig-au latent file"
        if cached is not None:
            why = _cache_mismatch(cached, G, digest, config, face, any_settings)
        if why is None:
            check_latent(G, cached, str(latent_path))
            record = cached
            log(f"reusing the inversion of {source.name} from {latent_path}")
        elif not overwrite:
            raise StylerigError(f"{latent_path} already exists and {why}; pass --overwrite to replace it with this "
                                "photo's latent, or keep latents elsewhere (--latent-dir)")
    inverted = record is None
    if inverted:
        if steps_by_device:
            log(steps_note(device))
        record = invert_photo(G, source, latent_path, config, device=device, lpips_model=lpips_model,
                              upsample=upsample, face=face, progress=progress, digest=digest)
    record = _on_device(record, device)
    try:
        transform = FaceTransform.from_dict(record["transform"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise StylerigError(f"{latent_path}: damaged latent file (its face alignment is unreadable); delete it and "
                            "run the command again") from None
    return Subject(source, record, latent_path, photo, transform, inverted, load_extras(source))


def invert_photo(
    G,
    photo: str | os.PathLike,
    latent_path: str | os.PathLike,
    config,
    *,
    device: str | torch.device = "cpu",
    lpips_model: torch.nn.Module | None = None,
    upsample: int = 1,
    face: int | None = None,
    progress: bool = True,
    digest: str | None = None,
) -> dict:
    """Align the one face of ``photo`` (or face ``face``, 0 = leftmost), invert it with ``config`` and write
    the latent record to ``latent_path``.

    Alignment comes first, so a photo without a usable face fails before the loss network is loaded.
    Returns the record (format in :mod:`stylerig_au.invert`). Raises StylerigError like
    :func:`stylerig_au.invert.prepare_jobs` (no face, several faces, face too small).
    """
    from tqdm import tqdm

    from stylerig_au.invert import latent_record, optimize, prepare_jobs, prepare_targets, save_latent
    from stylerig_au.perceptual import load_lpips

    jobs = prepare_jobs(Path(photo), G.resolution, aligned=False, all_faces=face is not None, upsample=upsample)
    if face is not None and not 0 <= face < len(jobs):
        raise StylerigError(f"{photo}: there is no face {face}; {len(jobs)} found, numbered 0-{len(jobs) - 1} from the left "
                            "(`stylerig-au align --all-faces` writes each)")
    job = jobs[face or 0]
    if digest is not None and digest != job.source_sha256:
        raise StylerigError(f"{photo}: the file changed while it was being read; try again")
    lpips_model = lpips_model if lpips_model is not None else load_lpips(device=device)
    targets = prepare_targets([job.image], config.loss_size, device)
    with tqdm(total=config.steps, desc=f"invert {job.stem}"[:40], unit="step", disable=not progress, leave=False) as bar:
        def on_step(step: int, losses: dict[str, torch.Tensor]) -> None:
            bar.update(1)
            bar.set_postfix(lpips=f"{losses['lpips'].mean().item():.3f}")

        tick = time.perf_counter()
        state, losses = optimize(G, targets, config, lpips_model, on_step=on_step)
        seconds = time.perf_counter() - tick
    (item,) = state.split()
    record = latent_record(G, job, item, {k: float(v[0]) for k, v in losses.items()}, config, seconds)
    save_latent(latent_path, record)
    return record


# ----------------------------------------------------------------------------- measuring AUs


DETECT_MAX_SIDE = 512  # rendered faces fill the frame: finding them on a 512-px copy is enough and fast


class OpenFaceMeasure:
    """``images [N, 3, R, R] in [-1, 1] -> {AU: float32 [N]}``: OpenFace 2.2 static intensities (0–5) of
    rendered faces, with dlib landmarks found on each image. The model loads on the first call.

    Raises (when called): StylerigError if a rendered image has no detectable face, or the OpenFace
    models are missing (their licence must be accepted:
    ``stylerig-au pretrained fetch openface-2.2-au --accept-license openface-2.2-au``).
    """

    def __init__(self, detector=None) -> None:
        self.detector = detector

    def __call__(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        from stylerig_au.au.detect import make_detector
        from stylerig_au.au.landmarks import landmarks_68
        from stylerig_au.imageio import to_uint8

        if self.detector is None:
            self.detector = make_detector("openface")
        faces, marks = [], []
        for k, img in enumerate(images):
            face = to_uint8(img.clamp(-1, 1))
            lm = landmarks_68(face, detect_max_side=DETECT_MAX_SIDE)
            if lm is None:
                raise StylerigError(f"the face detector finds no face in rendered image {k + 1} of {len(images)}, so its AU "
                                    "intensities cannot be measured (for an absolute target AU=@N, use a change AU=+N instead)")
            faces.append(face)
            marks.append(lm)
        values = self.detector.predict_photos(faces, marks)
        return {au: torch.as_tensor(values[:, i], dtype=torch.float32) for i, au in enumerate(self.detector.aus)}


# ----------------------------------------------------------------------------- rendering


def render_ws(editor: Editor, subject: Subject, ws: torch.Tensor, edit: Edit | None = None) -> np.ndarray:
    """The face of one W+ ``ws`` [num_ws, w_dim] with the subject's noise maps: uint8 [R, R, 3]. ``edit``: the
    edit ``ws`` comes from (a local editor keeps the change to its AUs' region)."""
    from stylerig_au.imageio import to_uint8

    return to_uint8(editor.render(subject.record, edit, ws=ws[None] if ws.ndim == 2 else ws)[0])


def render_face(editor: Editor, subject: Subject, edit: Edit | None = None) -> np.ndarray:
    """The subject's face edited by ``edit`` (None: the reconstruction): uint8 [R, R, 3]."""
    ws = subject.record["ws"] if edit is None else editor.edit(subject.record, edit)
    return render_ws(editor, subject, ws, edit)


def compose(subject: Subject, face: np.ndarray, deep: bool = False) -> np.ndarray:
    """What the user gets: ``face`` uint8 [R, R, 3] pasted back into the photo (uint8 [H, W, 3], the photo's
    size), or the aligned face itself for a latent file. ``deep``: paste into the 16-bit colours of a
    16-bit photo instead (uint16 [H, W, 3]; see :func:`save_edited`)."""
    from stylerig_au.align import paste_back

    if not subject.is_photo:
        return face
    extras = subject.extras
    if deep and extras is not None and extras.deep is not None:
        return paste_back(extras.deep, face, subject.transform)
    return paste_back(subject.photo, face, subject.transform)


def save_edited(path: str | os.PathLike, subject: Subject, face: np.ndarray,
                note: Callable[[str], None] | None = None) -> np.ndarray:
    """Write the edited ``face`` (uint8 [R, R, 3]) pasted back into the subject's photo (or the face itself for
    a latent file) to ``path``, keeping the photo's colour profile, transparency and 16-bit depth where the
    format can; ``note`` gets one line naming what it could not keep. Returns the written image."""
    from stylerig_au.imageio import PhotoExtras, save_photo

    deep = Path(path).suffix.lower() == ".png"
    image = compose(subject, face, deep=deep)
    lost = save_photo(path, image, subject.extras if subject.is_photo else PhotoExtras())
    if lost and note is not None:
        note(f"{path} does not keep the photo's {' or '.join(lost)}; write a .png to keep {'them' if len(lost) > 1 else 'it'}")
    return image


def check_image_suffix(path: str | os.PathLike, allowed: tuple[str, ...] = IMAGE_OUT_SUFFIXES) -> None:
    """Raise StylerigError unless ``path`` ends in one of ``allowed`` (checked before any slow work)."""
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        raise StylerigError(f"{path}: unsupported output suffix {suffix or '(none)'!r}; use one of {', '.join(allowed)}")
