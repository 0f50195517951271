"""Sample a grid of generator faces (default: MobileStyleGAN FFHQ-1024) to eyeball that they look like faces.

    python experiments/sample_grid.py --seeds 0-7 --psi 0.7 --cell 256 \
        --out experiments/results/mobilestylegan_samples.png
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from stylerig_au.imageio import make_grid, save_image
from stylerig_au.models import load_generator

RESULTS = Path(__file__).resolve().parent / "results"


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


@click.command()
@click.option("--generator", default="mobilestylegan-ffhq-1024", show_default=True,
              help="Generator name or checkpoint path.")
@click.option("--seeds", default="0-7", show_default=True, help="z seeds (numpy default_rng), e.g. '0-7' or '1,5,9'.")
@click.option("--psi", default=0.7, show_default=True, help="Truncation psi.")
@click.option("--cell", default=256, show_default=True, help="Size of each image in the grid (pixels).")
@click.option("--cols", default=4, show_default=True, help="Images per row.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=RESULTS / "mobilestylegan_samples.png", show_default=True, help="Output PNG.")
def main(generator: str, seeds: str, psi: float, cell: int, cols: int, out: Path) -> None:
    G = load_generator(generator)
    images = []
    for seed in tqdm(parse_seeds(seeds), desc="sampling", unit="img"):
        z = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, G.z_dim)).astype(np.float32))
        with torch.no_grad():
            img = G.synthesis(G.mapping(z, psi=psi)[:, None].repeat(1, G.num_ws, 1))
            factor = max(1, G.resolution // cell)
            img = torch.nn.functional.avg_pool2d(img, factor) if factor > 1 else img
        images.append(img[0].clamp(-1, 1))
    save_image(out, make_grid(images, ncols=cols, cell=cell))
    click.echo(f"wrote {out} ({len(images)} faces, psi {psi})")


if __name__ == "__main__":
    main()
