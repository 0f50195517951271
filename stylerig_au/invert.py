"""W+ inversion of real photos: find latents whose rendering matches an aligned face.

Written against the generator protocol only (``stylerig_au.models.protocol.Generator``).
Optimisation: W+ starts at the mean latent ``w_avg`` in every slot; Adam with a learning rate that
ramps up over the first ``lr_rampup`` of the steps and down (cosine) over the last ``lr_rampdown``;
loss = ``lpips_weight`` LPIPS-VGG16 + ``mse_weight`` pixel MSE (both on [-1, 1] images area-resized
to ``loss_size``², 256 by default, so a CPU copes) + ``w_reg_weight`` x the mean squared distance of
the slots from their own mean (keeps W+ near W, so edits stay clean). For generators with per-layer
noise buffers (StyleGAN2: modules holding a ``noise_const`` tensor) the noise maps are optimised
per image too, with NVIDIA's multi-scale autocorrelation penalty (``noise_reg_weight``) and
re-normalised after each step; MobileStyleGAN has its noise baked in and only W+ is optimised.

Photos are optimised in batches (independent per image: the loss is a sum over images and Adam is
element-wise). Runs are reproducible for a seed, resumable (``<stem>.ckpt.pt`` every
``checkpoint_every`` steps beside the outputs; a rerun continues from it, a finished ``<stem>.pt``
is skipped) and shard their photos across processes when launched by ``torchrun`` (``RANK`` /
``WORLD_SIZE`` / ``LOCAL_RANK``; one process per GPU, no communication needed).

Latent file ``<stem>.pt`` (``torch.save`` of a dict; read it with :func:`load_latent`):

==================  ==========================================================================
``format``          ``'stylerig-au/latent'``
``format_version``  1
``ws``              float32 [num_ws, w_dim], the W+ latent
``noise``           dict module-name -> float32 [1, H, W] optimised noise maps, or ``{}``
``generator``       generator id (``G.name``), plus ``resolution``, ``num_ws``, ``w_dim``
``source``          the photo's path as given; ``source_sha256``: sha256 of the photo file bytes
``face_index``      which face of the photo (0 unless ``all_faces``)
``transform``       the alignment (:meth:`stylerig_au.align.FaceTransform.to_dict`), or None
                    when the input was used as already aligned
``losses``          final per-image losses: ``total``, ``lpips``, ``mse``, ``w_reg``, ``noise_reg``
``steps``           optimisation steps run; ``config``: the :class:`InvertConfig` as a dict
``seconds``         optimisation wall time per image (its batch's time / batch size, summed over
                    resumed runs); older files may lack it
``created``         UTC ISO time; ``stylerig_au_version``
==================  ==========================================================================
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.errors import StylerigError

LATENT_FORMAT = "stylerig-au/latent"
LATENT_FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "stylerig-au/invert-checkpoint"

# Inversion steps when the user gives none: the full setting on a GPU, the quick one on a CPU, where the
# full one takes ~20 min a photo on 2 cores (experiments/RESULTS.md §1). The quick one needs a larger lr.
FULL_STEPS = 500
QUICK_STEPS = 60
QUICK_LR = 0.08


def on_gpu(device: str | torch.device) -> bool:
    """True when ``device`` ('cpu', 'cuda', 'cuda:1', a torch.device) is a GPU."""
    return str(device).startswith("cuda")


def default_steps(device: str | torch.device) -> int:
    """Inversion steps for ``device`` when none are given: :data:`FULL_STEPS` on a GPU, :data:`QUICK_STEPS` on a CPU."""
    return FULL_STEPS if on_gpu(device) else QUICK_STEPS


def default_lr(steps: int) -> float:
    """Peak learning rate for ``steps`` when none is given: :data:`QUICK_LR` up to twice the quick steps, else 0.05."""
    return QUICK_LR if steps <= 2 * QUICK_STEPS else InvertConfig.lr


def steps_note(device: str | torch.device) -> str:
    """One line for the user: which inversion steps :func:`default_steps` chose for ``device`` and how to change it."""
    if on_gpu(device):
        return f"inversion: {FULL_STEPS} steps, the full setting for a GPU (--steps {QUICK_STEPS} for the quick one)"
    return (f"inversion: {QUICK_STEPS} steps, the quick setting for a CPU (--steps {FULL_STEPS} for the full one: "
            "better, ~20 min a photo on 2 cores)")


@dataclass
class InvertConfig:
    """Optimisation settings (see the module docstring)."""

    steps: int = 500
    lr: float = 0.05
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    loss_size: int = 256
    lpips_weight: float = 1.0
    mse_weight: float = 1.0
    w_reg_weight: float = 0.01
    noise_reg_weight: float = 1e4
    optimize_noise: bool | None = None  # None: when the generator has noise buffers
    seed: int = 0
    checkpoint_every: int = 50

    def lr_at(self, step: int) -> float:
        """Learning rate of (0-based) ``step``."""
        t = step / max(self.steps, 1)
        ramp_down = min(1.0, (1.0 - t) / self.lr_rampdown) if self.lr_rampdown > 0 else 1.0
        ramp = 0.5 - 0.5 * math.cos(ramp_down * math.pi)
        if self.lr_rampup > 0:
            ramp *= min(1.0, (t + 1.0 / max(self.steps, 1)) / self.lr_rampup)
        return self.lr * ramp

    def schedule_key(self) -> dict:
        """Settings a checkpoint must share to be resumed (everything but the checkpoint period)."""
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        return d


# ----------------------------------------------------------------------------- noise buffers


def noise_modules(G: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Modules of G that hold a per-layer noise map ``noise_const`` [H, W] (StyleGAN2), by name."""
    if not isinstance(G, torch.nn.Module):
        return {}
    return {name: m for name, m in G.named_modules() if isinstance(getattr(m, "noise_const", None), torch.Tensor)}


