"""Train the AU-conditioned mapper (:mod:`stylerig_au.edit.mapper`) with the student AU detector.

Each step draws latents w = mapping(z, psi) (seeds from :data:`TRAIN_SEED_START` + ``seed`` x
:data:`SEED_STRIDE`, disjoint from the direction samples and from the held-out faces of the evaluations), spreads them over W+ with a
little per-slot jitter (inverted photos are W+, not W), and draws one or two AU changes per face.
Both the face and its edit are rendered and scored, and the loss is

* ``target``: (student AU of the edit − clamp(student AU of the face + g·ΔAU, 0, 5))² over the edited AUs,
  where g is the mapper's input gain of the AU (1 unless training starts from a mapper calibrated with
  OpenFace, :mod:`stylerig_au.edit.mapper_calibrate`). The target then rises with the input, so a
  fine-tuning trains the network at the larger changes the gains send it, where the other terms act
  too, instead of pulling it back to the edit size it had; calibrate again afterwards;
* ``keep``: (change of every other AU)², so the rest of the expression stays put;
* ``outside``: LPIPS between face and edit with the regions of the edited AUs blacked out
  (:func:`region_mask`), so hair, background and the rest of the face do not move;
* ``identity``: with ``identity_net='sface'`` (the default), the cosine distance between SFace features
  of face and edit; with ``'dlib'``, the distance between dlib's 128-d face descriptors (the network
  the evaluations judge identity with: a run trained on it is judged by its own loss). Both run
  differentiably on the face's crop (:mod:`stylerig_au.identity_net`). With ``'lpips'`` (the bundled
  mapper's), the cosine distance between the deepest LPIPS-VGG features of the two face crops, a cheaper proxy;
* ``size``: mean square of the part of Δw+ beyond the linear directions, in units of w's spread;
* ``colour`` (weight 0 unless asked): mean squared difference of the 8×-average-pooled face and edit
  inside the edited AUs' regions, as in the refinement (:mod:`stylerig_au.edit.refine`): the outside
  term does not look there, and without it an edit may paint red lips or a white chin;
* ``geometry`` (weight 0 unless asked): OpenFace's geometry term of each edited AU, read through the
  differentiable landmark net (:class:`~stylerig_au.au.landmark_net.GeometryReader`), must move by at
  least its natural share of the asked change (g·ΔAU × ``reader.share``); the squared shortfall is the
  loss. Only moved facial features pay it, not texture such as a beard read as a chin raise;
* ``distil`` (weight 0 unless asked): the mapper's Δw+ for the refined edits of an edited-samples dataset
  (``edited-samples --refine-at K``) against the refined Δw+, in units of w's spread
  (:mod:`stylerig_au.edit.distil`): the per-face refinement taught to the one-pass mapper. ``batch`` of
  its rows join each step. With every image term's weight 0 the step renders nothing (distillation alone);
* ``distil_image`` (weight 0 unless asked): the same rows' edits rendered and compared with the refined
  edits' stored images (LPIPS + mean squared error): what the refined edit looks like, not its Δw+.

With ``local`` the edit is rendered as the editor shows it by default: blended into the face inside
its AUs' regions drawn from the face's landmarks (:func:`stylerig_au.edit.local.render_local`), and every
term reads that render, so the mapper learns the edit that the local render makes of it instead of paying
for changes outside the region that the editor never shows. The landmarks (for those regions and the
identity crops) come from ``landmarks``: dlib, or the bundled landmark net where there is no dlib
(:mod:`stylerig_au.au.face_points`).

Runs unchanged under ``torchrun``: with ``WORLD_SIZE`` > 1 each process draws its own faces,
gradients are averaged by DistributedDataParallel (NCCL on CUDA, gloo on a CPU), and rank 0 alone
shows progress and writes files. The training state is saved every ``save_every`` steps and on
Ctrl-C; rerunning the same command resumes from it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.au.vocab import AU
from stylerig_au.edit.mapper import AUMapper
from stylerig_au.errors import StylerigError
from stylerig_au.identity_net import IDENTITY_NETS as FACE_NETS
from stylerig_au.identity_net import identity_loss, identity_reference, load_identity_net

TRAIN_SEED_START = 3_000_000
SEED_STRIDE = 10_000_000  # each --seed draws its faces from its own block: TRAIN_SEED_START + seed * SEED_STRIDE
MAX_SEED = 399  # numpy's RandomState takes seeds below 2**32
MAX_INTENSITY = 5.0
# Face regions of FFHQ-aligned images as (left, top, right, bottom) fractions of the side: the FFHQ
# crop puts the eyes at y ~ 0.48 (x 0.375 / 0.625) and the mouth at y ~ 0.72 (stylerig_au.align).
REGION_BOXES: dict[str, tuple[float, float, float, float]] = {
    "brows": (0.22, 0.30, 0.78, 0.48),
    "eyes": (0.24, 0.40, 0.76, 0.56),
    "nose": (0.38, 0.42, 0.62, 0.70),
    "cheeks": (0.20, 0.48, 0.80, 0.76),
    "mouth": (0.30, 0.60, 0.70, 0.86),
    "jaw": (0.26, 0.62, 0.74, 0.98),
}
FACE_CROP = (0.18, 0.24, 0.82, 0.94)
LOSS_NAMES = ("target", "keep", "outside", "identity", "size", "geometry", "distil", "distil_image", "colour")
IDENTITY_NETS = ("lpips", *FACE_NETS)  # 'lpips': the proxy below, no face network


@dataclass(frozen=True)
class MapperTrainSettings:
    """Everything that shapes a training run (a resumed run must use the same, ``steps`` aside)."""

    steps: int = 400
    batch: int = 2
    lr: float = 3e-4
    psi: float = 0.8
    jitter: float = 0.05
    max_aus: int = 2
    delta_min: float = 0.5
    delta_max: float = 3.0
    negative: float = 0.2
    image_size: int = 256
    w_target: float = 1.0
    w_keep: float = 1.0
    w_outside: float = 4.0
    w_identity: float = 4.0
    w_size: float = 0.05
    w_geometry: float = 0.0
    w_distil: float = 0.0
    w_distil_image: float = 0.0
    w_colour: float = 0.0
    local: bool = False  # render and judge each edit as a local edit (module docstring)
    landmarks: str = "dlib"  # where the identity crops and local regions come from: 'dlib' or 'net' (face_points)
    seed: int = 0
    save_every: int = 25
    identity_net: str = "sface"  # a face network of stylerig_au.identity_net ('sface', 'dlib') or 'lpips' (proxy)
    init: str = ""  # what the mapper started from when not the linear directions (a resumed run must match)
    landmark_net: str = ""  # the geometry term's landmark net file ('' = the bundled one)
    distil: str = ""  # the distil term's edited-samples folder (refined edits' Δw+)

    def check(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.max_aus < 1 or self.save_every < 1:
            raise StylerigError("steps, batch, max-aus and save-every must be at least 1")
        if not 0 < self.delta_min <= self.delta_max:
            raise StylerigError(f"need 0 < delta_min <= delta_max, got {self.delta_min}, {self.delta_max}")
        if not 0 <= self.negative <= 1:
            raise StylerigError(f"negative (the share of negative changes) must be in [0, 1], got {self.negative}")
        if self.identity_net not in IDENTITY_NETS:
            raise StylerigError(f"identity net must be one of {', '.join(IDENTITY_NETS)}, got {self.identity_net!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise StylerigError(f"seed must be in 0..{MAX_SEED} (each seed has its own block of training faces), got {self.seed}")
        if self.image_size < 64:
            raise StylerigError(f"image_size must be at least 64 (the student needs it), got {self.image_size}")
        if min(self.w_target, self.w_keep, self.w_outside, self.w_identity, self.w_size, self.w_geometry, self.w_distil,
               self.w_distil_image, self.w_colour) < 0:
            raise StylerigError("loss weights must be 0 or more")
        from stylerig_au.au.face_points import LANDMARK_SOURCES

        if self.landmarks not in LANDMARK_SOURCES:
            raise StylerigError(f"landmarks must come from one of {', '.join(LANDMARK_SOURCES)}, got {self.landmarks!r}")
        if max(self.w_distil, self.w_distil_image) > 0 and not self.distil:
            raise StylerigError("the distil term needs a dataset of refined edits (train-mapper --distil DIR)")

    def resume_key(self) -> dict:
        key = {k: v for k, v in asdict(self).items() if k not in ("steps", "save_every")}
        if key["identity_net"] == "lpips":  # states saved before the option existed resume too
            del key["identity_net"]
        if key["w_geometry"] == 0:  # likewise for the geometry term
            del key["w_geometry"], key["landmark_net"]
        if key["w_distil_image"] == 0:  # and the distil terms
            del key["w_distil_image"]
        if key["w_distil"] == 0 and "w_distil_image" not in key:
            del key["w_distil"], key["distil"]
        for name, default in (("w_colour", 0.0), ("local", False), ("landmarks", "dlib")):  # and the local options
            if key[name] == default:
                del key[name]
        return key

    @property
    def distils(self) -> bool:
        """Whether a step learns from the refined edits (a distil term has a weight)."""
        return max(self.w_distil, self.w_distil_image) > 0

    @property
    def renders(self) -> bool:
        """Whether a step renders images (some image term has a weight); distillation alone does not."""
        return max(self.w_target, self.w_keep, self.w_outside, self.w_identity, self.w_geometry, self.w_colour) > 0

    @property
    def needs_lpips(self) -> bool:
        """Whether a term reads LPIPS (outside, the LPIPS identity proxy, distil_image)."""
        return (self.w_outside > 0 or self.w_distil_image > 0
                or (self.w_identity > 0 and self.identity_net == "lpips"))


def to_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square images float [N, C, H, H] brought to [N, C, size, size] as the student reads them during
    training: area-averaged when shrinking, bilinear when growing, returned as is at ``size``."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="area" if images.shape[-1] > size else "bilinear")


def region_mask(aus_per_face: list[list[int]], size: int, feather: float = 0.04,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Soft mask float32 [N, 1, size, size] in [0, 1]: 1 inside the regions the listed AUs move
    (:data:`REGION_BOXES`, by each AU's ``region``), fading to 0 over ``feather`` x size outside them."""
    coords = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
    y, x = coords[:, None], coords[None, :]
    masks = []
    for aus in aus_per_face:
        m = torch.zeros(size, size, device=device)
        for region in dict.fromkeys(AU[a].region for a in aus):
            left, top, right, bottom = REGION_BOXES[region]
            dx = torch.clamp(torch.maximum(left - x, x - right), min=0)
            dy = torch.clamp(torch.maximum(top - y, y - bottom), min=0)
            t = torch.clamp(1 - torch.sqrt(dx ** 2 + dy ** 2) / feather, 0, 1)
            m = torch.maximum(m, t * t * (3 - 2 * t))
        masks.append(m)
    return torch.stack(masks)[:, None]


