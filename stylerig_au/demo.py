"""The end-to-end demo behind ``make demo``: a real photo through every stage that exists today.

Stages: load a public-domain photo (scikit-image's astronaut, or the user's own) → FFHQ-align it →
invert it into the default generator's W+ (a quick CPU setting unless told otherwise) → paste the
reconstruction back into the photo → measure the reconstruction (LPIPS, dlib and SFace identity distances) → when
learned AU directions exist for the generator, edit a few AUs (smile, brow lowerer, jaw drop, brow
raise), paste each edit back and measure its AU change with OpenFace → write a labelled grid of every
stage and the labelled before/after picture of the README (:data:`BEFORE_AFTER`). Whatever is
missing (no learned directions yet, the AU mapper) is reported in ``not_done`` instead of pretended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylerig_au.errors import StylerigError
from stylerig_au.invert import QUICK_LR, QUICK_STEPS

# The demo's edits (each AU +2 intensity steps): name -> the AUs it moves (the Edits: demo_edits()).
DEMO_EDITS: dict[str, str] = {
    "smile": "AU6 + AU12 (cheek raiser + lip corner puller)",
    "brow_lowerer": "AU4 (brow lowerer)",
    "jaw_drop": "AU26 (jaw drop)",
    "brow_raise": "AU1 + AU2 (inner + outer brow raiser)",
    "smile_mapper": "AU6 + AU12 by the AU-conditioned mapper (instead of the linear directions)",
}

DEMO_LOCAL = True  # the demo's edits are kept to their AUs' face region, as `stylerig-au edit` renders them by default

# The labelled before/after picture (the photo's face region, unedited and edited, pasted back), its layout, and
# the record beside it (captions, inputs, sha256) that tests/test_demo_picture.py checks the README's copy against.
BEFORE_AFTER = "before_after.jpg"
BEFORE_AFTER_RECORD = "before_after.json"
README_PICTURE = "docs/demo_before_after.jpg"  # the committed copy (and .json): the demo's outputs, copied
BEFORE_AFTER_CELL = 256
BEFORE_AFTER_COLUMNS = 4


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    not_done: list[str] = field(default_factory=list)
    edits: dict[str, dict] = field(default_factory=dict)


def astronaut_photo() -> np.ndarray:
    """scikit-image's public-domain astronaut photo (Eileen Collins, NASA), uint8 [512, 512, 3]."""
    try:
        from skimage import data
    except ImportError:
        raise StylerigError("the default demo photo ships with scikit-image: pip install scikit-image, or pass --photo PATH") from None
    return np.ascontiguousarray(data.astronaut())


