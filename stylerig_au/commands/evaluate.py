"""``stylerig-au evaluate``: measure AU edits (target vs achieved, drift, identity, background, pose, speed).

Photos are aligned and inverted (latents cached in ``<out>/latents``); generated faces come from
held-out seeds (w at truncation ``--psi``, no inversion). Resumable: rows already in
``<out>/rows.jsonl`` are skipped. See :mod:`stylerig_au.evaluate` for what each number means.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._editing import LOCAL_DEFAULT
from stylerig_au.commands._numbers import PSI, SEED
from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError


@click.command()
@click.option("--photos", "photos_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of photos to evaluate on (each aligned and inverted once; latents cached in OUT/latents).")
@click.option("--generated", type=click.IntRange(1), default=None, help="Evaluate on N generated faces instead of photos.")
@click.option("--seed-start", default=2_000_000, show_default=True, type=SEED,
              help="First seed of the generated faces (held out from learning).")
@click.option("--psi", default=0.8, show_default=True, type=PSI, help="Truncation of generated faces.")
@click.option("--edits", "edits_text", required=True,
              help="Edits separated by ';', each in the --au syntax: '12=+2;4=+2;smile=1' (12=+2,6=+1 is one two-AU "
                   "edit; 4=@3 an absolute target).")
@click.option("--methods", "methods_text", default="linear,naive", show_default=True,
              help="Edit methods: linear (learned directions), naive (global unconditioned W direction per AU, all slots), "
                   "mapper (the AU-conditioned mapper).")
@click.option("--mapper", "mapper_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="AU mapper file for the mapper method [default: the one bundled for the generator].")
@click.option("--out", required=True, type=OutputFolder(),
              help="Output folder (rows.jsonl, report.json, report.md, plots, grid.png); a rerun resumes.")
@click.option("--directions", "directions_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Linear AU directions file [default: the ones bundled for the generator].")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="AU sample dataset (from learn-directions): the naive baseline then uses its exact ridge read-outs.")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True,
              help="Generator name or checkpoint path.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Inversion steps for photos [default: 60 on a CPU, 500 on CUDA].")
@click.option("--local/--global", "local", default=LOCAL_DEFAULT, show_default=True,
              help="Render each edit inside its AUs' face region only (as `edit` does by default), or over the whole picture.")
@click.option("--motion/--no-motion", "motion", default=False, show_default=True,
              help="Show each edit as the face moved by the edit's landmark motion (as `edit --motion` does).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
def evaluate(photos_dir: Path | None, generated: int | None, seed_start: int, psi: float, edits_text: str, methods_text: str,
             out: Path, mapper_path: Path | None, directions_path: Path | None, data_dir: Path | None, generator_spec: str, steps: int | None,
             local: bool, motion: bool, device: str) -> None:
    """Edit faces with each edit and method, measure the results with OpenFace and dlib, write a report.

    \b
    Examples:
      stylerig-au evaluate --generated 8 --edits '12=+2;4=+2;smile=1' --out eval/
      stylerig-au evaluate --generated 8 --edits '12=+2;26=+2' --methods linear,mapper,naive --out eval/
      stylerig-au evaluate --photos faces/ --edits '12=+2;26=+2' --methods linear --out eval_photos/
    """

    from stylerig_au import evaluate as ev
    from stylerig_au.edit.directions import LinearDirections, load_default_directions
    from stylerig_au.edit.photo import quick_config
    from stylerig_au.models import load_generator

    if (photos_dir is None) == (generated is None):
        raise StylerigError("give either --photos DIR or --generated N (not both)")
    edits = ev.parse_edits(edits_text)
    methods = ev.parse_methods(methods_text)
    photos = ev.photo_paths(photos_dir) if photos_dir is not None else []
    if out.exists() and not out.is_dir():
        raise StylerigError(f"--out {out} is a file; give a folder")
    device = resolve_device(device)
    G = load_generator(generator_spec, device=device)
    linear = LinearDirections.load(directions_path, G) if directions_path is not None else load_default_directions(G)
    dirs: dict[str, object] = {}
    for m in methods:
        if m == "linear":
            dirs[m] = linear
        elif m == "mapper":
            from stylerig_au.edit.mapper import load_default_mapper

            dirs[m] = load_default_mapper(G, mapper_path, device=device)
        else:  # naive
            readouts = None
            if data_dir is not None:
                from stylerig_au.edit.learn import regress
                from stylerig_au.samples import load_samples

                samples = load_samples(data_dir)
                if samples.meta.get("generator") != G.name:
                    raise StylerigError(f"--data {data_dir}: samples of {samples.meta.get('generator')!r}, not {G.name!r}")
                readouts = regress(samples)
            dirs[m] = ev.naive_directions(linear, readouts)
    # settings that make rows comparable (a rerun with other ones is refused); 'faces' is only informative
    settings: dict = {"faces": f"{generated} generated from seed {seed_start}" if generated else str(photos_dir)}
    if local:  # not written for --global, so the folders of earlier (global) runs stay resumable
        settings["local"] = True
    if motion:  # likewise
        settings["motion"] = True
    if photos:
        config = quick_config(steps, device)
        settings["inversion"] = config.schedule_key()
        log = lambda m: click.echo(m, err=True)
        faces = [(lambda p=p: ev.photo_face(G, p, out / "latents", config, device=device, log=log)) for p in photos]
        names = [p.stem for p in photos]
        if len(set(names)) != len(names):
            raise StylerigError(f"--photos {photos_dir}: two photos share a file stem; rename one")
    else:
        settings["psi"] = psi
        faces = ev.generated_faces(G, generated, seed_start=seed_start, psi=psi, device=device)
        names = [f.name for f in faces]
    result = ev.evaluate(G, faces, edits, dirs, out, settings=settings, face_names=names, device=device,
                         log=lambda m: click.echo(m, err=True), local=local, motion=motion)
    o = result.report["overall"]
    click.echo(f"{result.made} rows measured, {result.skipped} reused; {o['measured']} of {o['rows']} usable"
               + (f"; {len(result.failed)} face(s) skipped (see above)" if result.failed else ""))
    for m, p in result.report["per_method"].items():
        def f(x, d=2):
            return "n/a" if x is None else f"{x:.{d}f}"
        click.echo(f"{m:>7}: |error| {f(p['abs_error'])}, drift {f(p['drift'])}, ID dlib {f(p['identity_distance'])}, "
                   f"ID SFace {f(p.get('identity_sface'))}, "
                   f"bg LPIPS {f(p['background_lpips'], 3)}, pose {f(p['pose_change_max_deg'], 1)} deg, {f(p['seconds'])} s/img")
    click.echo(f"wrote {result.files['report_md']} and {result.files['report_json']}")