def colour_difference(edit: torch.Tensor, reference: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The colour term (scalar): mean squared difference of the 8×-average-pooled ``edit`` and ``reference``
    (float [N, 3, S, S]) weighted by ``inside`` (float [N, 1, S, S] in [0, 1], the region the edit may change)."""
    region = F.avg_pool2d(inside, 8)
    diff = (F.avg_pool2d(edit, 8) - F.avg_pool2d(reference, 8)) ** 2 * region
    return diff.sum() / (3 * region.sum()).clamp_min(1e-6)


def sample_deltas(aus: list[int], n: int, s: MapperTrainSettings, gen: torch.Generator) -> tuple[torch.Tensor, list[list[int]]]:
    """n random AU-change vectors [n, A] (1..max_aus non-zero entries each) and the AUs each one edits."""
    delta = torch.zeros(n, len(aus))
    edited = []
    for i in range(n):
        k = int(torch.randint(1, min(s.max_aus, len(aus)) + 1, (1,), generator=gen))
        picks = torch.randperm(len(aus), generator=gen)[:k]
        mags = s.delta_min + (s.delta_max - s.delta_min) * torch.rand(k, generator=gen)
        signs = torch.where(torch.rand(k, generator=gen) < s.negative, -1.0, 1.0)
        delta[i, picks] = mags * signs
        edited.append([aus[int(p)] for p in picks])
    return delta, edited


def _crop(images: torch.Tensor, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    side = images.shape[-1]
    left, top, right, bottom = (round(f * side) for f in box)
    return F.interpolate(images[:, :, top:bottom, left:right], size=(size, size), mode="bilinear", align_corners=False)


def identity_proxy(lpips, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity [N] of the spatially pooled deepest LPIPS-VGG features of the face crops."""
    fa = lpips.features(_crop(a, FACE_CROP, 128))[-1].mean(dim=(2, 3))
    fb = lpips.features(_crop(b, FACE_CROP, 128))[-1].mean(dim=(2, 3))
    return 1 - F.cosine_similarity(fa, fb, dim=1)


class MapperLoss:
    """The loss of the module docstring for one batch. Call with (mapper, G, ws, delta, edited AUs,
    distil rows); ``distil``: the :class:`~stylerig_au.edit.distil.DistilTargets` of the distil term."""

    def __init__(self, student, lpips, aus: list[int], s: MapperTrainSettings, geometry_reader=None, distil=None,
                 landmark_source=None) -> None:
        self.student, self.lpips, self.s = student, lpips, s
        if lpips is None and s.needs_lpips:
            raise StylerigError("these loss weights need the LPIPS model (outside, distil_image or the LPIPS identity proxy)")
        if s.distils and distil is None:
            raise StylerigError("the distil term needs its refined edits (a DistilTargets)")
        self.distil = distil
        missing = [a for a in aus if a not in student.aus]
        if missing:
            raise StylerigError(f"the student AU detector does not score AU {', '.join(map(str, missing))}")
        self.cols = torch.tensor([student.aus.index(a) for a in aus])
        self.aus = aus
        self.face_net = None
        device = next(student.parameters()).device  # train_mapper has already put the student on the training device
        if s.identity_net != "lpips" and s.w_identity > 0:
            self.face_net = load_identity_net(s.identity_net, device=device)
        self.points = None  # the landmark source of the identity crops and the local regions
        if s.renders and (self.face_net is not None or s.local):
            if landmark_source is None:
                from stylerig_au.au.face_points import load_landmark_source

                landmark_source = load_landmark_source(s.landmarks, device=device)
            self.points = landmark_source
        self.geometry = None
        if s.w_geometry > 0:
            if geometry_reader is None:
                from stylerig_au.au.landmark_net import load_geometry_reader

                geometry_reader = load_geometry_reader(s.landmark_net or None, device=next(student.parameters()).device)
            missing = [a for a in aus if a not in geometry_reader.aus]
            if missing:
                raise StylerigError(f"the geometry reader does not read AU {', '.join(map(str, missing))}")
            self.geometry = geometry_reader
            self.g_cols = torch.tensor([geometry_reader.aus.index(a) for a in aus])
            self.g_share = torch.nan_to_num(geometry_reader.share[self.g_cols].float())

    def _render(self, G, ws: torch.Tensor) -> torch.Tensor:
        return to_side(G.synthesis(ws), self.s.image_size)

    def __call__(self, mapper, G, ws: torch.Tensor, delta: torch.Tensor, edited: list[list[int]],
                 distil_rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        module: AUMapper = getattr(mapper, "module", mapper)
        losses = self._image_terms(mapper, module, G, ws, delta, edited) if self.s.renders else self._no_image_terms(mapper, module, ws, delta)
        zero = torch.zeros((), device=ws.device)
        # through the bare module: its gradient reaches the same parameters, and the wrapper wants one forward a step
        losses["distil"] = self.distil.loss(module, distil_rows, module.w_std) if self.s.w_distil > 0 else zero
        losses["distil_image"] = (self.distil.image_loss(module, G, self.lpips, distil_rows, module.w_std)
                                  if self.s.w_distil_image > 0 else zero)
        s = self.s
        losses["total"] = (s.w_target * losses["target"] + s.w_keep * losses["keep"] + s.w_outside * losses["outside"]
                           + s.w_identity * losses["identity"] + s.w_size * losses["size"] + s.w_geometry * losses["geometry"]
                           + s.w_distil * losses["distil"] + s.w_distil_image * losses["distil_image"]
                           + s.w_colour * losses["colour"])
        return losses

    @staticmethod
    def _size(module: AUMapper, step: torch.Tensor, gained: torch.Tensor) -> torch.Tensor:
        linear = torch.einsum("na,aed->ned", gained, module.linear.detach())
        return ((step.index_select(1, module.slot_index) - linear) / module.w_std).pow(2).mean()

    def _no_image_terms(self, mapper, module: AUMapper, ws: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = torch.zeros((), device=ws.device)
        losses = {k: zero for k in ("target", "keep", "outside", "identity", "geometry", "colour")}
        # one forward through ``mapper`` (under torchrun the DistributedDataParallel wrapper) every step, as with images
        losses["size"] = self._size(module, mapper(ws, delta), delta * module.input_gain)
        return losses

    def _local_masks(self, points: list, edited: list[list[int]], side: int, device) -> torch.Tensor:
        """Each edit's local region float [N, 1, MASK_SIDE, MASK_SIDE] from its face's landmarks (dlib-index
        frame of a ``side``² image); the fixed face boxes (:func:`region_mask`) where no face was found."""
        from stylerig_au.edit.local import MASK_SIDE
        from stylerig_au.edit.local import region_mask as landmark_region

        masks = []
        for pts, aus in zip(points, edited):
            if pts is None:
                masks.append(region_mask([aus], MASK_SIDE)[0, 0].numpy())
            else:  # region_mask takes continuous coordinates (pixel centres at +0.5)
                masks.append(landmark_region(pts + 0.5, aus, MASK_SIDE, side))
        return torch.from_numpy(np.stack(masks))[:, None].to(device)

    def _image_terms(self, mapper, module: AUMapper, G, ws: torch.Tensor, delta: torch.Tensor,
                     edited: list[list[int]]) -> dict[str, torch.Tensor]:
        kept = None  # the unedited render a local edit blends with, rendered once
        with torch.no_grad():
            if self.s.local:
                from stylerig_au.edit.local import render_base, render_local

                kept = render_base(G, ws)
                base = to_side(kept.images, self.s.image_size).clamp(-1, 1)
            else:
                base = self._render(G, ws).clamp(-1, 1)
            base_aus = self.student(base)[:, self.cols.to(base.device)]
        points = self.points(base) if self.points is not None else None
        step = mapper(ws, delta)
        local = None
        if kept is not None:
            local = self._local_masks(points, edited, base.shape[-1], ws.device)
            edit = to_side(render_local(G, kept, ws + step, local), self.s.image_size)
        else:
            edit = self._render(G, ws + step)
        edit_aus = self.student(edit)[:, self.cols.to(edit.device)]
        on = delta != 0
        gained = delta * module.input_gain
        target = (base_aus + gained).clamp(0, MAX_INTENSITY)
        err = (edit_aus - target) ** 2
        change = (edit_aus - base_aus) ** 2
        losses = {
            "target": (err * on).sum() / on.sum().clamp_min(1),
            "keep": (change * ~on).sum() / (~on).sum().clamp_min(1),
        }
        zero = torch.zeros((), device=edit.device)
        keep = 1 - region_mask(edited, edit.shape[-1], device=edit.device)
        losses["outside"] = self.lpips(edit.clamp(-1, 1) * keep, base * keep).mean() if self.s.w_outside > 0 else zero
        if self.face_net is not None:
            losses["identity"] = identity_loss(self.face_net, edit, identity_reference(self.face_net, base, points)).mean()
        elif self.s.identity_net == "lpips" and self.lpips is not None:
            losses["identity"] = identity_proxy(self.lpips, edit.clamp(-1, 1), base).mean()
        else:
            losses["identity"] = zero
        losses["colour"] = zero
        if self.s.w_colour > 0:  # inside the region the edit may change: the local mask, else the AUs' face boxes
            inside = F.interpolate(local, size=edit.shape[-2:], mode="area") if local is not None else 1 - keep
            losses["colour"] = colour_difference(edit, base, inside)
        losses["size"] = self._size(module, step, gained)
        losses["geometry"] = torch.zeros((), device=edit.device)
        if self.geometry is not None:
            cols = self.g_cols.to(edit.device)
            with torch.no_grad():
                base_geo = self.geometry(base)[:, cols].float()
            moved = self.geometry(edit)[:, cols].float() - base_geo
            want = self.g_share.to(edit.device) * gained
            shortfall = torch.relu(want.sign() * (want - moved)) * on
            losses["geometry"] = shortfall.pow(2).sum() / on.sum().clamp_min(1)
        return losses


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); returns (Dist, this process's device).

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on a CPU, gloo.
    """
    from stylerig_au.devices import torchrun_env

    rank, world, local = torchrun_env()
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local), device


# ----------------------------------------------------------------------------- training


def _lr_at(step: int, s: MapperTrainSettings) -> float:
    warm = max(1, min(20, s.steps // 10))
    if step < warm:
        return s.lr * (step + 1) / warm
    return s.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, s.steps - warm)))


def batch_latents(G, step: int, d: Dist, s: MapperTrainSettings, w_std: torch.Tensor,
                  device: str | torch.device) -> torch.Tensor:
    """The W+ latents [batch, num_ws, w_dim] of one step on one rank: seeds from TRAIN_SEED_START +
    ``s.seed`` x SEED_STRIDE, a distinct block per (step, rank), plus per-slot Gaussian jitter of
    ``jitter`` x ``w_std`` [w_dim]."""
    from stylerig_au.models import seed_to_z

    first = TRAIN_SEED_START + s.seed * SEED_STRIDE + (step * d.world + d.rank) * s.batch
    z = torch.cat([seed_to_z(first + i, G.z_dim) for i in range(s.batch)]).to(device)
    with torch.no_grad():
        w = G.mapping(z, psi=s.psi)
    gen = torch.Generator().manual_seed(first)
    noise = torch.randn(s.batch, G.num_ws, G.w_dim, generator=gen).to(device)
    return w[:, None].repeat(1, G.num_ws, 1) + s.jitter * noise * w_std.to(device)


def _state(mapper: AUMapper, opt: torch.optim.Optimizer, step: int, s: MapperTrainSettings, history: list) -> dict:
    return {"kind": "stylerig-au/mapper-train-state", "settings": s.resume_key(), "step": step,
            "mapper": {k: v.detach().cpu() for k, v in mapper.state_dict().items()},
            "optimizer": opt.state_dict(), "history": history}


def train_mapper(G, student, lpips, mapper: AUMapper, settings: MapperTrainSettings, checkpoint: str | os.PathLike, *,
                 device: str = "cpu", log: Callable[[str], None] | None = None, progress: bool = True,
                 geometry_reader=None, distil=None, landmark_source=None) -> dict:
    """Train ``mapper`` in place (resuming from ``checkpoint`` when it holds a run with the same settings).

    Args:
        G: the generator (frozen); ``student``: a :class:`~stylerig_au.au.student.StudentAUNet` (frozen);
        lpips: an :class:`~stylerig_au.perceptual.LPIPS` (frozen), or None when no term reads it
            (``settings.needs_lpips``).
        geometry_reader: the geometry term's :class:`~stylerig_au.au.landmark_net.GeometryReader` (default:
            loaded from ``settings.landmark_net`` when ``w_geometry`` > 0).
        landmark_source: the :class:`~stylerig_au.au.face_points.LandmarkSource` of the identity crops and the
            local regions (default: ``settings.landmarks``, loaded when a term needs it).
        distil: the distil term's :class:`~stylerig_au.edit.distil.DistilTargets` (default: read from
            ``settings.distil`` when ``w_distil`` > 0).
        mapper: the mapper to train (e.g. :func:`~stylerig_au.edit.mapper.new_mapper`).
        checkpoint: the training-state file (written atomically by rank 0).
    Returns:
        ``{"history": [per-step mean losses], "first" / "last": means over the first / last ``span`` steps,
        "seconds": training time, "world": processes}``.
    """
    from stylerig_au.fileio import atomic_torch_save

    settings.check()
    log = log or (lambda m: None)
    d, device = init_distributed(device)
    for module in (G, student, *([lpips] if lpips is not None else []), *([geometry_reader] if geometry_reader is not None else [])):
        module.to(device).eval().requires_grad_(False)
    mapper.to(device).train()
    opt = torch.optim.Adam(mapper.parameters(), lr=settings.lr)
    history: list[dict[str, float]] = []
    start = 0
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file: say so in one line
            from stylerig_au.fileio import load_error_reason

            raise StylerigError(f"{checkpoint}: unreadable mapper training state ({load_error_reason(err)}); "
                                "delete it to start over, or choose another --out") from None
        if not isinstance(state, dict) or state.get("kind") != "stylerig-au/mapper-train-state":
            raise StylerigError(f"{checkpoint}: not a mapper training state; delete it or choose another --out")
        if state["settings"] != settings.resume_key():
            raise StylerigError(f"{checkpoint} was made with other settings; rerun with them, or delete it to start over")
        mapper.load_state_dict(state["mapper"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
        log(f"resuming mapper training from step {start} ({checkpoint})")
    model = mapper
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(mapper, device_ids=[d.local_rank] if device.startswith("cuda") else None)
    if settings.distils and distil is None:
        from stylerig_au.edit.distil import DistilTargets

        distil = DistilTargets(settings.distil, G, mapper.aus)
        log(f"distilling {len(distil)} edits refined for {distil.steps} steps ({settings.distil})")
    loss_fn = MapperLoss(student, lpips, mapper.aus, settings, geometry_reader, distil, landmark_source)

    def save(step: int) -> None:
        if d.main:
            atomic_torch_save(checkpoint, _state(mapper, opt, step, settings, history))

    bar = None
    if progress and d.main:
        from tqdm import tqdm

        bar = tqdm(total=settings.steps, initial=min(start, settings.steps), desc="train mapper", unit="step")
    tick = time.perf_counter()
    done = start  # steps whose update is applied and recorded: what an interrupted run saves
    try:
        for step in range(start, settings.steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, settings)
            ws = batch_latents(G, step, d, settings, mapper.w_std, device)
            gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step * d.world + d.rank)
            delta, edited = sample_deltas(mapper.aus, settings.batch, settings, gen)
            rows = distil.batch(step, settings.batch, d.rank, d.world) if settings.distils else None
            losses = loss_fn(model, G, ws, delta.to(device), edited, rows)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
            values = torch.stack([losses[k].detach() for k in (*LOSS_NAMES, "total")])
            if d.world > 1:
                import torch.distributed as dist

                dist.all_reduce(values)
                values /= d.world
            history.append({k: float(v) for k, v in zip((*LOSS_NAMES, "total"), values.cpu())})
            done = step + 1
            if bar is not None:
                recent = history[-20:]
                shown = (*(("target", "keep", "outside", "identity") if settings.renders else ()),
                         *(("geometry",) if settings.w_geometry > 0 else ()), *(("distil",) if settings.w_distil > 0 else ()),
                         *(("distil_image",) if settings.w_distil_image > 0 else ()),
                         *(("colour",) if settings.w_colour > 0 else ()), "total")
                bar.set_postfix({k: f"{sum(h.get(k, 0.0) for h in recent) / len(recent):.3f}" for k in shown})
                bar.update(1)
            if (step + 1) % settings.save_every == 0:
                save(step + 1)
    except KeyboardInterrupt:
        del history[done:]  # keep the history in step with the saved weights
        save(done)
        if bar is not None:
            bar.close()
        raise StylerigError(f"interrupted after step {done}; the state is in {checkpoint}: rerun the same command to resume") from None
    if bar is not None:
        bar.close()
    save(settings.steps)
    seconds = time.perf_counter() - tick
    span = max(1, min(20, len(history) // 4))

    def means(rows: list[dict]) -> dict[str, float]:
        return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in rows[-1]} if rows else {}

    mapper.eval()
    return {"history": history, "first": means(history[:span]), "last": means(history[-span:]), "span": span,
            "seconds": seconds, "steps_run": settings.steps - start, "world": d.world, "rank": d.rank}
