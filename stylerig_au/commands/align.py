"""``stylerig-au align PHOTO... --out DIR``: FFHQ-align the faces of photos.

For each photo writes ``<stem>.png`` (the aligned face) and ``<stem>.json`` (its transform, for
paste-back, with the photo's sha256 and the settings); with ``--all-faces`` ``<stem>_face<k>.png/.json``
for each face, left to right. Existing files follow the overwrite rule of :mod:`stylerig_au.outputs`.
A photo that fails prints one ``error: FILE: ...`` line; the others are still processed and the
exit status is 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from stylerig_au.commands._paths import OutputFolder
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import check_replaceable


@click.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=OutputFolder(), help="Output folder.")
@click.option("--size", default=1024, show_default=True, type=click.IntRange(16, 4096), help="Side of the aligned image (the generator's resolution).")
@click.option("--all-faces", is_flag=True, help="Align every face found, not just the best one.")
@click.option("--upsample", default=1, show_default=True, type=click.IntRange(0, 4), help="Times dlib doubles the photo before detection (for small faces).")
@click.option("--overwrite", is_flag=True, help="Replace existing <stem>.png/.json that align did not make from the same photo with the same settings.")
def align(photos: tuple[Path, ...], out_dir: Path, size: int, all_faces: bool, upsample: int, overwrite: bool) -> None:
    """FFHQ-align the face(s) in PHOTOS (files or folders) into --out.

    An existing <stem>.png/.json is replaced only when align made it from the same photo with the same
    settings, or with --overwrite; a photo is never written over (aligning into its own folder is fine).
    """
    from stylerig_au.align import align_file
    from stylerig_au.imageio import list_images
    from stylerig_au.invert import sha256_file
    from stylerig_au.outputs import Inputs, refuse_shared_outputs

    files = list_images(photos)
    if not files:
        raise StylerigError("no photos given (folders had no image files)")
    # the overwrite rule (stylerig_au.outputs) before any work; with --all-faces the names are known
    # per face, and checked before each photo's files are written
    refuse_shared_outputs({path: [out_dir / f"{path.stem}{'_face<k>' if all_faces else ''}.png"] for path in files})
    inputs = Inputs(files)
    if not all_faces:
        inputs.refuse_as_outputs([o for path in files for o in _outputs(out_dir, path.stem)])
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"size": size, "all_faces": all_faces, "upsample": upsample}
    failed = 0
    for path in tqdm(files, desc="align", unit="photo", disable=len(files) < 2):
        try:
            digest = sha256_file(path) if path.is_file() else None
            faces = align_file(path, output_size=size, all_faces=all_faces, upsample=upsample)
            stems = [f"{path.stem}_face{k}" if all_faces else path.stem for k in range(len(faces))]
            if all_faces:  # without it the names were checked before the loop
                inputs.refuse_as_outputs([o for stem in stems for o in _outputs(out_dir, stem)])
            made = [{"source_sha256": digest, **settings, "face_index": k} for k in range(len(faces))]
            for stem, made_k in zip(stems, made):  # every face's files are checked before any is written
                for out in _outputs(out_dir, stem):
                    check_replaceable(out, overwrite=overwrite, made_here=lambda _: _made_by_align(out_dir, stem, made_k),
                                      what="align did not make it from this photo with these settings")
            for stem, face, made_k in zip(stems, faces, made):
                _write_face(out_dir, stem, path, face, made_k)
        except StylerigError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
    click.echo(f"aligned {len(files) - failed} of {len(files)} photos into {out_dir}")
    if failed:
        raise StylerigError(f"{failed} of {len(files)} photos failed (see above)")


def _outputs(out_dir: Path, stem: str) -> list[Path]:
    """The files align writes for one face: the aligned image and its transform."""
    return [out_dir / f"{stem}.png", out_dir / f"{stem}.json"]


def _made_by_align(out_dir: Path, stem: str, made: dict) -> bool:
    """True when ``<stem>.json`` records that align made ``<stem>.png/.json`` with ``made`` (photo hash, settings)."""
    try:
        meta = json.loads((out_dir / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in made.items())


def _write_face(out_dir: Path, stem: str, path: Path, face, made: dict) -> None:
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import save_image

    meta = {"source": str(path), **made, "box": list(face.box), "score": face.score, "transform": face.transform.to_dict()}
    save_image(out_dir / f"{stem}.png", face.image, provenance={"tool": "align", **made})
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(meta, indent=1))
