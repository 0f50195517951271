"""The end-to-end demo behind ``make demo``: a real photo through every stage that exists today.

Stages: load a public-domain photo (scikit-image's astronaut, or the user's own) → FFHQ-align it →
invert it into the default generator's W+ (a quick CPU setting unless told otherwise) → paste the
reconstruction back into the photo → measure the reconstruction (LPIPS, dlib and SFace identity distances) → when
learned AU directions exist for the generator, edit a few AUs (smile, brow lowerer, jaw drop, brow
raise), paste each edit back and measure its AU change with OpenFace → write a grid. Whatever is
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

# Measured on 2 CPU cores, see README: a recognisable reconstruction in a few minutes.
QUICK_STEPS = 60
QUICK_LR = 0.08

# The demo's edits (each AU +2 intensity steps): name -> the AUs it moves (built in _demo_edits).
DEMO_EDITS: dict[str, str] = {
    "smile": "AU6 + AU12 (cheek raiser + lip corner puller)",
    "brow_lowerer": "AU4 (brow lowerer)",
    "jaw_drop": "AU26 (jaw drop)",
    "brow_raise": "AU1 + AU2 (inner + outer brow raiser)",
    "smile_mapper": "AU6 + AU12 by the AU-conditioned mapper (instead of the linear directions)",
}


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
    from stylerig_au.imageio import load_image, make_grid, save_image, to_uint8
    from stylerig_au.invert import InvertConfig, invert_files, load_latent, render_latent
    from stylerig_au.metrics import identity_distance, lpips, sface_distance
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
                                 + [out / "demo_grid.png", out / "demo_summary.json"], [photo_path])
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
    result.metrics["identity_distance"] = float(identity_distance(aligned_face, recon, shared_frame=True)[0])  # dlib's, the judge
    result.metrics["identity_sface"] = float(sface_distance(aligned_face, recon, device=device, shared_frame=True)[0])
    result.seconds["metrics"] = time.perf_counter() - tick

    cells = [original, aligned_face, recon, pasted]
    tick = time.perf_counter()
    edited = _demo_edits(G, record, original, transform, out, inverted.stem, device, result, log)
    if edited:
        result.seconds["edits"] = time.perf_counter() - tick
        cells += edited + [np.full_like(original, 255)] * (-len(edited) % 4)

    grid = make_grid(cells, ncols=4, cell=256)
    result.files["grid"] = save_image(out / "demo_grid.png", grid, value_range=(0, 255))

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


def _aligned(photo: np.ndarray, transform, size: int) -> np.ndarray:
    """The aligned face the inversion targeted, re-cropped from the photo (uint8 [size, size, 3])."""
    from stylerig_au.align import crop_ffhq

    return crop_ffhq(photo, transform.landmarks, size)[0]


def _demo_edits(G, record: dict, original: np.ndarray, transform, out: Path, stem: str, device: str,
                result: DemoResult, log: Callable[[str], None]) -> list[np.ndarray]:
    """Render, paste back and write the :data:`DEMO_EDITS` the learned directions cover; record them in ``result``.

    Returns the pasted photos (uint8 [H, W, 3]) in :data:`DEMO_EDITS` order. Without learned directions for
    ``G`` it writes nothing, returns [] and says so in ``result.not_done``.
    """
    import torch

    from stylerig_au.align import paste_back
    from stylerig_au.edit import AU, Editor, presets
    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.photo import OpenFaceMeasure
    from stylerig_au.imageio import save_image, to_uint8

    try:
        directions = load_default_directions(G)
    except StylerigError as err:
        result.not_done.append(f"AU editing: no learned AU directions for {G.name} yet ({err}); no edited image is written")
        return []
    editor = Editor(G, directions)
    edits = {"smile": 2 * presets.smile, "brow_lowerer": AU(4, +2), "jaw_drop": AU(26, +2), "brow_raise": 2 * presets.brow_raise}
    editors = dict.fromkeys(edits, editor)
    try:
        from stylerig_au.edit.mapper import load_default_mapper

        editors["smile_mapper"] = Editor(G, method="mapper", mapper=load_default_mapper(G, device=device))
        edits["smile_mapper"] = 2 * presets.smile
    except StylerigError as err:
        result.not_done.append(f"AU mapper: none for {G.name} ({err}); the demo edits use the linear directions only")
    latent = {**record, "ws": record["ws"].float().to(device)}
    measure = OpenFaceMeasure()
    images: dict[str, torch.Tensor] = {}
    pasted_all = []
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
        pasted_all.append(pasted)
        log(f"edit {name}: {edit!r}")
    if not images:
        return pasted_all
    # How much did the AUs move? OpenFace on the rendered faces (a detector the directions may have learned from).
    try:
        before = measure(editor.render(latent))
    except StylerigError as err:
        result.not_done.append(f"measuring the edits' AU change with OpenFace (on the reconstruction): {err}")
        return pasted_all
    for name, img in images.items():
        try:
            after = measure(img)
        except StylerigError as err:
            result.not_done.append(f"measuring edit '{name}' with OpenFace: {err}")
            continue
        result.edits[name]["openface_change"] = {f"AU{au}": round(float(after[au][0] - before[au][0]), 3) for au in edits[name]}
    return pasted_all