def run_demo(
    out_dir: str | Path,
    photo: str | Path | None = None,
    steps: int = QUICK_STEPS,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> DemoResult:
    """Run every available stage on one photo; write results into ``out_dir``.

    The photo is never written over (StylerigError before any work when an output would be it); its
    latent follows :func:`stylerig_au.invert.invert_files`'s overwrite rule (``overwrite``).

    Args:
        out_dir: output folder (created).
        photo: a photo path; None uses the astronaut photo.
        steps: inversion steps (60 is the quick CPU setting; 500 for full quality on a GPU).
        device: 'cpu' or 'cuda'.
    Returns:
        DemoResult with the written files, the measured metrics and per-stage seconds.
    """
    import torch

    from stylerig_au.align import FaceTransform, paste_back
    from stylerig_au.edit.media import captioned_grid
    from stylerig_au.imageio import load_image, save_image, to_uint8
    from stylerig_au.invert import InvertConfig, invert_files, load_latent, render_latent
    from stylerig_au.metrics import identity_distances, lpips
    from stylerig_au.models import load_generator

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=out)

    if photo is None:
        photo_path = out / "astronaut.png"
        if not photo_path.exists():
            save_image(photo_path, astronaut_photo(), value_range=(0, 255))
    else:
        photo_path = Path(photo)
        from stylerig_au.outputs import refuse_inputs_as_outputs

        refuse_inputs_as_outputs([out / f"{photo_path.stem}{suffix}" for suffix in ("_aligned.png", "_pasted.png", ".pt", "_recon.png")]
                                 + [out / f"{photo_path.stem}_{name}.png" for name in DEMO_EDITS]
                                 + [out / "demo_grid.png", out / "demo_summary.json", out / BEFORE_AFTER, out / BEFORE_AFTER_RECORD],
                                 [photo_path])
    original = load_image(photo_path)
    result.files["photo"] = photo_path

    tick = time.perf_counter()
    G = load_generator("mobilestylegan-ffhq-1024", device=device)
    result.seconds["load generator"] = time.perf_counter() - tick
    log(f"generator: {G.name}, {G.resolution}x{G.resolution}, W+ {G.num_ws}x{G.w_dim}")

    tick = time.perf_counter()
    config = InvertConfig(steps=steps, lr=QUICK_LR)
    (inverted,) = invert_files(G, [photo_path], out, config, batch_size=1, device=device, log=log, grid_name=None,
                               overwrite=overwrite)
    if inverted.status == "error":
        raise StylerigError(inverted.message)
    result.seconds["align + invert"] = time.perf_counter() - tick
    result.files["latent"] = inverted.latent
    result.files["reconstruction"] = inverted.recon

    record = load_latent(inverted.latent)
    transform = FaceTransform.from_dict(record["transform"])
    with torch.no_grad():
        recon = to_uint8(render_latent(G, record, device=device)[0])
    aligned_face = _aligned(original, transform, G.resolution)
    pasted = paste_back(original, recon, transform)
    result.files["aligned"] = save_image(out / f"{inverted.stem}_aligned.png", aligned_face, value_range=(0, 255))
    result.files["pasted"] = save_image(out / f"{inverted.stem}_pasted.png", pasted, value_range=(0, 255))

    tick = time.perf_counter()
    result.metrics["lpips_vgg_256"] = float(lpips(aligned_face, recon)[0])
    both = identity_distances(aligned_face, recon, device=device, shared_frame=True)
    result.metrics["identity_distance"] = float(both["dlib"][0])  # dlib's, the judge
    result.metrics["identity_sface"] = float(both["sface"][0])
    result.seconds["metrics"] = time.perf_counter() - tick

    tick = time.perf_counter()
    edited = _demo_edits(G, record, original, transform, out, inverted.stem, device, result, log)
    if edited:
        result.seconds["edits"] = time.perf_counter() - tick
    edit_tiles = dict(zip(before_after_captions(edited)[2:], edited.values()))
    cells = {"photo": original, "aligned face": aligned_face, "reconstruction": recon, "pasted back": pasted} | edit_tiles
    grid = captioned_grid(list(cells.values()), list(cells), ncols=4, cell=256)
    result.files["grid"] = save_image(out / "demo_grid.png", grid, value_range=(0, 255))
    tiles = dict(zip(before_after_captions([]), [original, pasted])) | edit_tiles
    inputs = picture_inputs(original, G.name, steps, device, photo)
    result.files["before_after"] = write_before_after(out, tiles, transform, inputs)

    summary = {
        "files": {k: str(v) for k, v in result.files.items()},
        "metrics": result.metrics,
        "seconds": result.seconds,
        "steps": steps,
        "device": device,
        "edits": result.edits,
        "not_done": result.not_done,
    }
    from stylerig_au.fileio import atomic_write_text

    atomic_write_text(out / "demo_summary.json", json.dumps(summary, indent=2) + "\n")
    return result


def demo_edits() -> dict:
    """The demo's edits, name -> :class:`~stylerig_au.edit.spec.Edit` (each AU +2), in :data:`DEMO_EDITS` order;
    'smile_mapper' is rendered by the AU mapper, the others by the linear directions."""
    from stylerig_au.edit import AU, presets

    return {"smile": 2 * presets.smile, "brow_lowerer": AU(4, +2), "jaw_drop": AU(26, +2),
            "brow_raise": 2 * presets.brow_raise, "smile_mapper": 2 * presets.smile}


def edit_caption(name: str, edit) -> str:
    """Two-line label of a demo edit: its name, then each AU and its change, e.g. 'smile\\nAU6 +2, AU12 +2'."""
    title = name.replace("_mapper", ", AU mapper").replace("_", " ")
    return title + "\n" + ", ".join(f"AU{au} {edit[au].value:+g}" for au in edit)


def before_after_captions(edit_names) -> list[str]:
    """Captions of the before/after picture's tiles: the photo, its unedited inversion, then each named demo edit."""
    edits = demo_edits()
    return ["photo", "inverted, not edited"] + [edit_caption(name, edits[name]) for name in edit_names]


