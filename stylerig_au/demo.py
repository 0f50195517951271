"""The end-to-end demo behind ``make demo``: a real photo through every stage that exists today.

Stages: load a public-domain photo (scikit-image's astronaut, or the user's own) → FFHQ-align it →
invert it into the default generator's W+ (a quick CPU setting unless told otherwise) → paste the
reconstruction back into the photo → measure the reconstruction (LPIPS, identity distance) → write a
grid. AU editing is not implemented yet; the demo says so instead of pretending.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stylerig_au.errors import StylerigError

# Measured on 2 CPU cores, see README: a recognisable reconstruction in a few minutes.
QUICK_STEPS = 60
QUICK_LR = 0.08


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    not_done: list[str] = field(default_factory=list)


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
) -> DemoResult:
    """Run every available stage on one photo; write results into ``out_dir``.

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
    from stylerig_au.metrics import identity_distance, lpips
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
    original = load_image(photo_path)
    result.files["photo"] = photo_path

    tick = time.perf_counter()
    G = load_generator("mobilestylegan-ffhq-1024", device=device)
    result.seconds["load generator"] = time.perf_counter() - tick
    log(f"generator: {G.name}, {G.resolution}x{G.resolution}, W+ {G.num_ws}x{G.w_dim}")

    tick = time.perf_counter()
    config = InvertConfig(steps=steps, lr=QUICK_LR)
    (inverted,) = invert_files(G, [photo_path], out, config, batch_size=1, device=device, log=log, grid_name=None)
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
    result.metrics["identity_distance"] = float(identity_distance(aligned_face, recon)[0])
    result.seconds["metrics"] = time.perf_counter() - tick

    grid = make_grid([original, aligned_face, recon, pasted], ncols=4, cell=256)
    result.files["grid"] = save_image(out / "demo_grid.png", grid, value_range=(0, 255))
    result.not_done.append("AU editing (learned directions, AU mapper) is not implemented yet: no edited image is written")

    summary = {
        "files": {k: str(v) for k, v in result.files.items()},
        "metrics": result.metrics,
        "seconds": result.seconds,
        "steps": steps,
        "device": device,
        "not_done": result.not_done,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _aligned(photo: np.ndarray, transform, size: int) -> np.ndarray:
    """The aligned face the inversion targeted, re-cropped from the photo (uint8 [size, size, 3])."""
    from stylerig_au.align import crop_ffhq

    return crop_ffhq(photo, transform.landmarks, size)[0]
