"""``stylerig-au edited-samples DIR --num N [--mapper FILE] [--refine-at K ...] [--refine-student FILE]``.

Makes (or extends; resumable) a dataset of generator faces and their AU edits, every image labelled by
OpenFace (:mod:`stylerig_au.edited_samples`), for ``train-detector --edited DIR``. By default each face
gets one AU-mapper edit with a random request (1-2 AUs, 0.5-3 intensity units, some lowered, times a
gain of 1-2.5). With ``--refine-at`` each face gets one single-AU request (gain 1), refined against
a student as ``edit --refine`` does, and the edit is stored after each of those step counts: the images
an optimisation against that student makes, where a student can be exploited. Every edit's Δw+ is
stored too: ``train-mapper --distil DIR`` teaches the one-pass mapper the refined ones.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._numbers import SEED, THREADS, WORKERS, FiniteFloat
from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device


@click.command(name="edited-samples")
@click.argument("folder", type=OutputFolder())
@click.option("--num", required=True, type=click.IntRange(1), help="Faces (seeds) in the dataset, rounded up to whole chunks of 16; an existing dataset is extended or resumed.")
@click.option("--mapper", "mapper_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="AU mapper making the edits [default: the bundled one].")
@click.option("--refine-at", multiple=True, type=click.IntRange(0, 1000),
              help="Refine each edit against --refine-student and store it after this many steps (repeatable, e.g. --refine-at 4 --refine-at 8; "
                   "0 = the mapper's edit). Each face then gets one single-AU request, gain 1, as `edit --refine` is used.")
@click.option("--refine-student", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Student the refinement runs against [default: the bundled one].")
@click.option("--refine-colour", default=0.0, show_default=True, type=FiniteFloat(0), help="With --refine-at: weight of the refinement's colour term (as `edit --refine-colour`).")
@click.option("--refine-geometry", default=0.0, show_default=True, type=FiniteFloat(0), help="With --refine-at: weight of the refinement's geometry term (as `edit --refine-geometry`).")
@click.option("--seed-start", default=None, type=SEED, help="First seed [default: 6,000,000, away from every other seed range the tools use].")
@click.option("--workers", default=1, show_default=True, type=WORKERS, help="CPU processes side by side (one per core).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--threads", type=THREADS, default=None, help="CPU threads for torch (default: torch's choice).")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator to sample and edit.")
def edited_samples(folder: Path, num: int, mapper_path: Path | None, refine_at: tuple[int, ...], refine_student: Path | None,
                   refine_colour: float, refine_geometry: float, seed_start: int | None, workers: int, device: str, threads: int | None, generator_spec: str) -> None:
    """Make OpenFace-labelled faces and their AU-mapper (or refined) edits, to train the student on."""
    import torch

    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.edited_samples import EDITED_SEED_START, EditRequests, build_edited_samples
    from stylerig_au.models import load_generator

    if (refine_student is not None or refine_colour or refine_geometry) and not refine_at:
        raise click.UsageError("--refine-student, --refine-colour and --refine-geometry need --refine-at (the step counts to store)")
    if len(set(refine_at)) != len(refine_at):
        raise click.UsageError(f"--refine-at step counts must differ, got {list(refine_at)}")
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    G = load_generator(generator_spec, device=device)
    mapper = load_default_mapper(G, mapper_path, device=device)
    kwargs = {}
    requests = EditRequests()
    if refine_at:
        from stylerig_au.au.student import load_student

        requests = EditRequests(max_aus=1, gain_min=1.0, gain_max=1.0)
        from stylerig_au.edit.refine import RefineSettings

        kwargs = {"refine_at": tuple(sorted(refine_at)), "refine_settings": RefineSettings(colour=refine_colour, geometry=refine_geometry), "refine_student": load_student(refine_student, device=device).net,
                  "refine_student_name": str(refine_student or "bundled student-au-detector")}
    from stylerig_au.samples import load_samples

    build_edited_samples(G, mapper, folder, num, mapper_name=str(mapper_path or f"bundled au-mapper-{G.name}"), requests=requests,
                         seed_start=EDITED_SEED_START if seed_start is None else seed_start, device=device, workers=workers, log=log, **kwargs)
    data = load_samples(folder)
    click.echo(f"wrote {folder}: {len(set(data.seeds.tolist()))} faces (whole chunks of {data.meta['chunk_size']}), {len(data)} images, "
               f"{int(data.face_found.sum())} with a labelled face (train on them with `stylerig-au train-detector --edited {folder}`)")
