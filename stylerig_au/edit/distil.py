"""Distilling per-face refined edits into the one-pass mapper (issue 26's fourth lever).

The refinement (:mod:`stylerig_au.edit.refine`) reaches further and keeps the person better than the
mapper, but costs ~30 s a CPU edit. ``stylerig-au edited-samples DIR --refine-at K`` stores each refined
edit's Δw+ (field ``dw``) with the face's w and the request; :class:`DistilTargets` reads those rows and
:meth:`DistilTargets.loss` asks the mapper to give the same Δw+ for the same (w+, request) in one pass:

    distil = mean over rows, slots and dimensions of ((mapper(ws, delta) − dw) / w_std)²

(w_std: the per-dimension spread of w, so the loss is in units of the latent's natural spread).
Much of a refined Δw+ lies where the image does not change, and differs from face to face; so
:meth:`DistilTargets.image_loss` compares what the edits look like instead: the mapper's edit rendered
against the refined edit's stored image (LPIPS plus mean squared error, at the stored side). The rows
are drawn by step, so a resumed or repeated run sees the same ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stylerig_au.errors import StylerigError


class DistilTargets:
    """The refined edits of an edited-samples dataset, as mapper targets.

    Attributes:
        ws: float32 [n, num_ws, w_dim], each face's w repeated over W+ (as the refinement started from).
        delta: float32 [n, A], the request (the mapper's input) of each edit, columns ``aus`` (rows that ask
            for other AUs are left out).
        dw: float32 [n, num_ws, w_dim], the refined Δw+.
        images: uint8 [n, 3, S, S], the refined edits as the dataset stores them (S: its image side).
        seeds: int64 [n]; ``steps``: the refinement steps behind the stored edits; ``aus``: list of A ints.
    """

    def __init__(self, folder: str | os.PathLike, G, aus: list[int], steps: int | None = None, data=None) -> None:
        """Read ``folder`` (made by ``edited-samples --refine-at ...``) for generator ``G`` and a mapper of
        AUs ``aus``; ``steps``: which stored step count to use (default: the largest); ``data``: the folder's
        :class:`~stylerig_au.samples.Samples` when already loaded with its images (it is not read again)."""
        from stylerig_au.samples import load_samples

        folder = Path(folder)
        if data is None or data.images is None:
            data = load_samples(folder, with_images=True)
        if "dw" not in data.extra or "refine_steps" not in data.extra:
            raise StylerigError(f"{folder}: no edits' Δw+ stored here (made before they were, or not by edited-samples); "
                                "make it with `stylerig-au edited-samples DIR --refine-at 20`")
        if data.meta.get("generator") != G.name:
            raise StylerigError(f"{folder} holds edits of {data.meta.get('generator')}, not of {G.name}")
        have = [int(a) for a in data.meta.get("aus", [])]
        missing = [a for a in aus if a not in have]
        if missing:
            raise StylerigError(f"{folder}'s requests cover AU {have}, not the mapper's AU {', '.join(map(str, missing))}")
        counts = data.extra["refine_steps"]
        refined = sorted({int(k) for k in counts.tolist() if k > 0})
        if not refined:
            raise StylerigError(f"{folder} holds no refined edits; make it with `stylerig-au edited-samples DIR --refine-at 20`")
        self.steps = refined[-1] if steps is None else int(steps)
        if self.steps not in refined:
            raise StylerigError(f"{folder} stores edits refined for {refined} steps, not {self.steps}")
        cols = torch.tensor([have.index(a) for a in aus])
        others = torch.ones(len(have), dtype=torch.bool)
        others[cols] = False
        # rows asking for an AU the mapper does not edit cannot be its targets
        rows = ((counts == self.steps) & (data.extra["delta"][:, others] == 0).all(1)).nonzero().flatten()
        if not len(rows):
            raise StylerigError(f"{folder}: no refined edit asks only for AU the mapper edits ({', '.join(map(str, aus))})")
        dw = data.extra["dw"][rows].float()
        if tuple(dw.shape[1:]) != (G.num_ws, G.w_dim):
            raise StylerigError(f"{folder}: edits of shape {tuple(dw.shape[1:])}, the generator's W+ is {(G.num_ws, G.w_dim)}")
        if not torch.isfinite(dw).all():
            raise StylerigError(f"{folder}: some stored edits are not finite; delete their chunks and rebuild")
        self.aus = list(aus)
        self.seeds = data.seeds[rows]
        self.ws = data.w[rows].float()[:, None].repeat(1, G.num_ws, 1)
        self.delta = data.extra["delta"][rows][:, cols].float()
        self.dw = dw
        self.images = data.images[rows]
        self.folder = str(folder)

    def __len__(self) -> int:
        return len(self.dw)

    def batch(self, step: int, size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Row indices int64 [min(size, n)] of training step ``step`` on process ``rank`` of ``world``:
        a permutation seeded by (step, rank), so each step and process sees its own rows, reproducibly."""
        gen = torch.Generator().manual_seed(7_919 * (step * world + rank) + 17)
        return torch.randperm(len(self), generator=gen)[:min(size, len(self))]

    def image_loss(self, mapper, G, lpips, rows: torch.Tensor, w_std: torch.Tensor) -> torch.Tensor:
        """Scalar: LPIPS + mean squared error between G's render of ``ws + mapper(ws, delta)`` and the stored
        refined image of each of ``rows``, both at the stored side, in [-1, 1]."""
        from stylerig_au.edit.mapper_train import to_side

        device = w_std.device
        ws = self.ws[rows].to(device)
        edit = to_side(G.synthesis(ws + mapper(ws, self.delta[rows].to(device))), self.images.shape[-1]).clamp(-1, 1)
        want = self.images[rows].to(device).float() / 127.5 - 1
        return lpips(edit, want).mean() + (edit - want).pow(2).mean()

    def loss(self, mapper, rows: torch.Tensor, w_std: torch.Tensor) -> torch.Tensor:
        """Scalar: mean ((mapper(ws, delta) − dw) / w_std)² over ``rows`` (a :meth:`batch`), on the mapper's device."""
        device = w_std.device
        step = mapper(self.ws[rows].to(device), self.delta[rows].to(device))
        return ((step - self.dw[rows].to(device)) / w_std).pow(2).mean()
