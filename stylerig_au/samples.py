"""AU-labelled generator samples: seed -> w -> image -> dlib landmarks -> OpenFace AUs and head pose.

The training data of the linear AU directions (and of the student AU detector). A dataset is a
folder, built chunk by chunk so that an interrupted run resumes from its last complete chunk:

``meta.json``
    ``format`` ('stylerig-au/au-samples'), ``format_version``, ``generator`` (``G.name``), ``psi``,
    ``seed_start``, ``chunk_size``, ``image_size``, ``aus`` (the AU order of the ``aus`` column),
    ``detector`` (what labelled them), ``pose`` ('pitch, yaw, roll (radians)').
``chunk_00000.pt``, ``chunk_00001.pt``, … (``torch.save`` dicts, weights-only loadable)
    ``seeds`` int64 [k] (chunk i holds seeds ``seed_start + i*chunk_size`` onwards; z = ``seed_to_z``);
    ``w`` float32 [k, w_dim] (after truncation ``psi``; the sample's W+ is w repeated ``num_ws`` times);
    ``aus`` float32 [k, 17] OpenFace intensities 0–5; ``pose`` float32 [k, 3] pitch, yaw, roll (rad);
    ``landmarks`` float32 [k, 68, 2] dlib pixel indices at the generator's resolution;
    ``face_found`` bool [k] (where False, ``aus``, ``pose`` and ``landmarks`` are NaN);
    ``images`` uint8 [k, 3, S, S]: the image, area-downsampled to ``image_size`` S.
    Other keys (e.g. the edit of an edited-sample dataset, :mod:`stylerig_au.edited_samples`) are
    loaded into :attr:`Samples.extra`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError
from stylerig_au.fileio import read_json

FORMAT = "stylerig-au/au-samples"
FORMAT_VERSION = 1
DETECT_SIDE = 512  # faces of FFHQ-aligned 1024² images are ~450 px wide: found quickly at 512 px without upsampling


@dataclass
class Samples:
    """A loaded dataset (all chunks, in seed order); fields as in the module docstring."""

    meta: dict
    seeds: torch.Tensor
    w: torch.Tensor
    aus: torch.Tensor
    pose: torch.Tensor
    landmarks: torch.Tensor
    face_found: torch.Tensor
    images: torch.Tensor | None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample fields beyond the standard ones

    def __len__(self) -> int:
        return int(self.seeds.numel())

    def valid(self) -> "Samples":
        """Only the samples where a face was found and labelled."""
        keep = self.face_found
        return Samples(self.meta, self.seeds[keep], self.w[keep], self.aus[keep], self.pose[keep],
                       self.landmarks[keep], keep[keep], None if self.images is None else self.images[keep],
                       {k: v[keep] for k, v in self.extra.items()})


def label_images(images: np.ndarray, detector, predictor: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Landmarks, AU intensities and head pose of the face in each of several face images.

    Args:
        images: uint8 [k, H, W, 3] RGB (e.g. generator samples).
        detector: an :class:`~stylerig_au.au.openface.OpenFaceAU`.
        predictor: dlib 68-landmark model path (default: the registry's).
    Returns:
        ``aus`` float32 [k, 17], ``pose`` float32 [k, 3], ``landmarks`` float32 [k, 68, 2], ``face_found``
        bool [k]; NaN rows where no face was found.
    """
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.au.pdm import rotation_to_euler

    k = len(images)
    aus = np.full((k, len(detector.aus)), np.nan, np.float32)
    pose = np.full((k, 3), np.nan, np.float32)
    marks = np.full((k, 68, 2), np.nan, np.float32)
    found = np.zeros(k, bool)
    idx, lms = [], []
    for i, image in enumerate(images):
        lm = landmarks_68(image, predictor, upsample=0, detect_max_side=DETECT_SIDE)
        if lm is None:
            lm = landmarks_68(image, predictor, upsample=1, detect_max_side=DETECT_SIDE // 2)
        if lm is not None:
            idx.append(i)
            lms.append(lm)
    if idx:
        aus[idx] = detector.predict_photos([images[i] for i in idx], lms)
        with torch.no_grad():
            fit = detector.fit(torch.from_numpy(np.stack(lms)).to(detector.weights.device, torch.float64))
        pose[idx] = rotation_to_euler(fit.rotation).cpu().numpy()
        marks[idx] = np.stack(lms)
        found[idx] = True
    return {"aus": aus, "pose": pose, "landmarks": marks, "face_found": found}


def _chunk_path(folder: Path, i: int) -> Path:
    return folder / f"chunk_{i:05d}.pt"


def _check_meta(folder: Path, meta: dict) -> None:
    """Write ``meta.json``, or check that an existing one describes the same dataset."""
    from stylerig_au.fileio import atomic_write_text

    file = folder / "meta.json"
    if file.is_file():
        old = read_json(file, "dataset description", "move the folder away or choose another one")
        old = old if isinstance(old, dict) else {}
        fixed = ("format", "generator", "psi", "seed_start", "chunk_size", "image_size", "aus", "edits")
        diff = [k for k in fixed if old.get(k) != meta.get(k)]
        if diff:
            raise StylerigError(f"{folder} holds another dataset ({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); "
                                "use another --data folder or the same settings")
        return
    atomic_write_text(file, json.dumps(meta, indent=1) + "\n")


def stored_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """The dataset's copy of float [N, 3, H, H] renders in [-1, 1]: area-downsampled to ``image_size``,
    uint8 [N, 3, image_size, image_size] on the CPU."""
    return (((F.interpolate(images, size=(image_size, image_size), mode="area") + 1) * 127.5)
            .round().clamp(0, 255).to(torch.uint8).cpu())


def dataset_meta(G, detector, *, psi: float, seed_start: int, chunk_size: int, image_size: int, **more) -> dict:
    """``meta.json`` of a dataset of ``G``'s samples labelled by ``detector`` (the OpenFace estimator),
    with the keys of the module docstring, plus ``more``."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": G.name, "psi": psi,
            "seed_start": seed_start, "chunk_size": chunk_size, "image_size": image_size,
            "aus": list(detector.aus), "detector": "openface-2.2 (stylerig_au)", "pose": "pitch, yaw, roll (radians)", **more}


def _make_chunk(G, detector, seeds: list[int], *, psi: float, image_size: int, device: str, batch_size: int,
                on_image: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Synthesise and label the samples of ``seeds``: one chunk dict in the format of the module docstring."""
    from stylerig_au.imageio import batch_to_uint8
    from stylerig_au.models import seed_to_z

    ws, imgs, small = [], [], []
    with torch.no_grad():
        for start in range(0, len(seeds), batch_size):
            z = torch.cat([seed_to_z(s, G.z_dim) for s in seeds[start:start + batch_size]]).to(device)
            w = G.mapping(z, psi=psi)
            img = G.synthesis(w[:, None].repeat(1, G.num_ws, 1)).clamp(-1, 1)
            imgs.extend(batch_to_uint8(img))
            small.append(stored_images(img, image_size))
            ws.append(w.float().cpu())
            if on_image:
                on_image(len(z))
    labels = label_images(np.stack(imgs), detector)
    return {"seeds": torch.tensor(seeds, dtype=torch.int64), "w": torch.cat(ws), "images": torch.cat(small),
            **{k: torch.from_numpy(v) for k, v in labels.items()}}


_WORKER: dict = {}  # a build worker process's generator, detector and settings (set once by _worker_init)


def _worker_init(G, detector, make: Callable, settings: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(G=G, detector=detector, make=make, settings=settings)


def _save_chunk(path: Path, chunk: dict[str, torch.Tensor]) -> None:
    """Write one chunk atomically (an interrupted write leaves no chunk file behind)."""
    from stylerig_au.fileio import atomic_torch_save

    atomic_torch_save(path, chunk)


def _worker_chunk(path: str, seeds: list[int]) -> int:
    """Make and save one chunk in a build worker process; returns its seed count."""
    w = _WORKER
    _save_chunk(Path(path), w["make"](w["G"], w["detector"], seeds, device="cpu", **w["settings"]))
    return len(seeds)


def build_samples(G, folder: str | os.PathLike, num: int, *, detector=None, psi: float = 0.8, seed_start: int = 0,
                  chunk_size: int = 32, image_size: int = 256, device: str = "cpu", batch_size: int = 1,
                  workers: int = 1, progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Make (or complete) an AU-labelled dataset of ``num`` generator samples in ``folder``.

    Chunks already on disk are kept, so a second call resumes an interrupted run and a larger
    ``num`` extends a dataset. Each chunk is written atomically.

    Args:
        G: the generator; ``detector``: OpenFace estimator (default: the registry's).
        psi: truncation for the sampled w (diversity vs. quality).
        chunk_size: samples per file; ``image_size``: side of the stored images.
        batch_size: synthesis batch (1 is fastest per image on a CPU).
        workers: CPU processes making chunks side by side (dlib's face detection and landmarks use one
            core, so on a CPU one worker per core is about that many times faster). Each worker gets
            ``torch.get_num_threads() // workers`` threads (at least 1). Only for ``device='cpu'``.
            The chunks are the same whatever the number of workers, up to float rounding.
    Returns:
        The folder.
    """
    from stylerig_au.au.detect import make_detector

    detector = detector if detector is not None else make_detector()
    meta = dataset_meta(G, detector, psi=psi, seed_start=seed_start, chunk_size=chunk_size, image_size=image_size)
    return build_chunked(G, detector, folder, num, meta, _make_chunk, {"psi": psi, "image_size": image_size, "batch_size": batch_size},
                         device=device, workers=workers, progress=progress, log=log, desc="samples")


def build_chunked(G, detector, folder: str | os.PathLike, num: int, meta: dict, make: Callable, settings: dict, *,
                  device: str = "cpu", workers: int = 1, progress: bool = True, log: Callable[[str], None] | None = None,
                  desc: str = "samples") -> Path:
    """Make (or complete) a chunked dataset of ``num`` seeds from ``meta["seed_start"]`` in ``folder``
    (``meta["chunk_size"]`` seeds per chunk), writing or checking ``meta.json`` first; chunks already
    on disk are kept. ``make`` and ``settings``: as for :func:`make_chunks`. Returns the folder."""
    chunk_size, seed_start = int(meta["chunk_size"]), int(meta["seed_start"])
    if num < 1 or chunk_size < 1:
        raise StylerigError("the dataset needs at least one sample and chunks of at least one")
    if workers < 1:
        raise StylerigError(f"the dataset needs at least one worker, got {workers}")
    if workers > 1 and str(device) != "cpu":
        raise StylerigError(f"several build workers run on the CPU only; use one worker with --device {device}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_meta(folder, meta)
    n_chunks = -(-num // chunk_size)
    todo = [i for i in range(n_chunks) if not _chunk_path(folder, i).is_file()]
    if log and len(todo) < n_chunks:
        log(f"{folder}: {n_chunks - len(todo)} of {n_chunks} chunks already made; resuming")
    seeds_of = {i: list(range(seed_start + i * chunk_size, seed_start + (i + 1) * chunk_size)) for i in todo}
    make_chunks(G, detector, folder, todo, seeds_of, make, settings, device=device, workers=workers, progress=progress, desc=desc)
    return folder


def make_chunks(G, detector, folder: Path, todo: list[int], seeds_of: dict[int, list[int]], make: Callable, settings: dict, *,
                device: str = "cpu", workers: int = 1, progress: bool = True, desc: str = "samples") -> None:
    """Make and save the chunks ``todo`` (chunk i holds ``seeds_of[i]``), in this process or in workers.

    ``make(G, detector, seeds, device=..., on_image=None, **settings)`` returns one chunk dict; it must
    be a module-level function (the workers are spawned processes).
    """
    from tqdm import tqdm

    bar = tqdm(total=sum(len(seeds_of[i]) for i in todo), desc=desc, unit="seed", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                _save_chunk(_chunk_path(folder, i), make(G, detector, seeds_of[i], device=device, on_image=bar.update, **settings))
        else:
            _build_in_workers(G, detector, folder, todo, seeds_of, workers, bar, make, settings)
    finally:
        bar.close()


def _build_in_workers(G, detector, folder: Path, todo: list[int], seeds_of: dict[int, list[int]], workers: int,
                      bar, make: Callable, settings: dict) -> None:
    """Make the chunks ``todo`` in ``workers`` spawned processes, one chunk per task (each written by its worker)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, torch.get_num_threads() // workers)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(G, detector, make, settings, threads))
    try:
        pending = {pool.submit(_worker_chunk, str(_chunk_path(folder, i)), seeds_of[i]) for i in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for job in done:
                bar.update(job.result())  # re-raises a worker's error here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def load_samples(folder: str | os.PathLike, with_images: bool = False, limit: int | None = None) -> Samples:
    """Read a dataset made by :func:`build_samples` (chunks in order; the first ``limit`` samples)."""
    folder = Path(folder)
    file = folder / "meta.json"
    if not file.is_file():
        raise StylerigError(f"{folder}: no AU sample dataset here (make one with `stylerig-au learn-directions --data {folder}`)")
    meta = read_json(file, "dataset description", "rebuild the dataset")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise StylerigError(f"{folder}: not a stylerig-au AU sample dataset of a version this stylerig_au reads")
    parts: dict[str, list[torch.Tensor]] = {}
    count, i = 0, 0
    while _chunk_path(folder, i).is_file() and (limit is None or count < limit):
        try:
            chunk = torch.load(_chunk_path(folder, i), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a damaged chunk: say which and how to fix it
            raise StylerigError(f"{_chunk_path(folder, i)}: damaged ({type(err).__name__}); delete it and rebuild") from None
        for key, value in chunk.items():
            if key != "images" or with_images:
                parts.setdefault(key, []).append(value)
        count += len(chunk["seeds"])
        i += 1
    if not parts:
        raise StylerigError(f"{folder}: the dataset has no chunks yet")
    cat = {k: torch.cat(v)[:limit] for k, v in parts.items()}
    standard = {"seeds", "w", "aus", "pose", "landmarks", "face_found", "images"}
    return Samples(meta, cat["seeds"], cat["w"], cat["aus"], cat["pose"], cat["landmarks"],
                   cat["face_found"].bool(), cat.get("images"), {k: v for k, v in cat.items() if k not in standard})
