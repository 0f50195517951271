"""Distil dlib's 68-point shape predictor into the differentiable landmark net (:mod:`stylerig_au.au.landmark_net`).

Training data: FFHQ-aligned generator faces with their dlib landmarks, i.e. AU sample datasets
(:mod:`stylerig_au.samples`) and edited-sample datasets (:mod:`stylerig_au.edited_samples`, which pair
each face with an AU edit of it, so the net sees the expressions edits make). Each step shows the
faces under a random similarity transform (mirrored half of the time, the points re-ordered to
match) with colour jitter; the loss is the mean point-to-label distance in inter-ocular distances
(IOD), with a small floor so it stays smooth at zero.

Two held-out measures are written with the net (seeds kept out by :func:`~stylerig_au.au.student_train.split_by_seed`):

* ``nme``: the mean point error in IOD units (dlib's own labels are integer pixels at 1024², 0.4 % of the IOD);
* ``change``: on held-out (face, edit) pairs of edited-sample datasets, how the net's reading of *what
  the edit moved* agrees with dlib's, per :mod:`~stylerig_au.au.geometry` feature (correlation and
  mean absolute difference of the changes, IOD units) and per AU of OpenFace's geometry term. This is
  what a loss on the net's landmarks relies on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.au.landmark_net import FLIP, LandmarkConfig, LandmarkNet, save_landmark_net, to_pixels
from stylerig_au.errors import StylerigError

CKPT_FORMAT = "stylerig-au/landmark-net-train-state"
CKPT_VERSION = 1


@dataclass(frozen=True)
class LandmarkTrainSettings:
    """Everything that shapes a training run (a resumed run must use the same)."""

    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    holdout: float = 0.1
    input_width: int = 128
    max_shift: float = 0.03
    max_scale: float = 0.06
    max_rotate_deg: float = 8.0
    num_samples: int = 0

    def check(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise StylerigError("epochs and batch must be at least 1")
        if not self.lr > 0:
            raise StylerigError(f"the learning rate must be positive, got {self.lr}")


def iod(landmarks: torch.Tensor) -> torch.Tensor:
    """Inter-ocular distance [B] (between the eye centres) of landmarks [B, 68, 2], in their units."""
    return (landmarks[:, 36:42].mean(1) - landmarks[:, 42:48].mean(1)).norm(dim=-1)


def point_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean point-to-point distance [B] of two landmark sets [B, 68, 2], in units of ``target``'s IOD."""
    return (pred - target).norm(dim=-1).mean(1) / iod(target).clamp_min(1e-6)


def augment_with_landmarks(images: torch.Tensor, landmarks: torch.Tensor, gen: torch.Generator,
                           settings: LandmarkTrainSettings = LandmarkTrainSettings()) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly transformed, colour-jittered faces and their landmarks moved with them.

    Args:
        images: uint8 [B, 3, S, S] aligned faces; ``landmarks``: float [B, 68, 2] fractions of the side.
        gen: the CPU random generator every draw comes from.
    Returns:
        (float32 [B, 3, S, S] in [-1, 1], float32 [B, 68, 2] fractions; mirrored faces have their points
        re-ordered by :data:`~stylerig_au.au.landmark_net.FLIP`).
    """
    from stylerig_au.au.student_train import jitter_colour, random_affine

    x = images.float() / 127.5 - 1.0
    theta = random_affine(len(images), gen, settings.max_shift, settings.max_scale, settings.max_rotate_deg, flip=True)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # theta maps output coordinates to input ones: a point moves to A^-1 (p_in - t), in [-1, 1] coordinates
    a, t = theta[:, :, :2], theta[:, :, 2]
    p_in = landmarks.float() * 2 - 1
    p_out = torch.einsum("bij,bnj->bni", torch.linalg.inv(a), p_in - t[:, None])
    out = (p_out + 1) / 2
    mirrored = theta[:, 0, 0] < 0
    out[mirrored] = out[mirrored][:, FLIP]
    return jitter_colour(x, gen), out


@torch.no_grad()
def predict(net: LandmarkNet, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Landmark fractions float32 [N, 68, 2] of uint8 [N, 3, S, S] aligned faces (eval mode, CPU result)."""
    net.eval()
    device = next(net.parameters()).device
    out = [net(images[i:i + batch].to(device).float() / 127.5 - 1.0).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0, 68, 2)


