"""Training the student AU detector by distillation from OpenFace labels (library side of ``train-detector``).

Data: an AU sample dataset (:mod:`stylerig_au.samples`): FFHQ-aligned generator images, uint8
[N, 3, 256, 256], labelled with our OpenFace 2.2 estimator (float [N, 17] on 0–5). The samples are
split by seed: the last ``holdout`` fraction of seeds is never trained on and scores every epoch.

Augmentation (on the aligned image, before the student's own crop): a random similarity transform
(scale, rotation, shift), a horizontal flip (the labels are kept: every OpenFace AU here is scored on
both sides of the face, so a mirror image has the same intensities), and colour jitter (brightness,
contrast, saturation, occasional greyscale).

Loss: Huber on the intensities, "censored" where OpenFace clipped its output (a label of 0 is "0 or
below", so a prediction below 0 is not penalised; likewise above 5), each AU weighted by the inverse of
its label standard deviation (floored at 0.3), so rarely active AUs count more than their small
spread alone would give them.

A checkpoint (weights, optimiser, epoch, history, settings) is written atomically after every epoch;
a rerun with the same settings resumes from it. Each epoch's shuffling, augmentation and dropout are
seeded from ``seed + epoch``, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.au.student import MAX_VALUE, StudentAUNet, StudentConfig, save_student
from stylerig_au.errors import StylerigError

CKPT_FORMAT = "stylerig-au/student-au-training"
CKPT_VERSION = 1
MIN_STD = 0.1  # label std below which an AU counts as (almost) constant: floor of the loss weights, and left out of mean r


@dataclass(frozen=True)
class TrainSettings:
    """What a training run depends on (a checkpoint resumes only with the same settings).

    Attributes:
        epochs, batch: passes over the training split; faces per step.
        lr, weight_decay: AdamW's; the learning rate warms up for one epoch, then follows a cosine to 0.
        seed: seeds shuffling, augmentation, dropout and initialisation.
        holdout: fraction of the seeds (the last ones) kept out of training for evaluation.
        num_samples: samples read from the dataset (the first ones, in seed order).
        input_size: the student's input side.
        init: what the weights start from: '' (random) or the description of a student (its file).
    """

    epochs: int = 40
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    holdout: float = 0.15
    num_samples: int = 0
    input_size: int = 128
    init: str = ""  # the student the run starts from ('' = from scratch); fine-tuning keeps its input normalisation


def split_by_seed(seeds: torch.Tensor, holdout: float, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (train, held-out) of int64 [N] seeds: the held-out set is the last ``holdout``
    fraction of the distinct seeds (rows that share a seed stay together), taken within each group of
    int64 [N] ``groups`` (e.g. one per dataset) when given."""
    if not 0.0 < holdout < 1.0:
        raise StylerigError(f"the held-out fraction must be between 0 and 1, got {holdout}")
    held = torch.zeros(len(seeds), dtype=torch.bool)
    groups = torch.zeros_like(seeds) if groups is None else groups
    for g in torch.unique(groups):
        rows = groups == g
        distinct = torch.unique(seeds[rows])  # sorted
        n_hold = max(1, int(round(holdout * len(distinct))))
        if n_hold >= len(distinct):
            raise StylerigError(f"{len(distinct)} samples are too few to hold out {holdout:.0%} and still train")
        held |= rows & (seeds >= distinct[len(distinct) - n_hold])
    return ~held, held