class _SwappedNoise:
    """Context manager: temporarily replace G's noise buffers by per-image maps [N, 1, H, W]."""

    def __init__(self, G: torch.nn.Module, maps: dict[str, torch.Tensor]) -> None:
        self.modules = noise_modules(G)
        self.maps = maps
        self.saved: dict[str, torch.Tensor] = {}

    def __enter__(self) -> None:
        for name, tensor in self.maps.items():
            module = self.modules[name]
            self.saved[name] = module.noise_const
            module._buffers["noise_const"] = tensor

    def __exit__(self, *exc) -> None:
        for name, tensor in self.saved.items():
            self.modules[name]._buffers["noise_const"] = tensor


def _noise_reg(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """NVIDIA's noise penalty per image [N]: squared autocorrelation at 1 px, over an image pyramid."""
    total = 0
    for n in maps:
        while True:
            total = total + (n * torch.roll(n, 1, dims=3)).mean(dim=(1, 2, 3)) ** 2
            total = total + (n * torch.roll(n, 1, dims=2)).mean(dim=(1, 2, 3)) ** 2
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total


# ----------------------------------------------------------------------------- the optimisation


@dataclass
class InversionState:
    """Per-batch optimisation state; every tensor has the batch on dim 0 (so it can be split per image).

    ws: [N, num_ws, w_dim]; noise: name -> [N, 1, H, W]; adam: name -> (exp_avg, exp_avg_sq) with the
    shapes of the parameter (name 'ws' or 'noise:<module>'); step: steps done.
    """

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]
    adam: dict[str, tuple[torch.Tensor, torch.Tensor]]
    step: int = 0

    def split(self) -> list[dict]:
        """One plain dict per image (tensors on the CPU)."""
        out = []
        for i in range(self.ws.shape[0]):
            out.append(
                {
                    "ws": self.ws[i].detach().cpu().clone(),
                    "noise": {k: v[i].detach().cpu().clone() for k, v in self.noise.items()},
                    "adam": {k: (a[i].cpu().clone(), b[i].cpu().clone()) for k, (a, b) in self.adam.items()},
                    "step": self.step,
                }
            )
        return out

    @classmethod
    def stack(cls, items: Sequence[dict], device: torch.device | str) -> "InversionState":
        steps = {it["step"] for it in items}
        if len(steps) != 1:
            raise ValueError("images of one batch must share their step")
        noise = {k: torch.stack([it["noise"][k] for it in items]).to(device) for k in items[0]["noise"]}
        adam = {
            k: (torch.stack([it["adam"][k][0] for it in items]).to(device), torch.stack([it["adam"][k][1] for it in items]).to(device))
            for k in items[0]["adam"]
        }
        return cls(torch.stack([it["ws"] for it in items]).to(device), noise, adam, steps.pop())


