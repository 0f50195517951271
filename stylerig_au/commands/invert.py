"""``stylerig-au invert PHOTO_OR_DIR... --out DIR``: W+ inversion of photos.

Writes ``<stem>.pt`` (latent file, format in :mod:`stylerig_au.invert`) and ``<stem>_recon.png``
per face, and ``grid.png`` (photo | aligned | reconstruction, one row per face). Bad photos print
one ``error: FILE: ...`` line each and make the exit status 1; the others are still inverted.
Existing files follow the overwrite rule of :mod:`stylerig_au.outputs`; files invert wrote itself
are not inverted again when ``--out`` is also an input folder.
Works unchanged under ``torchrun`` (photos sharded across processes, one GPU each).
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._numbers import FiniteFloat, LEARNING_RATE, SEED
from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=OutputFolder(), help="Output folder.")
@click.option("--steps", default=None, type=click.IntRange(1),
              help="Optimisation steps [default: 500, the full setting, on a GPU; 60, the quick one, on a CPU].")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator name or checkpoint path.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024), help="Faces optimised together.")
@click.option("--lr", default=None, type=LEARNING_RATE, help="Peak Adam learning rate [default: 0.08 up to 120 steps, else 0.05].")
@click.option("--loss-size", default=256, show_default=True, type=click.IntRange(32, 1024), help="Side at which LPIPS and MSE are computed.")
@click.option("--w-reg", default=0.01, show_default=True, type=FiniteFloat(0, 1e6), help="Weight of the keep-W+-near-W penalty.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed.")
@click.option("--checkpoint-every", default=50, show_default=True, type=click.IntRange(0), help="Steps between resumable checkpoints (0: none); an interrupted run, rerun, resumes from the last one.")
@click.option("--aligned", is_flag=True, help="Inputs are already FFHQ-aligned square faces: skip detection.")
@click.option("--all-faces", is_flag=True, help="Invert every face of each photo (<stem>_face<k>).")
@click.option("--upsample", default=1, show_default=True, type=click.IntRange(0, 4), help="Detector upsampling (for small faces).")
@click.option("--overwrite", is_flag=True, help="Redo faces whose <stem>.pt exists (another photo's latent, other settings, "
              "or not a latent) and replace files invert did not make; without it such a face is an error and the "
              "others go on. A latent of the same photo with the same settings is always reused.")
def invert(
    inputs: tuple[Path, ...], out_dir: Path, steps: int | None, device: str, generator_spec: str, batch_size: int, lr: float | None,
    loss_size: int, w_reg: float, seed: int, checkpoint_every: int, aligned: bool, all_faces: bool, upsample: int,
    overwrite: bool,
) -> None:
    """Invert the faces in INPUTS (photos or folders of photos) into W+ latents in --out."""
    from stylerig_au.imageio import list_images
    from stylerig_au.invert import InvertConfig, default_lr, default_steps, invert_files, steps_note
    from stylerig_au.models import load_generator

    files = list_images(inputs)
    if not files:
        raise StylerigError("no photos given (folders had no image files)")
    device = resolve_device(device)
    if steps is None:
        steps = default_steps(device)
        click.echo(steps_note(device), err=True)
    G = load_generator(generator_spec, device=device)
    config = InvertConfig(steps=steps, lr=default_lr(steps) if lr is None else lr, loss_size=loss_size, w_reg_weight=w_reg, seed=seed, checkpoint_every=checkpoint_every)
    try:
        results = invert_files(
            G, files, out_dir, config, batch_size=batch_size, device=device, aligned=aligned, all_faces=all_faces,
            upsample=upsample, overwrite=overwrite, log=lambda m: click.echo(m, err=True),
        )
    except KeyboardInterrupt:
        click.echo(resume_note(out_dir, checkpoint_every), err=True)
        raise
    for r in results:
        if r.status == "done":
            click.echo(f"{r.stem}: lpips {r.losses['lpips']:.3f}  mse {r.losses['mse']:.4f}  {r.seconds:.1f} s  -> {r.latent}")
        elif r.status == "skipped":
            click.echo(f"{r.stem}: already inverted ({r.latent}); --overwrite to redo")
    failed = sum(r.status == "error" for r in results)
    if failed:
        raise StylerigError(f"{failed} of {len({r.source for r in results})} photos failed (see above)")


def resume_note(out_dir: Path, checkpoint_every: int) -> str:
    """What an interrupted inversion keeps and where a rerun of the same command starts."""
    if checkpoint_every == 0:
        return (f"interrupted: finished faces are kept in {out_dir}; with --checkpoint-every 0 there are no checkpoints, "
                "so a rerun starts the unfinished faces from step 0")
    return (f"interrupted: finished faces are kept in {out_dir}; rerun the same command to resume the others from "
            f"their last checkpoint (saved every {checkpoint_every} steps, so up to {checkpoint_every - 1} steps are redone)")