def random_affine(b: int, gen: torch.Generator, max_shift: float = 0.03, max_scale: float = 0.05,
                  max_rotate_deg: float = 5.0, flip: bool = True) -> torch.Tensor:
    """``b`` random similarity transforms (mirrored half of the time when ``flip``), drawn from ``gen``, as
    float32 [b, 2, 3] ``F.affine_grid`` matrices: output normalised coordinates -> input ones (align_corners=False).

    ``max_shift``: largest shift, fraction of the side; ``max_scale``: largest relative zoom;
    ``max_rotate_deg``: largest rotation. A matrix whose first column's x part is negative mirrors.
    """
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    scale = torch.exp(uniform(-math.log1p(max_scale), math.log1p(max_scale)))
    angle = uniform(-max_rotate_deg, max_rotate_deg) * math.pi / 180
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    shift = uniform(-2 * max_shift, 2 * max_shift), uniform(-2 * max_shift, 2 * max_shift)  # normalised coords span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos * sign, -sin, shift[0]], 1), torch.stack([sin * sign, cos, shift[1]], 1)], 1)


def augment(images: torch.Tensor, gen: torch.Generator, max_shift: float = 0.03, max_scale: float = 0.05,
            max_rotate_deg: float = 5.0, flip: bool = True) -> torch.Tensor:
    """Randomly transformed (:func:`random_affine`) and colour-jittered (:func:`jitter_colour`) faces.

    Args:
        images: uint8 [B, 3, H, H] aligned faces.
        gen: the random generator (CPU) that draws every random number here.
        max_shift, max_scale, max_rotate_deg, flip: as :func:`random_affine`.
    Returns:
        float32 [B, 3, H, H] in [-1, 1].
    """
    x = images.float() / 127.5 - 1.0
    theta = random_affine(images.shape[0], gen, max_shift, max_scale, max_rotate_deg, flip)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return jitter_colour(x, gen)


def jitter_colour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation (5 % turned grey) of float [B, 3, H, W] images in
    [-1, 1], drawn from the CPU generator ``gen``; returns them clamped to [-1, 1]."""
    b = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    dev = x.device
    brightness = uniform(-0.15, 0.15).to(dev).view(b, 1, 1, 1)
    contrast = uniform(0.75, 1.25).to(dev).view(b, 1, 1, 1)
    saturation = uniform(0.6, 1.4).to(dev).view(b, 1, 1, 1)
    saturation = torch.where(torch.rand(b, 1, 1, 1, generator=gen).to(dev) < 0.05, torch.zeros_like(saturation), saturation)
    grey = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = grey + (x - grey) * saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    return x.clamp(-1.0, 1.0)


def distill_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Censored, weighted Huber loss (a scalar) of float [B, 17] predictions against OpenFace labels on 0–5.

    Where the label is 0 (OpenFace clipped it there) a prediction below 0 counts as 0; where it is 5,
    one above 5 counts as 5. ``weights`` float [17] scales each AU's term.
    """
    pred = torch.where(target <= 0.0, pred.clamp(min=0.0), pred)
    pred = torch.where(target >= MAX_VALUE, pred.clamp(max=MAX_VALUE), pred)
    return (F.huber_loss(pred, target, reduction="none", delta=1.0) * weights).mean()


