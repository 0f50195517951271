"""``stylerig-au generate``: sample faces from a generator for a list of seeds, plus a grid."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import click

from stylerig_au.commands._numbers import MAX_SEED, PSI
from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError

GRID_PROVENANCE = {"tool": "generate", "file": "grid"}  # a summary of the run: any generate may remake it


def parse_seeds(text: str) -> list[int]:
    """``'0-7'``, ``'1,5,9'`` or ``'0-3,10'`` -> the seeds in the order given (repeats dropped)."""
    seeds: list[int] = []
    seen: set[int] = set()
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise StylerigError(f"bad seed list {text!r}: expected numbers and ranges like '0-7' or '1,5,9'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise StylerigError(f"bad seed range {part!r}: the end is below the start")
        if hi > MAX_SEED:
            raise StylerigError(f"seed {hi} is too large; seeds must be in 0..{MAX_SEED}")
        if hi - lo >= 100000:
            raise StylerigError(f"seed range {part!r} asks for {hi - lo + 1} images; use at most 100000 per range")
        for s in range(lo, hi + 1):
            if s not in seen:
                seen.add(s)
                seeds.append(s)
    return seeds


def seed_grid(images, seeds: list[int], cell: int | None = None):
    """uint8 [N, H, W, 3] -> one uint8 [h, w, 3] grid, about square, each face under its label 'seed N'.

    Faces are ``cell`` px (default: their own size, at most 256)."""
    from stylerig_au.edit.media import captioned_grid

    cell = cell or min(256, images.shape[1])
    return captioned_grid(list(images), [f"seed {s}" for s in seeds], ncols=math.ceil(math.sqrt(len(images))), cell=cell)


@click.command()
@click.option("--seeds", default="0-7", show_default=True, help="Seeds to render: ranges and lists, e.g. '0-7' or '1,5,9'.")
@click.option("--psi", type=PSI, default=0.7, show_default=True, help="Truncation psi (1 = none, 0 = the average face).")
@click.option("--out", "out_dir", type=OutputFolder(), required=True,
              help="Output folder for seed####.png and grid.png (created if missing).")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True,
              help="Generator name, or a checkpoint path: NVIDIA .pkl, rosinality .pt or a stylerig_au .pt.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda or cuda:N.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True,
              help="StyleGAN2 noise inputs: fixed buffers, fresh random, or off (MobileStyleGAN has baked-in noise).")
@click.option("--batch", type=click.IntRange(1, 256), default=4, show_default=True, help="Images per forward pass.")
@click.option("--grid/--no-grid", default=True, show_default=True, help="Also write grid.png with all images.")
@click.option("--overwrite", is_flag=True, help="Replace existing seed####.png / grid.png that generate did not make with these settings.")
def generate(seeds: str, psi: float, out_dir: Path, generator_spec: str, device: str, noise_mode: str, batch: int,
             grid: bool, overwrite: bool) -> None:
    """Render one image per seed with a generator, and a grid of them all.

    An existing seed####.png is replaced only when generate made it with the same generator, psi and
    noise mode (or with --overwrite); grid.png when generate made it.
    """
    import torch
    from tqdm import tqdm

    from stylerig_au.imageio import batch_to_uint8, save_image
    from stylerig_au.models import load_generator, seed_to_z
    from stylerig_au.outputs import check_replaceable, made_with

    seed_list = parse_seeds(seeds)
    device = resolve_device(device, allow_auto=True)
    if out_dir.exists() and not out_dir.is_dir():
        raise StylerigError(f"--out {out_dir} exists and is not a folder")
    made = {"tool": "generate", "generator": generator_spec, "psi": psi, "noise_mode": noise_mode}
    for s in seed_list:  # the overwrite rule (stylerig_au.outputs), before any work
        check_replaceable(out_dir / f"seed{s:04d}.png", overwrite=overwrite, made_here=made_with({**made, "seed": s}),
                          what="generate did not make it with these settings")
    if grid:
        check_replaceable(out_dir / "grid.png", overwrite=overwrite, made_here=made_with(GRID_PROVENANCE),
                          what="generate did not make it")
    G = load_generator(generator_spec, device=device)
    synth_kwargs = {}
    synthesis = G.synthesis.forward if isinstance(G.synthesis, torch.nn.Module) else G.synthesis
    if "noise_mode" in inspect.signature(synthesis).parameters:
        synth_kwargs["noise_mode"] = noise_mode
    elif noise_mode != "const":
        click.echo(f"note: {G.name} has fixed noise; --noise-mode {noise_mode} is ignored", err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    with torch.no_grad(), tqdm(total=len(seed_list), desc="generate", unit="img") as bar:
        for start in range(0, len(seed_list), batch):
            chunk = seed_list[start:start + batch]
            z = torch.cat([seed_to_z(s, G.z_dim) for s in chunk]).to(device)
            w = G.mapping(z, psi=psi)
            img = batch_to_uint8(G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1), **synth_kwargs))
            for s, array in zip(chunk, img):
                save_image(out_dir / f"seed{s:04d}.png", array, provenance={**made, "seed": s})
            images.append(img)
            bar.update(len(chunk))
    if grid:
        import numpy as np

        save_image(out_dir / "grid.png", seed_grid(np.concatenate(images), seed_list), provenance=GRID_PROVENANCE)
    click.echo(f"wrote {len(seed_list)} image(s){' and grid.png' if grid else ''} to {out_dir} ({G.name}, psi={psi})")
