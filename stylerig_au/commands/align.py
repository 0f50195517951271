"""``stylerig-au align PHOTO... --out DIR``: FFHQ-align the faces of photos.

For each photo writes ``<stem>.png`` (the aligned face) and ``<stem>.json`` (its transform, for
paste-back); with ``--all-faces`` ``<stem>_face<k>.png/.json`` for each face, left to right.
A photo that fails prints one ``error: FILE: ...`` line; the others are still processed and the
exit status is 1.
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
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--size", default=1024, show_default=True, type=click.IntRange(16, 4096), help="Side of the aligned image (the generator's resolution).")
@click.option("--all-faces", is_flag=True, help="Align every face found, not just the best one.")
@click.option("--upsample", default=1, show_default=True, type=click.IntRange(0, 4), help="Times dlib doubles the photo before detection (for small faces).")
def align(photos: tuple[Path, ...], out_dir: Path, size: int, all_faces: bool, upsample: int) -> None:
    """FFHQ-align the face(s) in PHOTOS (files or folders) into --out."""
    from stylerig_au.align import align_file
    from stylerig_au.imageio import atomic_path, list_images, save_image

    files = list_images(photos)
    if not files:
        raise StylerigError("no photos given (folders had no image files)")
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in tqdm(files, desc="align", unit="photo", disable=len(files) < 2):
        try:
            faces = align_file(path, output_size=size, all_faces=all_faces, upsample=upsample)
        except StylerigError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        for k, face in enumerate(faces):
            stem = f"{path.stem}_face{k}" if all_faces else path.stem
            meta = {"source": str(path), "box": list(face.box), "score": face.score, "transform": face.transform.to_dict()}
            save_image(out_dir / f"{stem}.png", face.image)
            with atomic_path(out_dir / f"{stem}.json") as tmp:
                tmp.write_text(json.dumps(meta, indent=1))
    click.echo(f"aligned {len(files) - failed} of {len(files)} photos into {out_dir}")
    if failed:
        raise StylerigError(f"{failed} of {len(files)} photos failed (see above)")