def picture_inputs(photo: np.ndarray, generator: str, steps: int, device: str, photo_path=None) -> dict:
    """What the before/after picture is made from, hashed: the photo's pixels (uint8 [H, W, 3]), the generator,
    the inversion setting, and the sha256 of the bundled AU directions and mapper it edits with."""
    import hashlib

    from stylerig_au import pretrained

    pixels = hashlib.sha256(repr(photo.shape).encode() + np.ascontiguousarray(photo).tobytes()).hexdigest()
    inputs = {"photo": "astronaut" if photo_path is None else Path(photo_path).name, "photo_pixels_sha256": pixels,
              "generator": generator, "steps": steps, "lr": QUICK_LR, "device": device, "local_edits": DEMO_LOCAL}
    for kind in ("au-directions", "au-mapper"):
        name = f"{kind}-{generator}"
        if name in pretrained.OWN_ASSETS:
            inputs[f"{kind}_sha256"] = pretrained.sha256_file(pretrained.own_path(name))
    return inputs


def write_before_after(out: Path, tiles: dict[str, np.ndarray], transform, inputs: dict) -> Path:
    """Write :data:`BEFORE_AFTER` (:func:`before_after` of ``tiles``) and :data:`BEFORE_AFTER_RECORD` beside it:
    the command, the captions, ``inputs`` (:func:`picture_inputs`) and the picture's sha256. Returns the picture."""
    from stylerig_au import pretrained
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import save_image

    picture = save_image(Path(out) / BEFORE_AFTER, before_after(tiles, transform), value_range=(0, 255))
    command = "stylerig-au demo --out DIR" + ("" if inputs["photo"] == "astronaut" else f" --photo {inputs['photo']}")
    record = {"command": command, "steps": inputs["steps"], "device": inputs["device"],
              "readme_copy": f"cp DIR/{BEFORE_AFTER} {README_PICTURE}; cp DIR/{BEFORE_AFTER_RECORD} {Path(README_PICTURE).with_suffix('.json')}",
              "captions": list(tiles), "inputs": inputs, "sha256": pretrained.sha256_file(picture)}
    atomic_write_text(Path(out) / BEFORE_AFTER_RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return picture


def face_box(transform, size: tuple[int, int], scale: float = 2.2) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around the face of ``transform`` in a photo of ``size`` (w, h):
    ``scale`` times the landmarks' extent, a little above their centre (forehead and hair), clipped to the photo."""
    if transform.landmarks is None:
        return 0, 0, size[0], size[1]
    pts = np.asarray(transform.landmarks, np.float64)
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    side = min(scale * max(x1 - x0, y1 - y0), *size)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * side
    left = int(round(min(max(cx - side / 2, 0), size[0] - side)))
    top = int(round(min(max(cy - side / 2, 0), size[1] - side)))
    return left, top, left + int(side), top + int(side)


def before_after(tiles: dict[str, np.ndarray], transform) -> np.ndarray:
    """The README's picture: each photo of ``tiles`` (caption -> uint8 [H, W, 3], all one size) cropped to
    :func:`face_box`, captioned, :data:`BEFORE_AFTER_COLUMNS` to a row. Returns uint8 [h, w, 3]."""
    from stylerig_au.edit.media import captioned_grid

    first = next(iter(tiles.values()))
    left, top, right, bottom = face_box(transform, (first.shape[1], first.shape[0]))
    crops = [image[top:bottom, left:right] for image in tiles.values()]
    return captioned_grid(crops, list(tiles), ncols=BEFORE_AFTER_COLUMNS, cell=BEFORE_AFTER_CELL)


def _aligned(photo: np.ndarray, transform, size: int) -> np.ndarray:
    """The aligned face the inversion targeted, re-cropped from the photo (uint8 [size, size, 3])."""
    from stylerig_au.align import crop_ffhq

    return crop_ffhq(photo, transform.landmarks, size)[0]


def _demo_edits(G, record: dict, original: np.ndarray, transform, out: Path, stem: str, device: str,
                result: DemoResult, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Render, paste back and write the :data:`DEMO_EDITS` the learned directions cover; record them in ``result``.

    Returns the pasted photos (name -> uint8 [H, W, 3]) in :data:`DEMO_EDITS` order. Without learned
    directions for ``G`` it writes nothing, returns {} and says so in ``result.not_done``.
    """
    import torch

    from stylerig_au.align import paste_back
    from stylerig_au.edit import Editor
    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.photo import OpenFaceMeasure
    from stylerig_au.imageio import save_image, to_uint8

    try:
        directions = load_default_directions(G)
    except StylerigError as err:
        result.not_done.append(f"AU editing: no learned AU directions for {G.name} yet ({err}); no edited image is written")
        return {}
    editor = Editor(G, directions, local=DEMO_LOCAL)
    edits = demo_edits()
    editors = {name: editor for name in edits if not name.endswith("_mapper")}
    try:
        from stylerig_au.edit.mapper import load_default_mapper

        editors["smile_mapper"] = Editor(G, method="mapper", mapper=load_default_mapper(G, device=device),
                                         local=DEMO_LOCAL)
    except StylerigError as err:
        del edits["smile_mapper"]
        result.not_done.append(f"AU mapper: none for {G.name} ({err}); the demo edits use the linear directions only")
    latent = {**record, "ws": record["ws"].float().to(device)}
    measure = OpenFaceMeasure()
    images: dict[str, torch.Tensor] = {}
    pasted_all: dict[str, np.ndarray] = {}
    for name, edit in edits.items():
        missing = [au for au in edit if au not in editors[name].aus]
        if missing:
            result.not_done.append(f"edit '{name}': the directions have no AU{', AU'.join(map(str, missing))}")
            continue
        images[name] = editors[name].render(latent, edit)
        face = to_uint8(images[name][0])
        pasted = paste_back(original, face, transform)
        result.files[f"edit_{name}"] = save_image(out / f"{stem}_{name}.png", pasted, value_range=(0, 255))
        result.edits[name] = {"edit": repr(edit), "aus": DEMO_EDITS[name], "file": str(result.files[f"edit_{name}"])}
        pasted_all[name] = pasted
        log(f"edit {name}: {edit!r}")
    if not images:
        return pasted_all
    # How much did the AUs move? OpenFace on the rendered faces (a detector the directions may have learned from).
    try:
        before = measure(editor.render(latent))  # (unedited: the same render with or without locality)
    except StylerigError as err:
        result.not_done.append(f"measuring the edits' AU change with OpenFace (on the reconstruction): {err}")
        return pasted_all
    from stylerig_au.metrics import identity_distances

    recon = editor.render(latent)
    for name, img in images.items():
        # Is it still the same person? dlib (the judge) and SFace, edited face against the unedited reconstruction
        try:
            both = identity_distances(recon, img, device=device, shared_frame=True)
            result.edits[name]["identity_to_reconstruction"] = {"dlib": round(float(both["dlib"][0]), 4),
                                                               "sface": round(float(both["sface"][0]), 4)}
        except StylerigError as err:
            result.not_done.append(f"identity of edit '{name}' to the reconstruction: {err}")
        try:
            after = measure(img)
        except StylerigError as err:
            result.not_done.append(f"measuring edit '{name}' with OpenFace: {err}")
            continue
        result.edits[name]["openface_change"] = {f"AU{au}": round(float(after[au][0] - before[au][0]), 3) for au in edits[name]}
    _measure_motion_transfer(editors, edits, latent, recon, before, measure, device, result)
    return pasted_all


def _measure_motion_transfer(editors: dict, edits: dict, latent: dict, recon, before, measure, device: str,
                             result: DemoResult) -> None:
    """The same edits shown by motion transfer (``edit --motion``, :mod:`stylerig_au.edit.motion`): their
    identity to the reconstruction and OpenFace's AU change, recorded under each edit's ``motion_transfer``
    (the picture shows the default, local edits)."""
    from stylerig_au.edit import Editor
    from stylerig_au.metrics import identity_distances

    moving: dict[int, Editor] = {}
    for name, edit in edits.items():
        if name not in result.edits:
            continue
        source = editors[name]
        if id(source) not in moving:
            moving[id(source)] = Editor(source.G, source.directions, method=source.method, mapper=source.mapper,
                                        motion=True)
            try:
                moving[id(source)].faces(latent)  # found once here, reused by each edit's render
            except StylerigError:
                result.not_done.append("motion transfer of the edits: dlib finds no face in the reconstruction")
                return
        try:
            img = moving[id(source)].render(latent, edit)
            both = identity_distances(recon, img, device=device, shared_frame=True)
            after = measure(img)
        except StylerigError as err:
            result.not_done.append(f"motion transfer of edit '{name}': {err}")
            continue
        result.edits[name]["motion_transfer"] = {
            "identity_to_reconstruction": {"dlib": round(float(both["dlib"][0]), 4), "sface": round(float(both["sface"][0]), 4)},
            "openface_change": {f"AU{au}": round(float(after[au][0] - before[au][0]), 3) for au in edit}}