def change_agreement(before_true: torch.Tensor, after_true: torch.Tensor, before_pred: torch.Tensor,
                     after_pred: torch.Tensor, openface=None) -> dict:
    """How the net's reading of what edits moved agrees with dlib's.

    Args:
        before_true, after_true: dlib landmarks [P, 68, 2] of P faces and of their edits (any one unit);
        before_pred, after_pred: the net's landmarks of the same images (same unit).
        openface: an :class:`~stylerig_au.au.openface.OpenFaceAU`, to compare its geometry term's changes too.
    Returns:
        {"features": {name: {"r", "mad", "spread"}}, "median_r", and with ``openface`` "geometry_aus":
        {AU: {"r", "mad", "spread"}}}: correlation of the changes over the pairs, mean absolute difference
        of the changes and the spread (std) of dlib's changes; features in IOD units, AUs in intensity units.
    """
    from stylerig_au.au.geometry import measure

    def agree(true: np.ndarray, pred: np.ndarray) -> dict:
        ok = np.isfinite(true) & np.isfinite(pred)
        true, pred = true[ok], pred[ok]
        r = float(np.corrcoef(true, pred)[0, 1]) if len(true) > 2 and true.std() > 0 and pred.std() > 0 else float("nan")
        return {"r": round(r, 4), "mad": round(float(np.abs(true - pred).mean()), 5), "spread": round(float(true.std()), 5)}

    feats = {}
    mt = {k: measure(after_true.numpy())[k] - v for k, v in measure(before_true.numpy()).items()}
    mp = {k: measure(after_pred.numpy())[k] - v for k, v in measure(before_pred.numpy()).items()}
    for name in mt:
        feats[name] = agree(mt[name], mp[name])
    out = {"pairs": int(len(before_true)), "features": feats,
           "median_r": round(float(np.nanmedian([f["r"] for f in feats.values()])), 4)}
    if openface is not None:
        with torch.no_grad():
            gt = (openface.geometry_part(after_true.double()) - openface.geometry_part(before_true.double())).numpy()
            gp = (openface.geometry_part(after_pred.double()) - openface.geometry_part(before_pred.double())).numpy()
        out["geometry_aus"] = {str(a): agree(gt[:, j], gp[:, j]) for j, a in enumerate(openface.aus)}
        out["geometry_median_r"] = round(float(np.nanmedian([v["r"] for v in out["geometry_aus"].values()])), 4)
    return out


def natural_geometry_share(openface, landmarks_px: torch.Tensor, aus: torch.Tensor) -> dict[str, float]:
    """How much of each AU's OpenFace reading its geometry term carries across natural faces.

    Args:
        openface: an :class:`~stylerig_au.au.openface.OpenFaceAU`; ``landmarks_px``: float [N, 68, 2] dlib
            landmarks (pixels); ``aus``: float [N, 17] OpenFace's readings of the same faces (its AU order).
    Returns:
        {AU: slope} of the geometry term on the reading (least squares over the N faces): an AU rising
        by 1 across faces moves its geometry term by about ``slope``.
    """
    with torch.no_grad():
        geo = openface.geometry_part(landmarks_px.double())
    x = aus.double() - aus.double().mean(0)
    y = geo - geo.mean(0)
    slope = (x * y).sum(0) / (x * x).sum(0).clamp_min(1e-9)
    return {str(a): round(float(v), 4) for a, v in zip(openface.aus, slope)}