def agreement(pred: np.ndarray, target: np.ndarray, aus: list[int], min_std: float = MIN_STD) -> dict:
    """How well predicted intensities follow the reference ones.

    Args:
        pred, target: float [N, 17] intensities (``pred`` clipped to 0–5 as OpenFace's are).
        aus: AU numbers of the columns.
        min_std: AUs whose reference std is below this are left out of ``mean_r`` (r is noise there).
    Returns:
        ``per_au``: AU label -> {r, mae, label_std, label_mean}; ``mean_r`` over the varying AUs,
        ``mean_mae`` over all AUs, ``varying_aus``, ``n``.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    per_au, rs = {}, []
    for j, au in enumerate(aus):
        p, t = pred[:, j], target[:, j]
        sp, st = p.std(), t.std()
        r = float(((p - p.mean()) * (t - t.mean())).mean() / (sp * st)) if sp > 0 and st > 0 else float("nan")
        per_au[f"AU{au:02d}"] = {"r": r, "mae": float(np.abs(p - t).mean()), "label_std": float(st), "label_mean": float(t.mean())}
        if st > min_std:
            rs.append(r)
    return {"per_au": per_au, "mean_r": float(np.nanmean(rs)) if rs else float("nan"),
            "mean_mae": float(np.abs(pred - target).mean()), "n": int(len(pred)),
            "varying_aus": [f"AU{au:02d}" for au, j in zip(aus, range(len(aus))) if target[:, j].std() > min_std]}


@torch.no_grad()
def predict_uint8(net: StudentAUNet, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Clipped intensities float32 [N, 17] of uint8 [N, 3, H, H] aligned faces (net in eval mode)."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    out = [net(images[i:i + batch].to(device).float() / 127.5 - 1.0, clip=True).cpu() for i in range(0, len(images), batch)]
    net.train(was)
    return torch.cat(out).numpy()


def _lr_at(step: int, steps_per_epoch: int, s: TrainSettings) -> float:
    total = s.epochs * steps_per_epoch
    warm = steps_per_epoch
    if step < warm:
        return s.lr * (step + 1) / warm
    return 0.5 * s.lr * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def _crop_stats(net: StudentAUNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [1, 3, 1, 1] of the student's input crops of (up to 256 of) ``images``."""
    x = net.prepare(images[:256].float() / 127.5 - 1.0)
    return x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-3)


