"""``stylerig-au train-detector --data DIR [--build N] --out FILE``: distil the student AU detector.

With ``--build N`` the AU sample dataset in DIR is first made or extended to N samples (resumable,
:func:`stylerig_au.samples.build_samples`). Training then resumes from ``<out>.train-state.pt`` when
that checkpoint exists (same settings), writes it after every epoch and writes the student to --out.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.errors import StylerigError


def checkpoint_path(out: Path) -> Path:
    """The resumable training state beside the output file: ``<out stem>.train-state.pt``."""
    return out.with_name(f"{out.stem}.train-state.pt")


@click.command(name="train-detector")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="AU sample dataset folder (made by --build or learn-directions).")
@click.option("--build", type=click.IntRange(1), default=None, help="First make or extend the dataset to this many samples (resumable; ~1 s per sample on a CPU).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Student file to write (e.g. pretrained/student-au-detector.pt).")
@click.option("--build-workers", default=1, show_default=True, type=click.IntRange(1), help="Processes making samples side by side on the CPU (one per core is about that many times faster).")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(1), help="Passes over the training split.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1), help="Faces per training step.")
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True), help="Peak AdamW learning rate (one warm-up epoch, then cosine).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N samples of the dataset (default: all there are).")
@click.option("--holdout", default=0.15, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Fraction of seeds (the last ones) kept out of training for evaluation.")
@click.option("--input-size", default=128, show_default=True, type=click.IntRange(32), help="Side the face box is resized to inside the student.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (shuffling, augmentation, initialisation).")
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator for --build.")
def train_detector(data_dir: Path, build: int | None, build_workers: int, out: Path, epochs: int, batch: int, lr: float, limit: int | None,
                   holdout: float, input_size: int, seed: int, device: str, threads: int | None, generator_spec: str) -> None:
    """Train the fast, differentiable student AU detector on OpenFace-labelled generator faces."""
    import torch

    from stylerig_au.au.student_train import TrainSettings, train_student
    from stylerig_au.samples import build_samples, load_samples

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StylerigError(f"--device {device} requested but CUDA is not available here; use --device cpu")
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if build:
        from stylerig_au.models import load_generator

        G = load_generator(generator_spec, device=device)
        build_samples(G, data_dir, build, device=device, workers=build_workers, log=log)
        del G
    if not build and not (data_dir / "meta.json").is_file():
        raise StylerigError(f"{data_dir}: no AU sample dataset here; make one with --build N (e.g. --build 2000, ~1 s per sample on a CPU)")
    samples = load_samples(data_dir, with_images=True, limit=limit)
    if samples.images is None:
        raise StylerigError(f"{data_dir}: the dataset holds no images (needed to train); rebuild it with --build")
    n_loaded = len(samples)
    valid = samples.valid()
    log(f"{data_dir}: {n_loaded} samples, {len(valid)} with a labelled face")
    settings = TrainSettings(epochs=epochs, batch=batch, lr=lr, seed=seed, holdout=holdout, num_samples=n_loaded, input_size=input_size)
    ckpt = checkpoint_path(out)
    info = train_student(valid.images, valid.aus, valid.seeds, list(samples.meta["aus"]), out, settings, ckpt, device=device, log=log,
                         data_note=f"{data_dir} ({samples.meta.get('generator')}, psi={samples.meta.get('psi')}, first {n_loaded} samples)")
    held = info["heldout"]
    click.echo(f"wrote {out}: held-out ({held['n']} faces) mean r {held['mean_r']:.3f}, mean MAE {held['mean_mae']:.3f}; checkpoint {ckpt}")
