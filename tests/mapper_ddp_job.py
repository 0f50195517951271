"""Run by tests/test_mapper.py under ``torchrun --nproc_per_node 2``: a few mapper steps on a tiny StyleGAN2 with DDP (gloo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from conftest import make_tiny_stylegan2
from stylerig_au.edit.mapper import new_mapper
from stylerig_au.edit.mapper_train import MapperLoss, MapperTrainSettings, batch_latents, init_distributed, sample_deltas, train_mapper
from stylerig_au.perceptual import LPIPS
from test_mapper import make_dirs, tiny_student


def main(out: Path) -> None:
    G = make_tiny_stylegan2()
    torch.manual_seed(0)
    mapper = new_mapper(G, make_dirs(G), num_samples=256, hidden=16, bottleneck=8)
    settings = MapperTrainSettings(steps=3, batch=2, image_size=64, save_every=10, lr=1e-3, identity_net="lpips")
    student, lpips = tiny_student(), LPIPS()
    d, _ = init_distributed("cpu")
    # this rank's own first-step loss, before any averaging
    ws = batch_latents(G, 0, d, settings, mapper.w_std, "cpu")
    delta, edited = sample_deltas(mapper.aus, settings.batch, settings, torch.Generator().manual_seed(d.rank))
    with torch.no_grad():
        own = float(MapperLoss(student, lpips, mapper.aus, settings)(mapper, G, ws, delta, edited)["total"])
    result = train_mapper(G, student, lpips, mapper, settings, out / "state.pt", progress=False)
    torch.save({"state": mapper.state_dict(), "world": result["world"], "history": result["history"], "rank_losses": own},
               out / f"rank{int(os.environ['RANK'])}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