def train_student(
    images: torch.Tensor,
    labels: torch.Tensor,
    seeds: torch.Tensor,
    aus: list[int],
    out: str | os.PathLike,
    settings: TrainSettings,
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    data_note: str = "",
    groups: torch.Tensor | None = None,
    group_names: list[str] | None = None,
    init_net: StudentAUNet | None = None,
) -> dict:
    """Train (or resume training) a student on labelled aligned faces and write it to ``out``.

    Args:
        images: uint8 [N, 3, H, H] FFHQ-aligned faces (only those with labels).
        labels: float32 [N, 17] OpenFace intensities on 0–5, columns in ``aus`` order.
        seeds: int64 [N], the samples' seeds (for the held-out split).
        out: the student file to write (see :func:`~stylerig_au.au.student.save_student`).
        settings: the run's settings; ``checkpoint``: the resumable training state.
        data_note: where the data came from (recorded in the file's ``info``).
        groups: int64 [N] dataset index of each row (the held-out split is taken within each; default
            one dataset); ``group_names``: their names, for the per-dataset held-out agreement.
        init_net: a student to start from (fine-tuning: its weights and input normalisation); its
            config must match ``aus`` and ``settings.input_size``, and ``settings.init`` name it.
    Returns:
        The ``info`` written with the student: settings, split, per-epoch history, held-out agreement
        (all held-out rows, and ``heldout_by_data`` per dataset when there are several).
    """
    from tqdm import tqdm

    from stylerig_au.fileio import atomic_torch_save, load_record

    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels) != len(seeds):
        raise StylerigError("training data: expected uint8 images [N, 3, H, H] with one label row and one seed each")
    if labels.shape[1] != len(aus) or not torch.isfinite(labels).all():
        raise StylerigError(f"training data: labels must be finite, {len(aus)} per face")
    if (init_net is None) != (not settings.init):
        raise StylerigError("a fine-tuning run needs both the student to start from and its name in the settings")
    train_mask, held_mask = split_by_seed(seeds, settings.holdout, groups)
    n_train = int(train_mask.sum())
    if n_train < settings.batch:
        raise StylerigError(f"only {n_train} training faces for batches of {settings.batch}; build more samples or use a smaller --batch")
    tr_images, tr_labels = images[train_mask], labels[train_mask].float()
    ho_images, ho_labels = images[held_mask], labels[held_mask].float()

    torch.manual_seed(settings.seed)
    net = StudentAUNet(StudentConfig(aus=tuple(aus), input_size=settings.input_size))
    if init_net is not None:
        if list(init_net.aus) != list(aus) or init_net.config.input_size != settings.input_size:
            raise StylerigError(f"the student to start from reads AU {', '.join(map(str, init_net.aus))} at "
                                f"{init_net.config.input_size}², not the data's AUs at {settings.input_size}²")
        net = StudentAUNet(init_net.config)
        net.load_state_dict(init_net.state_dict())
    else:
        mean, std = _crop_stats(net, tr_images)
        net.mean.copy_(mean)
        net.std.copy_(std)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    label_std = tr_labels.std(0)
    weights = 1.0 / label_std.clamp(min=MIN_STD * 3)
    weights = (weights / weights.mean()).to(device)
    steps_per_epoch = n_train // settings.batch
    history: list[dict] = []
    start_epoch = 0

    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        state = load_record(checkpoint, CKPT_FORMAT, CKPT_VERSION, "training checkpoint")
        if state["settings"] != asdict(settings) or list(state["aus"]) != list(aus):
            diff = {k: v for k, v in state["settings"].items() if asdict(settings).get(k) != v}
            hint = " (num_samples is set with --limit)" if "num_samples" in diff else ""
            raise StylerigError(f"{checkpoint} was made with other settings ({', '.join(f'{k}={v}' for k, v in diff.items()) or 'AUs'}); "
                                f"rerun with those{hint}, or delete the checkpoint to start over")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        log(f"resuming from {checkpoint} after epoch {start_epoch}/{settings.epochs}")

    for epoch in range(start_epoch, settings.epochs):
        gen = torch.Generator().manual_seed(settings.seed * 100003 + epoch)
        torch.manual_seed(settings.seed * 100003 + epoch)  # dropout
        order = torch.randperm(n_train, generator=gen)
        net.train()
        total, count = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}", unit="step", disable=not progress, leave=False)
        for step in bar:
            idx = order[step * settings.batch:(step + 1) * settings.batch]
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + step, steps_per_epoch, settings)
            x = augment(tr_images[idx], gen).to(device)
            loss = distill_loss(net(x), tr_labels[idx].to(device), weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        held = agreement(predict_uint8(net, ho_images), ho_labels.numpy(), aus)
        history.append({"epoch": epoch + 1, "train_loss": total / count, "heldout_mean_r": held["mean_r"], "heldout_mean_mae": held["mean_mae"]})
        state = {"format": CKPT_FORMAT, "format_version": CKPT_VERSION, "settings": asdict(settings), "aus": list(aus),
                 "epoch": epoch + 1, "model": net.state_dict(), "optimizer": opt.state_dict(), "history": history}
        atomic_torch_save(checkpoint, state)
        log(f"epoch {epoch + 1}/{settings.epochs}: train loss {total / count:.4f}, held-out mean r {held['mean_r']:.3f}, MAE {held['mean_mae']:.3f}")

    ho_pred = predict_uint8(net, ho_images)
    held = agreement(ho_pred, ho_labels.numpy(), aus)
    info = {"settings": asdict(settings), "data": data_note, "train_faces": n_train, "heldout_faces": int(held_mask.sum()),
            "heldout_seeds": [int(seeds[held_mask].min()), int(seeds[held_mask].max())],
            "labels": "OpenFace 2.2 static AU intensities (stylerig_au estimator, dlib landmarks)",
            "history": history, "heldout": held}
    if groups is not None and len(torch.unique(groups)) > 1:
        ho_groups = groups[held_mask]
        names = group_names or [str(int(g)) for g in torch.unique(groups)]
        ho_seeds = seeds[held_mask]
        info["heldout_by_data"] = {names[int(g)]: {**agreement(ho_pred[(ho_groups == g).numpy()], ho_labels[ho_groups == g].numpy(), aus),
                                                   "seeds": [int(ho_seeds[ho_groups == g].min()), int(ho_seeds[ho_groups == g].max())]}
                                   for g in torch.unique(groups)}
    save_student(net.cpu(), out, info)
    return info
