"""``stylerig-au detect PHOTO... [--json] [--detector openface|student]``: a table of AU intensities per face.

Both detectors start from dlib's 68 landmarks of each face: OpenFace fits its shape model to them;
the student FFHQ-aligns the face from them (the crop of :func:`stylerig_au.align.align_image`, 256²)
and runs its network on the aligned face.

A photo that fails (unreadable, no face) prints one ``error: ...`` line; the others are still
reported and the exit status is 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from stylerig_au.errors import StylerigError


@click.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per face) instead of a table.")
@click.option("--detector", type=click.Choice(["openface", "student"]), default="openface", show_default=True, help="AU estimator: OpenFace 2.2 static SVRs (non-commercial licence) or the student CNN distilled from them (fast, differentiable).")
@click.option("--all-faces", is_flag=True, help="Report every face found, not only the most confident one.")
@click.option("--upsample", default=1, show_default=True, type=click.IntRange(0, 4), help="Times dlib doubles the photo before detection (for small faces).")
@click.option("--detect-max-side", type=click.IntRange(64, None), default=None, help="Find faces on a copy shrunk to this longer side (about 5x faster on 1024-px photos; landmarks are still fitted at full size). Default: full size.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Detector file: a converted OpenFace model or a student .pt from train-detector (default: the registry's).")
@click.option("--accept-license", is_flag=True, help="Accept OpenFace's academic, non-commercial licence if its models must be fetched.")
def detect(photos: tuple[Path, ...], as_json: bool, detector: str, all_faces: bool, upsample: int, detect_max_side: int | None, model: Path | None, accept_license: bool) -> None:
    """Estimate the intensities (0–5) of 17 facial Action Units in PHOTOS (files or folders)."""
    from stylerig_au.au.detect import detect_aus, make_detector
    from stylerig_au.imageio import list_images

    files = list_images(photos)
    if not files:
        raise StylerigError("no photos given (folders had no image files)")
    estimator = make_detector(detector, model=model, accept_license=accept_license)
    results, failed = [], 0
    for path in tqdm(files, desc="detect", unit="photo", disable=len(files) < 2 or as_json):
        try:
            results.extend(detect_aus([path], estimator, all_faces=all_faces, upsample=upsample, detect_max_side=detect_max_side))
        except StylerigError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
    elif results:
        names = [f"AU{n:02d}" for n in estimator.aus]
        width = max(len(_row_name(r)) for r in results)
        click.echo(" ".join([f"{'face':<{width}}"] + [f"{n:>5}" for n in names]))
        for r in results:
            click.echo(" ".join([f"{_row_name(r):<{width}}"] + [f"{r.intensities[n]:5.2f}" for n in estimator.aus]))
    if failed:
        raise StylerigError(f"{failed} of {len(files)} photos failed (see above)")


def _row_name(result) -> str:
    name = Path(result.source).name
    return f"{name}#{result.face}" if result.face else name
