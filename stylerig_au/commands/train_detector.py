"""``stylerig-au train-detector --data DIR [--build N] [--edited DIR2 ...] [--init FILE] --out FILE``.

Distils the student AU detector from OpenFace labels. With ``--build N`` the AU sample dataset in DIR
is first made or extended to N samples (resumable, :func:`stylerig_au.samples.build_samples`). Each
``--edited DIR2`` (made by ``stylerig-au edited-samples``: faces and their AU edits, all labelled by
OpenFace) is trained on beside it, so the student also learns to read the images edits produce; the
held-out split is taken in each dataset. ``--init FILE`` fine-tunes an existing student instead of
starting from random weights. Training resumes from ``<out>.train-state.pt`` when that checkpoint
exists (same settings), writes it after every epoch and writes the student to --out.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._numbers import FiniteFloat, LEARNING_RATE, SEED, THREADS, WORKERS
from stylerig_au.commands._paths import OutputFile
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import refuse_inputs_as_outputs


def checkpoint_path(out: Path) -> Path:
    """The resumable training state beside the output file: ``<out stem>.train-state.pt``."""
    return out.with_name(f"{out.stem}.train-state.pt")


@click.command(name="train-detector")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="AU sample dataset folder (made by --build or learn-directions).")
@click.option("--build", type=click.IntRange(1), default=None, help="First make or extend the dataset to this many samples (resumable; ~0.3-1 s per sample on a CPU).")
@click.option("--edited", "edited_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Also train on this dataset of faces and their edits, made by `stylerig-au edited-samples` (repeatable).")
@click.option("--init", "init_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fine-tune this student (weights and input normalisation) instead of starting from random weights; use a lower --lr, e.g. 3e-4.")
@click.option("--out", required=True, type=OutputFile(), help="Student file to write (e.g. pretrained/student-au-detector.pt).")
@click.option("--build-workers", default=1, show_default=True, type=WORKERS, help="Processes making samples side by side on the CPU (one per core is about that many times faster).")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(1), help="Passes over the training split.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 4096), help="Faces per training step.")
@click.option("--lr", default=1e-3, show_default=True, type=LEARNING_RATE, help="Peak AdamW learning rate (one warm-up epoch, then cosine).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N samples of the dataset (default: all there are).")
@click.option("--holdout", default=0.15, show_default=True, type=FiniteFloat(0, 1, min_open=True, max_open=True), help="Fraction of seeds (the last ones) kept out of training for evaluation.")
@click.option("--input-size", default=128, show_default=True, type=click.IntRange(32, 1024), help="Side the face box is resized to inside the student.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed (shuffling, augmentation, initialisation).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--threads", type=THREADS, default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator for --build.")
def train_detector(data_dir: Path | None, build: int | None, edited_dirs: tuple[Path, ...], init_path: Path | None, build_workers: int, out: Path, epochs: int, batch: int, lr: float, limit: int | None,
                   holdout: float, input_size: int, seed: int, device: str, threads: int | None, generator_spec: str) -> None:
    """Train the fast, differentiable student AU detector on OpenFace-labelled generator faces."""
    import torch

    from stylerig_au.au.student_train import TrainSettings, train_student
    from stylerig_au.samples import build_samples, load_samples

    if data_dir is None and not edited_dirs:
        raise click.UsageError("give the training data: --data DIR (plain samples) and/or --edited DIR (edited samples)")
    if build and data_dir is None:
        raise click.UsageError("--build makes plain samples in the --data folder; give --data DIR")
    refuse_inputs_as_outputs([out], [init_path, Path(generator_spec)])  # the overwrite rule, before any work
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    init_net = None
    if init_path is not None:
        from stylerig_au.au.student import load_student

        init_net = load_student(init_path).net
    if build:
        from stylerig_au.models import load_generator

        G = load_generator(generator_spec, device=device)
        build_samples(G, data_dir, build, device=device, workers=build_workers, log=log)
        del G
    sets = []
    folders = (([(data_dir, "--build N (e.g. --build 2000, ~0.3-1 s per sample on a CPU)")] if data_dir is not None else [])
               + [(d, f"`stylerig-au edited-samples {d} --num N`") for d in edited_dirs])
    for folder, how in folders:
        if not (folder / "meta.json").is_file():
            raise StylerigError(f"{folder}: no AU sample dataset here; make one with {how}")
        samples = load_samples(folder, with_images=True, limit=limit)
        if samples.images is None:
            raise StylerigError(f"{folder}: the dataset holds no images (needed to train); remake it with {how}")
        log(f"{folder}: {len(samples)} samples, {int(samples.face_found.sum())} with a labelled face")
        sets.append((folder, samples))
    aus = list(sets[0][1].meta["aus"])
    if any(list(s.meta["aus"]) != aus for _, s in sets):
        raise StylerigError("the --data and --edited datasets label different AUs; build them with the same OpenFace estimator")
    valid = [s.valid() for _, s in sets]
    n_loaded = sum(len(s) for _, s in sets)
    settings = TrainSettings(epochs=epochs, batch=batch, lr=lr, seed=seed, holdout=holdout, num_samples=n_loaded, input_size=input_size,
                             init=str(init_path) if init_path else "")
    ckpt = checkpoint_path(out)
    note = "; ".join(f"{folder} ({s.meta.get('generator')}, psi={s.meta.get('psi')}, first {len(s)} samples"
                     + (f", edited by {s.meta['edits'].get('mapper')}" if s.meta.get("edits") else "") + ")" for folder, s in sets)
    info = train_student(torch.cat([v.images for v in valid]), torch.cat([v.aus for v in valid]), torch.cat([v.seeds for v in valid]),
                         aus, out, settings, ckpt, device=device, log=log, data_note=note, init_net=init_net,
                         groups=torch.cat([torch.full((len(v),), i, dtype=torch.int64) for i, v in enumerate(valid)]),
                         group_names=[str(folder) for folder, _ in sets])
    held = info["heldout"]
    click.echo(f"wrote {out}: held-out ({held['n']} faces) mean r {held['mean_r']:.3f}, mean MAE {held['mean_mae']:.3f}; checkpoint {ckpt}")
    for name, part in info.get("heldout_by_data", {}).items():
        click.echo(f"  held-out of {name} ({part['n']} faces): mean r {part['mean_r']:.3f}, mean MAE {part['mean_mae']:.3f}")
