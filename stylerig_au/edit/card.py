"""The human side of a learned directions file: a Markdown model card and a preview grid (AUs × intensities)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from stylerig_au.edit.directions import LinearDirections

PREVIEW_VALUES = (-2.0, -1.0, 0.0, 1.0, 2.0)


def write_preview(G, directions: LinearDirections, path: str | os.PathLike, ws: torch.Tensor,
                  values: Sequence[float] = PREVIEW_VALUES, cell: int = 128) -> Path:
    """A PNG grid: one row per AU of ``directions`` (in its order), one column per intensity change, labelled.

    Args:
        ws: the latent to edit, [1, num_ws, w_dim].
    Returns:
        The path written.
    """
    from tqdm import tqdm

    from stylerig_au.edit.media import au_label, labelled_grid, value_label
    from stylerig_au.edit.spec import AU
    from stylerig_au.imageio import save_image, to_uint8

    rows = []
    with torch.no_grad():
        plain = to_uint8(G.synthesis(ws)[0])
        for au in tqdm(directions.aus, desc="preview", unit="AU"):
            rows.append([plain if v == 0 else to_uint8(G.synthesis(directions.apply(ws, AU(au, v)))[0]) for v in values])
    grid = labelled_grid(rows, [au_label(au, cell) for au in directions.aus], [value_label(v) for v in values], cell=cell)
    return save_image(path, grid, value_range=(0, 255))


def write_card(directions: LinearDirections, results: list, path: str | os.PathLike, preview: Path | None = None) -> Path:
    """A Markdown model card of a learned directions file: data, method, per-AU measurements, command."""
    from stylerig_au.au.vocab import AU
    from stylerig_au.fileio import atomic_write_text

    meta = directions.meta
    lines = [
        f"# Linear AU directions for `{directions.generator}`",
        "",
        f"- File: `{Path(path).with_suffix('.pt').name}` (format `stylerig-au/linear-directions`, read with "
        "`stylerig_au.edit.LinearDirections.load`).",
        f"- Made: {directions.created} by `{meta.get('command', 'stylerig-au learn-directions')}`.",
        f"- Data: {meta.get('samples')} generator samples (truncation psi {meta.get('samples_meta', {}).get('psi')}) "
        f"labelled by our OpenFace 2.2 static AU estimator; test edits measured on {meta.get('probes')} held-out latents.",
        f"- Method: {directions.method}.",
        "- Licence: Apache-2.0 like stylerig_au; the labels come from the OpenFace 2.2 AU models, whose licence is "
        "academic / non-commercial.",
        "- Pose read-out R² (cross-validated): "
        + ", ".join(f"{k} {v:.2f}" for k, v in meta.get("pose_cv_r2", {}).items()) + ".",
        "",
        "Per AU: how well a ridge read-out predicts the AU from w (cross-validated R²), the slot groups that",
        "carry it (measured), the change a +2 edit produced before calibration (mean over the probes), and",
        "the final scale (W units per AU unit). AUs marked *no* are not reliably expressed linearly by this",
        "generator: edits of them do little or change other things.",
        "",
        "| AU | name | CV R² | slot groups | +2 edit measured | scale | expressed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    expressed = set(meta.get("expressed", []))
    for r in results:
        name = AU[r.au].name if r.au in AU else "?"
        capped = " (step capped)" if r.step_capped else ""
        lines.append(f"| AU{r.au} | {name} | {r.cv_r2:.2f} | {'+'.join(r.groups)} | {r.achieved_before_calibration:+.2f}{capped} "
                     f"| {r.scale:.2f} | {'yes' if r.au in expressed else 'no'} |")
    if preview is not None:
        lines += ["", f"Preview (`{Path(preview).name}`): rows are the AUs above in order, columns are changes of "
                  + ", ".join(f"{v:+g}" for v in PREVIEW_VALUES) + " on one held-out latent."]
    lines += ["", "How well the edits work on held-out faces (achieved change, off-target drift, identity) is measured by "
              "`experiments/eval_edits.py`; see README."]
    return atomic_write_text(path, "\n".join(lines) + "\n")
