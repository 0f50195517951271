"""``stylerig-au demo``: a real photo through every stage that exists (what ``make demo`` runs), AU edits included."""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device


@click.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=OutputFolder(), help="Output folder.")
@click.option("--photo", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Your own photo instead of scikit-image's astronaut.")
@click.option("--steps", default=None, type=click.IntRange(1), help="Inversion steps [default: 60, the quick setting, on a CPU; 500 on a GPU].")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--overwrite", is_flag=True, help="Replace the photo's latent in --out when it was made from another photo or with other --steps.")
def demo(out_dir: Path, photo: Path | None, steps: int | None, device: str, overwrite: bool) -> None:
    """Align, invert and paste back a real face, measure the reconstruction, edit its AUs (when learned
    directions exist for the generator) and write a grid."""
    from stylerig_au.demo import run_demo
    from stylerig_au.invert import default_steps, steps_note

    device = resolve_device(device)
    if steps is None:
        steps = default_steps(device)
        click.echo(steps_note(device), err=True)
    result = run_demo(out_dir, photo=photo, steps=steps, device=device, log=lambda m: click.echo(m, err=True), overwrite=overwrite)
    click.echo(f"demo written to {result.out_dir}/")
    for name, file in result.files.items():
        click.echo(f"  {name:15s} {file}")
    for name, value in result.metrics.items():
        click.echo(f"  {name:15s} {value:.3f}")
    for name, seconds in result.seconds.items():
        click.echo(f"  {name:15s} {seconds:.1f} s")
    for name, info in result.edits.items():
        change = ", ".join(f"{au} {v:+.2f}" for au, v in info.get("openface_change", {}).items())
        click.echo(f"  edit {name:10s} {info['edit']}" + (f"  (OpenFace: {change})" if change else ""))
    for line in result.not_done:
        click.echo(f"  not done: {line}")