def initial_state(G, n: int, optimize_noise: bool, seed: int, device: torch.device | str) -> InversionState:
    """W+ = w_avg in every slot; noise maps (if optimised) start from the generator's own, normalised."""
    del seed  # the start is deterministic; kept in the signature for future random starts
    ws = G.w_avg.detach().to(device=device, dtype=torch.float32).view(1, 1, -1).repeat(n, G.num_ws, 1)
    noise = {}
    if optimize_noise:
        for name, m in noise_modules(G).items():
            base = m.noise_const.detach().to(device=device, dtype=torch.float32)
            base = (base - base.mean()) / (base.std() + 1e-8)
            noise[name] = base.view(1, 1, *base.shape[-2:]).repeat(n, 1, 1, 1)
    return InversionState(ws=ws, noise=noise, adam={})


def prepare_targets(images: Sequence[np.ndarray] | torch.Tensor, size: int, device: torch.device | str) -> torch.Tensor:
    """Aligned faces (uint8 [S, S, 3] each, or float [N, 3, S, S] in [-1, 1]) -> float32 [N, 3, size, size]."""
    if isinstance(images, torch.Tensor):
        t = images.float()
    else:
        arrs = [np.asarray(im) for im in images]
        for a in arrs:
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or a.shape[0] != a.shape[1]:
                raise StylerigError(f"inversion needs square uint8 RGB faces [S, S, 3], got {a.dtype} {a.shape}")
        t = torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrs]).float() / 127.5 - 1
    t = t.to(device)
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="area" if t.shape[-1] > size else "bilinear", align_corners=None)
    return t


