"""AU-labelled *edited* generator samples: the faces an AU editor produces, labelled by OpenFace.

The student AU detector is distilled from OpenFace on plain generator samples (:mod:`stylerig_au.samples`).
The edits it supervises (the mapper's, and above all the per-face refinement's) leave that
distribution: large requests, unusual AU combinations, the artefacts edits bring (red lips, beards,
glasses), and images an optimiser pushed to satisfy the student. Where the student reads such images
differently from OpenFace, an edit trained or refined against it can satisfy the student without
moving OpenFace. This dataset puts edited faces into the student's training data.

For every seed, two rows: the plain sample (w = mapping(z, psi), repeated over W+) and the same face
edited by the AU mapper with a random request: 1..``max_aus`` AUs, magnitudes uniform in
[``delta_min``, ``delta_max``], a ``negative`` share of them lowered, all multiplied by one gain drawn
uniformly from [``gain_min``, ``gain_max``] (gains above 1 reach the larger edits that calibrated
mappers and the refinement make). The request depends only on the seed, so a dataset is the same
whatever its chunking or number of workers. OpenFace labels both images (dlib landmarks on the 1024²
image), exactly as for plain samples.

With ``refine_at`` (e.g. ``(4, 8, 12)``) each edit is also refined for its face against a student
detector (:class:`~stylerig_au.edit.refine.EditRefiner`, what ``edit --refine`` does) and the edit is
stored after each of those step counts instead of the mapper's one-pass edit (0 in ``refine_at``
keeps that one too): the images an optimisation against that student produces, which are where a
student is exploited, labelled by OpenFace. One refinement of ``max(refine_at)`` steps gives them all.

Same folder format as :mod:`stylerig_au.samples` (so :func:`~stylerig_au.samples.load_samples` reads it
and ``train-detector --data`` trains on it), with ``meta["edits"]`` describing the edits, rows per seed
(``seeds`` repeated; a held-out split by seed keeps them together): the plain face, then its edit(s),
and four extra per-row fields: ``edited`` bool [k], ``delta`` float32 [k, 17], the mapper's input
(request × gain; zeros on plain rows), ``refine_steps`` int64 [k] (the refinement steps behind the
edit; 0 for the mapper's edit, -1 on plain rows) and ``dw`` float16 [k, num_ws, w_dim], the edit's
Δw+ (zeros on plain rows): the targets ``train-mapper --distil`` teaches the one-pass mapper.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylerig_au.errors import StylerigError

EDITED_SEED_START = 6_000_000  # disjoint from the direction samples (0+), probes (1,000,000+), held-out faces (2,000,000+), mapper training (3,000,000 + k x 10,000,000)


@dataclass(frozen=True)
class EditRequests:
    """How the random edit of each seed is drawn (see the module docstring)."""

    max_aus: int = 2
    delta_min: float = 0.5
    delta_max: float = 3.0
    negative: float = 0.2
    gain_min: float = 1.0
    gain_max: float = 2.5

    def check(self) -> None:
        if self.max_aus < 1:
            raise StylerigError(f"edited samples need at least one AU per edit, got max_aus={self.max_aus}")
        if not 0 < self.delta_min <= self.delta_max:
            raise StylerigError(f"need 0 < delta_min <= delta_max, got {self.delta_min}, {self.delta_max}")
        if not 0 < self.gain_min <= self.gain_max:
            raise StylerigError(f"need 0 < gain_min <= gain_max, got {self.gain_min}, {self.gain_max}")
        if not 0 <= self.negative <= 1:
            raise StylerigError(f"the share of lowered AUs must be in [0, 1], got {self.negative}")


def edit_request(seed: int, num_aus: int, r: EditRequests) -> torch.Tensor:
    """The mapper input of ``seed``'s edit: float32 [num_aus], request × gain, 1..max_aus non-zero entries."""
    gen = torch.Generator().manual_seed(int(seed))
    k = int(torch.randint(1, min(r.max_aus, num_aus) + 1, (1,), generator=gen))
    picks = torch.randperm(num_aus, generator=gen)[:k]
    mags = r.delta_min + (r.delta_max - r.delta_min) * torch.rand(k, generator=gen)
    signs = torch.where(torch.rand(k, generator=gen) < r.negative, -1.0, 1.0)
    gain = r.gain_min + (r.gain_max - r.gain_min) * float(torch.rand(1, generator=gen))
    delta = torch.zeros(num_aus)
    delta[picks] = mags * signs * gain
    return delta


_REFINERS: dict = {}  # one EditRefiner per (process, student): LPIPS and the face network load once


def _refiner(G, student, w_std: torch.Tensor, settings):
    from stylerig_au.edit.refine import EditRefiner

    key = (id(G), id(student), settings)
    if key not in _REFINERS:
        _REFINERS.clear()
        _REFINERS[key] = EditRefiner(G, student.eval(), w_std, settings)
    return _REFINERS[key]


