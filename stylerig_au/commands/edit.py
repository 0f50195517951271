"""``stylerig-au edit PHOTO_OR_LATENT --au 12=+2 --out FILE``: one AU edit of a photo or a latent file.

A photo is aligned and inverted once (its latent is cached as ``<stem>.pt`` beside the output, or in
``--latent-dir``, and reused while the photo and settings are unchanged); the edited face is pasted
back into the photo at its own size. A latent file gives the edited aligned face.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from stylerig_au.commands._editing import (AU_HELP, IDENTITY_NET_CHOICES, PRESET_HELP, common_options, source_argument,
                                           start)
from stylerig_au.commands._numbers import FiniteFloat
from stylerig_au.commands._paths import OutputFile
from stylerig_au.errors import StylerigWarning


@click.command()
@source_argument
@click.option("--au", "aus", multiple=True, metavar="AU=[+-]N|AU=@N", help=AU_HELP)
@click.option("--preset", "preset_names", multiple=True, metavar="NAME[=STRENGTH]", help=PRESET_HELP)
@click.option("--out", required=True, type=OutputFile(), help="Output image (.png, .jpg, .webp, ...).")
@click.option("--face-out", type=OutputFile(), default=None,
              help="Also write the edited aligned face here.")
@click.option("--refine", type=click.IntRange(0, 1000), default=0, show_default=True, metavar="STEPS",
              help="Then refine the edit for this face with STEPS optimisation steps against the student AU "
                   "detector: other AUs and identity move less (about 1.5 s a step on a CPU; 20 is a good start).")
@click.option("--refine-colour", type=FiniteFloat(0, 1e6), default=0.0, show_default=True, metavar="WEIGHT",
              help="With --refine: also keep the colours inside the edited region (try 20: it removes the red lips "
                   "or white beard some mouth edits get; measured on 5 faces only).")
@click.option("--refine-geometry", type=FiniteFloat(0, 1e6), default=0.0, show_default=True, metavar="WEIGHT",
              help="With --refine: also ask each AU to move its facial features by their natural share of the change "
                   "(OpenFace's geometry term through the landmark net), so texture alone cannot pay for the edit.")
@click.option("--identity-net", type=click.Choice(IDENTITY_NET_CHOICES), default=IDENTITY_NET_CHOICES[0], show_default=True,
              help="With --refine: the face network of the identity term (dlib is the evaluations' judge, so a "
                   "refinement measured by it should not be trained on it).")
@common_options
def edit(source: Path, aus: tuple[str, ...], preset_names: tuple[str, ...], out: Path, face_out: Path | None,
         refine: int, refine_colour: float, refine_geometry: float, identity_net: str, **options) -> None:
    """Edit the Action Units of the face in PHOTO_OR_LATENT (a photo, or a .pt latent from `stylerig-au invert`).

    A photo is aligned and inverted once (its latent <stem>.pt is cached in --latent-dir and reused while
    the photo and settings stay the same); the edited face is pasted back into the photo at its own size.
    A latent file gives the edited aligned face.

    \b
    Examples:
      stylerig-au edit me.jpg --au 12=+2 --au 6=+1 --out me_smile.jpg
      stylerig-au edit me.jpg --preset smile=1.5 --out me_smile.png
      stylerig-au edit me.pt --au 4=@3 --out frown_face.png      (AU4 to intensity 3)
      stylerig-au edit me.pt --au 12=+2 --method mapper --refine 20 --out smile.png
    """
    from tqdm import tqdm

    from stylerig_au.edit.photo import check_image_suffix, render_face, save_edited
    from stylerig_au.edit.syntax import parse_edit_options
    from stylerig_au.imageio import check_image_output, save_image

    change = parse_edit_options(aus, preset_names)
    check_image_suffix(out)
    if face_out is not None:
        check_image_suffix(face_out)
    if refine_colour > 0 and refine == 0:
        raise click.UsageError("--refine-colour needs --refine STEPS")
    if refine_geometry > 0 and refine == 0:
        raise click.UsageError("--refine-geometry needs --refine STEPS")
    session = start(source, out, aus_in_use=list(change), measures=not change.is_relative, refine=refine,
                    refine_colour=refine_colour, refine_geometry=refine_geometry, refine_identity_net=identity_net, extra_outputs=(face_out,),
                    check_output=lambda size: check_image_output(out, size), **options)
    subject = session.subject
    notes: list[str] = []
    with tqdm(total=2, desc="edit", unit="step", leave=False) as bar:
        face = render_face(session.editor, subject, change)
        bar.update(1)
        if face_out is not None:
            save_image(face_out, face)
        image = save_edited(out, subject, face, note=notes.append)
        bar.update(1)
    for note in notes:  # after the bar, so that the line stands alone
        warnings.warn(note, StylerigWarning, stacklevel=1)
    kind = "photo" if subject.is_photo else "aligned face"
    click.echo(f"{change!r}: wrote the edited {kind} {image.shape[1]}x{image.shape[0]} to {out}")