def render(G, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """G.synthesis(ws) [N, 3, R, R] with optimised noise maps (name -> [N, 1, H, W] or [1, H, W]) swapped in."""
    if not noise:
        return G.synthesis(ws)
    maps = {k: (v if v.ndim == 4 else v[None]).to(ws.device) for k, v in noise.items()}
    with _SwappedNoise(G, maps):
        return G.synthesis(ws)


def optimize(
    G,
    targets: torch.Tensor,
    config: InvertConfig,
    lpips_model: torch.nn.Module,
    state: InversionState | None = None,
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    on_checkpoint: Callable[[InversionState], None] | None = None,
) -> tuple[InversionState, dict[str, np.ndarray]]:
    """Optimise W+ (and noise) for ``targets`` [N, 3, s, s] in [-1, 1] with s = ``config.loss_size``.

    Continues from ``state`` when given (its ``step`` steps are already done). ``on_step(step, losses)``
    is called after each step with per-image losses; ``on_checkpoint(state)`` every
    ``config.checkpoint_every`` steps. Returns the final state and the per-image losses of the last
    evaluation (float64 [N] each).
    """
    device = targets.device
    n = targets.shape[0]
    has_noise = bool(noise_modules(G))
    optimize_noise = has_noise if config.optimize_noise is None else (config.optimize_noise and has_noise)
    if state is None:
        state = initial_state(G, n, optimize_noise, config.seed, device)
    torch.manual_seed(config.seed + state.step)
    ws = state.ws.detach().clone().requires_grad_(True)
    noise = {k: v.detach().clone().requires_grad_(True) for k, v in state.noise.items()}
    params = {"ws": ws, **{f"noise:{k}": v for k, v in noise.items()}}
    opt = torch.optim.Adam(list(params.values()), lr=config.lr, betas=(0.9, 0.999))
    if state.adam:
        for key, p in params.items():
            exp_avg, exp_avg_sq = state.adam[key]
            opt.state[p] = {
                "step": torch.tensor(float(state.step)),
                "exp_avg": exp_avg.to(device).clone(),
                "exp_avg_sq": exp_avg_sq.to(device).clone(),
            }

    # LPIPS-style models with a feature cache avoid re-running VGG on the fixed targets every step
    if hasattr(lpips_model, "features") and hasattr(lpips_model, "distance_to_features"):
        with torch.no_grad():
            target_feats = [f.detach() for f in lpips_model.features(targets)]

        def perceptual(img: torch.Tensor) -> torch.Tensor:
            return lpips_model.distance_to_features(img, target_feats)
    else:

        def perceptual(img: torch.Tensor) -> torch.Tensor:
            return lpips_model(img, targets)

    def losses_now() -> dict[str, torch.Tensor]:
        img = render(G, ws, noise)
        if img.shape[-1] != config.loss_size:
            img = F.interpolate(img, size=(config.loss_size, config.loss_size), mode="area")
        out = {
            "lpips": perceptual(img),
            "mse": (img - targets).pow(2).mean(dim=(1, 2, 3)),
            "w_reg": (ws - ws.mean(dim=1, keepdim=True)).pow(2).mean(dim=(1, 2)),
            "noise_reg": _noise_reg(list(noise.values())) if noise else torch.zeros(n, device=device),
        }
        out["total"] = (
            config.lpips_weight * out["lpips"]
            + config.mse_weight * out["mse"]
            + config.w_reg_weight * out["w_reg"]
            + config.noise_reg_weight * out["noise_reg"]
        )
        return out

    def snapshot(step: int) -> InversionState:
        adam = {}
        for key, p in params.items():
            st = opt.state.get(p)
            if st:
                adam[key] = (st["exp_avg"].detach().clone(), st["exp_avg_sq"].detach().clone())
        return InversionState(ws.detach().clone(), {k: v.detach().clone() for k, v in noise.items()}, adam, step)

    last: dict[str, torch.Tensor] = {}
    for step in range(state.step, config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        opt.zero_grad(set_to_none=True)
        last = losses_now()
        last["total"].sum().backward()
        opt.step()
        if noise:
            with torch.no_grad():
                for v in noise.values():
                    v.sub_(v.mean(dim=(1, 2, 3), keepdim=True))
                    v.div_(v.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-8)
        if on_step is not None:
            on_step(step + 1, {k: t.detach() for k, t in last.items()})
        if on_checkpoint is not None and config.checkpoint_every > 0 and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            on_checkpoint(snapshot(step + 1))
    with torch.no_grad():
        final = losses_now()
    return snapshot(config.steps), {k: v.double().cpu().numpy() for k, v in final.items()}


# ----------------------------------------------------------------------------- latent files


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_latent(path: str | os.PathLike, record: dict) -> Path:
    """Write a latent record (see the module docstring) atomically, read back before the rename.

    Raises StylerigError for a record whose W+ (``ws``) is not finite (a diverged optimisation): such a
    latent renders noise, so it is never written.
    """
    from stylerig_au.fileio import atomic_torch_save

    ws = record.get("ws")
    if isinstance(ws, torch.Tensor) and not bool(torch.isfinite(ws).all()):
        raise StylerigError(f"{Path(path).name}: the inversion diverged (non-finite W+); nothing was written; "
                            "try a smaller --lr or --w-reg")
    return atomic_torch_save(path, record)


def load_latent(path: str | os.PathLike) -> dict:
    """Read and check a latent file; raises StylerigError for anything that is not one."""
    from stylerig_au.fileio import load_record

    return load_record(path, LATENT_FORMAT, LATENT_FORMAT_VERSION, "latent file", "run `stylerig-au invert` to make one")


def latent_mismatch(record: dict, generator: str, digest: str, face_index: int, config: InvertConfig | None) -> str | None:
    """Why a latent ``record`` is not the inversion of face ``face_index`` of the photo with sha256 ``digest``
    by ``generator`` with ``config`` (any settings when None), as 'holds ...' text; None when it is (a cache hit)."""
    if record.get("source_sha256") != digest:
        return f"holds the latent of another photo ({record.get('source', '?')})"
    if record.get("generator") != generator:
        return f"holds a latent made with generator {record.get('generator')!r}"
    if record.get("face_index", 0) != face_index:
        return f"holds the latent of face {record.get('face_index')} of this photo"
    saved = {k: v for k, v in (record.get("config") or {}).items() if k != "checkpoint_every"}
    if config is not None and saved != config.schedule_key():
        return f"holds this photo's latent made with other settings ({saved.get('steps', '?')} steps, lr {saved.get('lr', '?')})"
    return None


def render_latent(G, record: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """Render a latent record with G: image [1, 3, R, R] in [-1, 1] (noise maps restored if any)."""
    if record["generator"] != getattr(G, "name", None):
        raise StylerigError(f"latent was made with generator {record['generator']!r}, not {getattr(G, 'name', '?')!r}")
    ws = record["ws"].to(device)[None]
    noise = {k: v.to(device) for k, v in record.get("noise", {}).items()}
    with torch.no_grad():
        return render(G, ws, noise)


def latent_record(G, item: "Job", image_state: dict, losses: dict[str, float], config: InvertConfig, seconds: float) -> dict:
    """The latent-file dict (module docstring) of one inverted face: ``image_state`` from
    :meth:`InversionState.split`, its final ``losses``, and its optimisation ``seconds``."""
    from stylerig_au import __version__

    return {
        "format": LATENT_FORMAT,
        "format_version": LATENT_FORMAT_VERSION,
        "ws": image_state["ws"].float().contiguous(),
        "noise": {k: v.float().contiguous() for k, v in image_state["noise"].items()},
        "generator": getattr(G, "name", type(G).__name__),
        "resolution": int(G.resolution),
        "num_ws": int(G.num_ws),
        "w_dim": int(G.w_dim),
        "source": item.source,
        "source_sha256": item.source_sha256,
        "face_index": item.face_index,
        "transform": item.transform,
        "losses": losses,
        "steps": config.steps,
        "config": dataclasses.asdict(config),
        "seconds": float(seconds),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stylerig_au_version": __version__,
    }


# ----------------------------------------------------------------------------- photos -> files


@dataclass
class Job:
    """One face to invert: ``stem`` names its outputs; ``image`` is the aligned uint8 [R, R, 3] face."""

    stem: str
    source: str
    source_sha256: str
    face_index: int
    image: np.ndarray
    photo: np.ndarray
    transform: dict | None


@dataclass
class FileResult:
    """What happened to one input: ``status`` is 'done', 'skipped' or 'error' (``message`` says why)."""

    source: str
    stem: str | None
    status: str
    message: str = ""
    latent: Path | None = None
    recon: Path | None = None
    seconds: float = 0.0
    losses: dict | None = None


def shard_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it
    (:func:`stylerig_au.devices.torchrun_env`)."""
    from stylerig_au.devices import torchrun_env

    return torchrun_env()


def shard(items: Sequence, rank: int, world: int) -> list:
    """Items of this process: every ``world``-th, starting at ``rank``."""
    return list(items)[rank::world]


def prepare_jobs(
    path: Path, resolution: int, aligned: bool = False, all_faces: bool = False, upsample: int = 1
) -> list[Job]:
    """Load (and align unless ``aligned``) one photo into Jobs; raises StylerigError naming the file."""
    from stylerig_au.imageio import load_image, resize

    photo = load_image(path)
    digest = sha256_file(path)
    if aligned:
        h, w = photo.shape[:2]
        if h != w:
            raise StylerigError(f"{path}: --aligned needs a square face image, got {w}x{h}")
        image = photo if h == resolution else resize(photo, (resolution, resolution))
        return [Job(path.stem, str(path), digest, 0, image, photo, None)]
    from stylerig_au.align import align_image

    faces = align_image(photo, output_size=resolution, all_faces=all_faces, upsample=upsample, name=str(path))
    return [
        Job(f"{path.stem}_face{k}" if all_faces else path.stem, str(path), digest, k, f.image, photo, f.transform.to_dict())
        for k, f in enumerate(faces)
    ]


def invert_files(
    G,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: InvertConfig | None = None,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    aligned: bool = False,
    all_faces: bool = False,
    upsample: int = 1,
    overwrite: bool = False,
    lpips_model: torch.nn.Module | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    grid_name: str | None = "grid.png",
) -> list[FileResult]:
    """Invert photos into ``out_dir``: ``<stem>.pt`` + ``<stem>_recon.png`` each, and a grid.

    Bad inputs (unreadable, no face, several faces, face too small) give a FileResult with status
    'error' and leave no file behind; the other photos go on. Under torchrun each process takes its
    shard of ``paths`` and writes ``grid_rank<r>.png``.

    Existing files follow :mod:`stylerig_au.outputs`: a latent of the same photo, face, generator and
    settings is reused ('skipped'); any other existing output of a face is an 'error' for that face
    unless ``overwrite``. Before any work, StylerigError for inputs sharing a stem, an output that is
    an input, or a grid file invert did not make. Reconstructions and grids in ``paths`` that invert
    wrote itself are left out (a rerun of ``invert DIR --out DIR``).
    """
    import time

    from tqdm import tqdm

    from stylerig_au.edit.media import labelled_grid
    from stylerig_au.imageio import save_image, to_uint8
    from stylerig_au.outputs import Inputs, check_replaceable, made_with, refuse_shared_outputs
    from stylerig_au.perceptual import load_lpips

    config = config or InvertConfig()
    log = log or (lambda msg: tqdm.write(msg))
    out_dir = Path(out_dir)
    rank, world, _ = shard_info()
    paths = _without_own_outputs([Path(p) for p in paths], out_dir, log)
    grid = None
    if grid_name:
        grid = out_dir / (grid_name if world == 1 else f"{Path(grid_name).stem}_rank{rank}{Path(grid_name).suffix}")
    # the overwrite rule (stylerig_au.outputs), checked before any work: outputs that are inputs,
    # inputs with one stem, and a grid file this command did not make
    refuse_shared_outputs({p: [out_dir / f"{p.stem}.pt"] for p in paths})
    inputs = Inputs(paths)
    inputs.refuse_as_outputs([grid] + [o for p in paths if not all_faces for o in _job_outputs(out_dir, p.stem)])
    if grid is not None:
        check_replaceable(grid, overwrite=overwrite, made_here=made_with(GRID_PROVENANCE), what="invert did not make it")
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = shard(paths, rank, world)
    lpips_model = lpips_model if lpips_model is not None else load_lpips(device=device)

    results: list[FileResult] = []
    pending: list[tuple[Job, dict | None]] = []
    for path in mine:
        try:
            jobs = prepare_jobs(path, G.resolution, aligned, all_faces, upsample)
        except StylerigError as err:
            results.append(FileResult(str(path), None, "error", str(err)))
            log(f"error: {err}")
            continue
        try:
            if all_faces:  # without it the names were checked before any work
                inputs.refuse_as_outputs([o for job in jobs for o in _job_outputs(out_dir, job.stem)])
            todo = [job for job in jobs if not _already_inverted(G, job, out_dir, config, overwrite, results)]
        except StylerigError as err:  # an output in the way: this photo only, before its inversion
            results.append(FileResult(str(path), None, "error", str(err)))
            log(f"error: {err}")
            continue
        for job in todo:
            pending.append((job, _load_checkpoint(out_dir / f"{job.stem}.ckpt.pt", G, job, config) if not overwrite else None))

    # group by resume step so each batch shares Adam's step count; the furthest along go first (they finish soonest)
    groups: dict[int, list[tuple[Job, dict | None]]] = {}
    for job, ck in pending:
        groups.setdefault(ck["step"] if ck else 0, []).append((job, ck))
    grid_rows: list[list[np.ndarray]] = []
    grid_stems: list[str] = []
    for start_step in sorted(groups, reverse=True):
        group = groups[start_step]
        for b in range(0, len(group), batch_size):
            batch = group[b : b + batch_size]
            jobs = [j for j, _ in batch]
            targets = prepare_targets([j.image for j in jobs], config.loss_size, device)
            state = InversionState.stack([ck for _, ck in batch], device) if start_step > 0 else None
            bar = tqdm(total=config.steps, initial=start_step, desc=f"invert {', '.join(j.stem for j in jobs)}"[:60], unit="step", disable=not progress, leave=False)

            def on_step(step, losses, bar=bar):
                bar.update(1)
                bar.set_postfix(lpips=f"{losses['lpips'].mean().item():.3f}", mse=f"{losses['mse'].mean().item():.4f}")

            # seconds already spent on each image by an earlier, interrupted run
            before = [float(ck.get("seconds", 0.0)) if ck else 0.0 for _, ck in batch]

            def on_checkpoint(st: InversionState, jobs=jobs, before=before):
                spent = (time.perf_counter() - t0) / len(jobs)
                for job, item, prev in zip(jobs, st.split(), before):
                    save_latent(out_dir / f"{job.stem}.ckpt.pt", {"format": CHECKPOINT_FORMAT, "schedule": config.schedule_key(),
                                                                   "generator": getattr(G, "name", None), "source_sha256": job.source_sha256,
                                                                   "face_index": job.face_index, "seconds": prev + spent, **item})

            t0 = time.perf_counter()
            final_state, losses = optimize(G, targets, config, lpips_model, state, on_step, on_checkpoint)
            bar.close()
            with torch.no_grad():
                recon = render(G, final_state.ws, final_state.noise)
            seconds = (time.perf_counter() - t0) / len(jobs)
            for i, (job, item) in enumerate(zip(jobs, final_state.split())):
                per = {k: float(v[i]) for k, v in losses.items()}
                recon_img = to_uint8(recon[i].clamp(-1, 1))
                try:  # a diverged latent or a failed write (full disk) fails this face only
                    latent = save_latent(out_dir / f"{job.stem}.pt", latent_record(G, job, item, per, config, before[i] + seconds))
                    recon_path = save_image(out_dir / f"{job.stem}_recon.png", recon_img, provenance=RECON_PROVENANCE)
                except StylerigError as err:
                    results.append(FileResult(job.source, job.stem, "error", str(err)))
                    log(f"error: {job.source}: {err}")
                    continue
                (out_dir / f"{job.stem}.ckpt.pt").unlink(missing_ok=True)
                results.append(FileResult(job.source, job.stem, "done", "", latent, recon_path, before[i] + seconds, per))
                grid_rows.append([job.photo, job.image, recon_img])
                grid_stems.append(job.stem)
    if grid is not None and grid_rows:
        try:
            save_image(grid, labelled_grid(grid_rows, grid_stems, ["photo", "aligned", "reconstruction"]), provenance=GRID_PROVENANCE)
        except StylerigError as err:
            results.append(FileResult(str(grid), None, "error", str(err)))
            log(f"error: {err}")
    return results


GRID_PROVENANCE = {"tool": "invert", "file": "grid"}  # the grid shows the run's faces: any invert may remake it
RECON_PROVENANCE = {"tool": "invert", "file": "reconstruction"}


def _job_outputs(out_dir: Path, stem: str) -> list[Path]:
    """The files one face's inversion writes: latent, reconstruction, resumable checkpoint."""
    return [out_dir / f"{stem}.pt", out_dir / f"{stem}_recon.png", out_dir / f"{stem}.ckpt.pt"]


def _already_inverted(G, job: Job, out_dir: Path, config: InvertConfig, overwrite: bool, results: list) -> bool:
    """True (and a 'skipped' result appended) when ``<stem>.pt`` is this face's inversion with ``config``.

    Otherwise checks that the face's files may be written (:func:`stylerig_au.outputs.check_replaceable`):
    a latent of another photo or settings, a file that is not a latent, or a reconstruction or checkpoint
    this command did not make is an error without ``overwrite``.
    """
    from stylerig_au.outputs import check_replaceable, made_with

    latent, recon, checkpoint = _job_outputs(out_dir, job.stem)
    why = "is not a stylerig-au latent file"
    if latent.is_file() and not overwrite:
        try:
            rec = load_latent(latent)
            why = latent_mismatch(rec, getattr(G, "name", None), job.source_sha256, job.face_index, config)
        except StylerigError:
            rec = None
        if rec is not None and why is None:
            results.append(FileResult(job.source, job.stem, "skipped", "already inverted", latent, recon,
                                      float(rec.get("seconds", math.nan)), rec.get("losses")))
            return True
    check_replaceable(latent, overwrite=overwrite, what=why)
    check_replaceable(recon, overwrite=overwrite, made_here=made_with(RECON_PROVENANCE), what="invert did not make it")
    check_replaceable(checkpoint, overwrite=overwrite, made_here=_is_checkpoint, what="is not an inversion checkpoint")
    return False


def _is_checkpoint(path: Path) -> bool:
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("format") == CHECKPOINT_FORMAT
    except Exception:  # noqa: BLE001 - unreadable: not one of ours
        return False


def _without_own_outputs(paths: list[Path], out_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """``paths`` less the files invert wrote itself (reconstructions and grids, found by their provenance,
    or by name beside their latent in ``out_dir`` for files from before provenance), so that
    ``invert DIR --out DIR`` can be rerun; says what it left out."""
    from stylerig_au.outputs import read_provenance, same_file

    def own(p: Path) -> bool:
        if (read_provenance(p) or {}).get("tool") == "invert":
            return True
        if not (p.parent.is_dir() and out_dir.is_dir() and same_file(p.parent, out_dir)):
            return False
        return (p.name == "grid.png" or p.name.startswith("grid_rank")
                or (p.stem.endswith("_recon") and (out_dir / f"{p.stem.removesuffix('_recon')}.pt").is_file()))

    skipped = [p for p in paths if own(p)]
    if skipped:
        log(f"note: not inverting {len(skipped)} file(s) invert wrote itself ({', '.join(p.name for p in skipped[:3])}"
            f"{', ...' if len(skipped) > 3 else ''})")
    return [p for p in paths if p not in skipped]


def _load_checkpoint(path: Path, G, job: Job, config: InvertConfig) -> dict | None:
    """A matching checkpoint's per-image state, or None (absent, stale, or from other settings)."""
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a broken checkpoint is simply ignored
        return None
    ok = (
        isinstance(ck, dict)
        and ck.get("format") == CHECKPOINT_FORMAT
        and ck.get("schedule") == config.schedule_key()
        and ck.get("generator") == getattr(G, "name", None)
        and ck.get("source_sha256") == job.source_sha256
        and ck.get("face_index") == job.face_index
        and 0 < int(ck.get("step", 0)) < config.steps
    )
    if not ok:
        return None
    state = {k: ck[k] for k in ("ws", "noise", "adam", "step")}
    state["seconds"] = float(ck.get("seconds", 0.0))
    return state