def _lr_at(step: int, total: int, warm: int, lr: float) -> float:
    if step < warm:
        return lr * (step + 1) / warm
    return 0.5 * lr * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_landmark_net(images: torch.Tensor, landmarks: torch.Tensor, seeds: torch.Tensor, out: str | os.PathLike,
                       settings: LandmarkTrainSettings, checkpoint: str | os.PathLike, *,
                       pairs: torch.Tensor | None = None, groups: torch.Tensor | None = None, openface=None,
                       device: str = "cpu", progress: bool = True, log: Callable[[str], None] = print,
                       data_note: str = "", labels: torch.Tensor | None = None) -> dict:
    """Train (or resume training) a landmark net and write it to ``out``.

    Args:
        images: uint8 [N, 3, S, S] FFHQ-aligned faces with a face found; ``landmarks``: float [N, 68, 2]
            their dlib landmarks as fractions of the side (:func:`~stylerig_au.au.landmark_net.to_fractions`).
        seeds: int64 [N] (the held-out split keeps a seed's rows together, within each of ``groups``).
        pairs: int64 [P, 2] row indices (face, its edit) for the held-out change agreement.
        openface: an :class:`~stylerig_au.au.openface.OpenFaceAU` for the geometry-term agreement (optional).
        labels: float [N, 17] OpenFace's AU readings of the faces: with ``openface``, the natural share of
            each AU's reading its geometry term carries is stored (:func:`natural_geometry_share`, over
            the training faces), which :class:`~stylerig_au.au.landmark_net.GeometryReader` offers as targets.
        checkpoint: the resumable training state, written after every epoch.
    Returns:
        The ``info`` written with the net: settings, data, history, held-out ``nme`` and ``change``.
    """
    from tqdm import tqdm

    from stylerig_au.au.student_train import split_by_seed
    from stylerig_au.fileio import atomic_torch_save, load_record

    settings.check()
    if images.dtype != torch.uint8 or images.ndim != 4 or landmarks.shape != (len(images), 68, 2) or len(seeds) != len(images):
        raise StylerigError("training data: expected uint8 images [N, 3, S, S] with [N, 68, 2] landmarks and one seed each")
    if not torch.isfinite(landmarks).all():
        raise StylerigError("training data: landmarks must be finite (drop the samples where no face was found)")
    train_mask, held_mask = split_by_seed(seeds, settings.holdout, groups)
    tr_idx = train_mask.nonzero().flatten()
    if len(tr_idx) < settings.batch:
        raise StylerigError(f"only {len(tr_idx)} training faces for batches of {settings.batch}; use more data or a smaller --batch")

    torch.manual_seed(settings.seed)
    net = LandmarkNet(LandmarkConfig(input_width=settings.input_width))
    x0 = net.prepare(images[tr_idx[:256]].float() / 127.5 - 1.0)
    net.mean.copy_(x0.mean(dim=(0, 2, 3), keepdim=True))
    net.std.copy_(x0.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-3))
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = len(tr_idx) // settings.batch
    total_steps = settings.epochs * steps_per_epoch
    history: list[dict] = []
    start_epoch = 0
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        state = load_record(checkpoint, CKPT_FORMAT, CKPT_VERSION, "landmark-net training checkpoint")
        if state["settings"] != asdict(settings):
            diff = ", ".join(f"{k}={v}" for k, v in state["settings"].items() if asdict(settings).get(k) != v)
            raise StylerigError(f"{checkpoint} was made with other settings ({diff}); rerun with those, or delete it to start over")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        log(f"resuming from {checkpoint} after epoch {start_epoch}/{settings.epochs}")

    held_images, held_landmarks = images[held_mask], landmarks[held_mask].float()
    for epoch in range(start_epoch, settings.epochs):
        gen = torch.Generator().manual_seed(settings.seed * 100003 + epoch)
        order = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
        net.train()
        total, count = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", unit="step", disable=not progress, leave=False)
        for step in bar:
            idx = order[step * settings.batch:(step + 1) * settings.batch]
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + step, total_steps, steps_per_epoch, settings.lr)
            x, target = augment_with_landmarks(images[idx], landmarks[idx], gen, settings)
            err = ((net(x.to(device)) - target.to(device)).pow(2).sum(-1) + 1e-8).sqrt().mean(1)
            loss = (err / iod(target.to(device)).clamp_min(1e-6)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            bar.set_postfix(nme=f"{total / count:.4f}")
        bar.close()
        held_nme = float(point_error(predict(net, held_images), held_landmarks).mean())
        history.append({"epoch": epoch + 1, "train_nme": round(total / count, 5), "heldout_nme": round(held_nme, 5)})
        atomic_torch_save(checkpoint, {"format": CKPT_FORMAT, "format_version": CKPT_VERSION, "settings": asdict(settings),
                                       "epoch": epoch + 1, "model": net.state_dict(), "optimizer": opt.state_dict(),
                                       "history": history})
        log(f"epoch {epoch + 1}/{settings.epochs}: train NME {total / count:.4f}, held-out NME {held_nme:.4f} (IOD units)")

    pred = predict(net, held_images)
    info = {"settings": asdict(settings), "data": data_note, "train_faces": int(train_mask.sum()),
            "heldout_faces": int(held_mask.sum()), "labels": "dlib shape_predictor_68_face_landmarks on the 1024² render",
            "history": history, "heldout_nme": round(float(point_error(pred, held_landmarks).mean()), 5)}
    if openface is not None and labels is not None:
        natural = train_mask.clone()
        if pairs is not None and len(pairs):
            natural[pairs[:, 1]] = False  # edits are not natural faces
        info["geometry_share"] = natural_geometry_share(openface, to_pixels(landmarks[natural].float(), 1024), labels[natural])
    if pairs is not None and len(pairs):
        held_pairs = pairs[held_mask[pairs[:, 0]] & held_mask[pairs[:, 1]]]
        if len(held_pairs):
            all_pred = predict(net, images[held_pairs.flatten()]).view(len(held_pairs), 2, 68, 2)
            info["change"] = change_agreement(to_pixels(landmarks[held_pairs[:, 0]].float(), 1024),
                                              to_pixels(landmarks[held_pairs[:, 1]].float(), 1024),
                                              to_pixels(all_pred[:, 0], 1024), to_pixels(all_pred[:, 1], 1024), openface)
    save_landmark_net(net.cpu(), out, info)
    return info
