"""``stylerig-au sweep PHOTO_OR_LATENT --aus 1,2,4,6,12,26 --values -2,-1,0,1,2 --out grid.png``.

One row per AU, one column per relative change (0 is the unedited reconstruction), each cell the
edited aligned face; rows and columns are labelled unless ``--no-labels``.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._editing import common_options, source_argument, start
from stylerig_au.commands._paths import OutputFile


@click.command()
@source_argument
@click.option("--aus", "aus_text", default="1,2,4,6,12,26", show_default=True, help="AUs, one row each (numbers, comma-separated).")
@click.option("--values", "values_text", default="-2,-1,0,1,2", show_default=True,
              help="Relative changes in AU intensity steps, one column each.")
@click.option("--out", required=True, type=OutputFile(), help="Output grid image (.png, .jpg, ...).")
@click.option("--cell", default=256, show_default=True, type=click.IntRange(16, 2048), help="Side of one face in the grid.")
@click.option("--labels/--no-labels", default=True, show_default=True, help="Label rows with AUs and columns with changes.")
@common_options
def sweep(source: Path, aus_text: str, values_text: str, out: Path, cell: int, labels: bool, **options) -> None:
    """Grid of the face in PHOTO_OR_LATENT with each AU (rows) moved by each value (columns).

    \b
    Example:
      stylerig-au sweep me.jpg --aus 4,12,26 --values -2,0,2 --out sweep.png
    """
    from tqdm import tqdm

    from stylerig_au.au.vocab import au_number
    from stylerig_au.edit import media
    from stylerig_au.edit.photo import check_image_suffix, render_face
    from stylerig_au.edit.spec import AU, check_change
    from stylerig_au.edit.syntax import parse_number_list
    from stylerig_au.errors import StylerigError
    from stylerig_au.imageio import check_image_output, save_image

    items = [t for t in aus_text.replace(" ", ",").split(",") if t]
    if not items:
        raise StylerigError("--aus is empty; give AU numbers such as 1,2,4,6,12,26")
    aus = list(dict.fromkeys(au_number(t) for t in items))
    values = [check_change(v, "--values:") for v in parse_number_list(values_text, "--values")]
    check_image_suffix(out)
    check_image_output(out, media.grid_size(len(aus), len(values), cell, labels=labels))
    session = start(source, out, aus_in_use=aus, **options)
    rows = []
    with tqdm(total=len(aus) * len(values), desc="sweep", unit="face", leave=False) as bar:
        recon = None
        for au in aus:
            row = []
            for v in values:
                if v == 0:  # no change: the reconstruction, rendered once
                    recon = recon if recon is not None else render_face(session.editor, session.subject)
                    row.append(recon)
                else:
                    row.append(render_face(session.editor, session.subject, AU(au, v)))
                bar.update(1)
            rows.append(row)
    if labels:
        row_labels = [media.au_label(au, cell) for au in aus]
        col_labels = [media.value_label(v) for v in values]
        grid = media.labelled_grid(rows, row_labels, col_labels, cell=cell)
    else:
        grid = media.labelled_grid(rows, cell=cell)
    save_image(out, grid)
    click.echo(f"wrote a {len(aus)}x{len(values)} sweep ({grid.shape[1]}x{grid.shape[0]} px) to {out}")