def _make_edited_chunk(G, detector, seeds: list[int], *, mapper, requests: EditRequests, psi: float, image_size: int,
                       device: str, refine_at: tuple[int, ...] = (), refine_student=None, refine_settings=None,
                       on_image: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Synthesise, edit (and refine) and label the samples of ``seeds``: a chunk dict with rows
    (plain, edit per entry of ``refine_at`` or the mapper's edit) per seed."""
    from stylerig_au.imageio import batch_to_uint8
    from stylerig_au.models import seed_to_z
    from stylerig_au.samples import label_images, stored_images

    ws_all, deltas, steps_of, big, small, dws = [], [], [], [], [], []
    mapper = mapper.to(device).eval()
    refiner = _refiner(G, refine_student.to(device), mapper.w_std, refine_settings) if refine_at else None
    for seed in seeds:
        with torch.no_grad():
            w = G.mapping(seed_to_z(seed, G.z_dim).to(device), psi=psi)
            ws = w[:, None].repeat(1, G.num_ws, 1)
            delta = edit_request(seed, len(mapper.aus), requests)
            step = mapper(ws, delta[None].to(device)).to(ws.dtype)
        if refiner is None:
            steps, counts = [step], [0]
        else:
            change = delta[None].to(device)[:, [mapper.aus.index(a) for a in refiner.aus]]
            path = refiner.refine_path(ws, step, change, list(refine_at))
            counts = list(refine_at)
            steps = [path[k].to(ws.dtype) for k in counts]
        edits = [ws + s for s in steps]
        dws.append(torch.cat([torch.zeros_like(step), *steps]).detach().half().cpu())
        with torch.no_grad():
            img = G.synthesis(torch.cat([ws, *edits])).clamp(-1, 1)
        big.extend(batch_to_uint8(img))
        small.append(stored_images(img, image_size))
        ws_all.append(w.float().cpu().repeat(1 + len(edits), 1))
        deltas.append(torch.stack([torch.zeros_like(delta), *[delta] * len(edits)]))
        steps_of.extend([-1, *counts])
        if on_image:
            on_image(1)
    labels = label_images(np.stack(big), detector)
    per_seed = len(steps_of) // len(seeds)
    return {"seeds": torch.tensor(seeds, dtype=torch.int64).repeat_interleave(per_seed), "w": torch.cat(ws_all),
            "images": torch.cat(small), "edited": torch.tensor(steps_of) >= 0, "delta": torch.cat(deltas),
            "refine_steps": torch.tensor(steps_of, dtype=torch.int64), "dw": torch.cat(dws), **{k: torch.from_numpy(v) for k, v in labels.items()}}


def _describe(name: str | os.PathLike) -> str:
    """``name``, or for an existing file its file name and sha256."""
    from stylerig_au.pretrained import sha256_file

    if not Path(name).is_file():
        return str(name)
    return f"{Path(name).name} (sha256 {sha256_file(Path(name))})"


def build_edited_samples(G, mapper, folder: str | os.PathLike, num: int, *, mapper_name: str,
                         requests: EditRequests = EditRequests(), detector=None, psi: float = 0.8,
                         seed_start: int = EDITED_SEED_START, chunk_size: int = 16, image_size: int = 256,
                         device: str = "cpu", workers: int = 1, progress: bool = True,
                         refine_at: tuple[int, ...] = (), refine_student=None, refine_student_name: str = "",
                         refine_settings=None, log: Callable[[str], None] | None = None) -> Path:
    """Make (or complete) a dataset of ``num`` seeds of plain and mapper-edited (or refined) faces.

    Resumable like :func:`~stylerig_au.samples.build_samples` (finished chunks are kept; a rerun with
    other settings, or another mapper, is refused). Each chunk is written atomically.

    Args:
        G: the generator; ``mapper``: an :class:`~stylerig_au.edit.mapper.AUMapper` for it (its input
            gains apply on top of the request's gain).
        mapper_name: what the mapper is (a file path, whose sha256 is recorded, or a name), for ``meta.json``.
        requests: how each seed's edit is drawn; ``detector``: OpenFace estimator (default: the registry's).
        workers: CPU processes side by side (as for plain samples).
        refine_at: step counts after which a refined edit is stored (empty: the mapper's edit only);
            ``refine_student``: the :class:`~stylerig_au.au.student.StudentAUNet` it refines against,
            ``refine_student_name`` what it is (a file: its sha256 is recorded); ``refine_settings``:
            :class:`~stylerig_au.edit.refine.RefineSettings` (default: the defaults; ``steps`` is unused).
    Returns:
        The folder.
    """
    from stylerig_au.au.detect import make_detector
    from stylerig_au.edit.refine import RefineSettings
    from stylerig_au.samples import build_chunked, dataset_meta

    requests.check()
    refine_at = tuple(int(k) for k in refine_at)
    if refine_at and (refine_student is None or min(refine_at) < 0 or len(set(refine_at)) != len(refine_at)):
        raise StylerigError(f"refined edited samples need a student to refine against and distinct step counts >= 0, got {list(refine_at)}")
    refine_settings = refine_settings or RefineSettings()
    detector = detector if detector is not None else make_detector()
    if list(mapper.aus) != list(detector.aus):
        raise StylerigError(f"the mapper edits AU {', '.join(map(str, mapper.aus))}, but the labels cover "
                            f"AU {', '.join(map(str, detector.aus))}; use a mapper for all of them")
    gains = [round(float(g), 6) for g in mapper.input_gain.cpu()]
    edits = {"mapper": _describe(mapper_name), "mapper_input_gains": gains, **asdict(requests)}
    if refine_at:
        edits["refine"] = {"at": list(refine_at), "student": _describe(refine_student_name or "given"),
                           **{k: v for k, v in asdict(refine_settings).items() if k != "steps"}}
    meta = dataset_meta(G, detector, psi=psi, seed_start=seed_start, chunk_size=chunk_size, image_size=image_size, edits=edits,
                        rows="per seed: the plain sample, then its edit(s) ('edited', 'delta', 'refine_steps', 'dw')")
    settings = {"mapper": mapper, "requests": requests, "psi": psi, "image_size": image_size}
    if refine_at:
        settings.update(refine_at=refine_at, refine_student=refine_student, refine_settings=refine_settings)
    return build_chunked(G, detector, folder, num, meta, _make_edited_chunk, settings, device=device, workers=workers,
                         progress=progress, log=log, desc="edited samples")
