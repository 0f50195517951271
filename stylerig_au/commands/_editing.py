"""What ``edit``, ``animate`` and ``sweep`` share: their common options and the set-up before editing.

Everything that can be checked cheaply (edit syntax, output suffix, method, directions, AUs they
cover) is checked before the photo is inverted, so a typo costs no minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from stylerig_au.commands._numbers import LEARNING_RATE
from stylerig_au.commands._paths import OutputFolder
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError

# The face networks of stylerig_au.identity_net.IDENTITY_NETS, named here so the CLI imports no torch
# (a test keeps the two lists equal); the first is the default training identity term.
IDENTITY_NET_CHOICES = ("sface", "dlib")
LOCAL_DEFAULT = True  # edits are kept to their AUs' face region unless --global (experiments/RESULTS.md §2)

AU_HELP = ("AU change or target; repeatable, comma lists allowed. Changes: 12=+2 (AU12 up 2 intensity steps on the "
           "0-5 scale), 4=-1, smile=0.5. Absolute targets: 4=@3 (AU4 TO intensity 3; the current intensity is "
           "measured on the face with OpenFace first).")
PRESET_HELP = ("A named combination, NAME or NAME=STRENGTH: smile, happiness, social-smile, surprise, sadness, anger, "
               "fear, disgust, contempt, brow-raise, frown, blink, open-mouth. Adds to --au.")


def source_argument(f: Callable) -> Callable:
    return click.argument("source", metavar="PHOTO_OR_LATENT", type=click.Path(path_type=Path))(f)


def common_options(f: Callable) -> Callable:
    """The options every edit command takes (generator, directions, inversion, device)."""
    options = [
        click.option("--method", type=click.Choice(["linear", "mapper"]), default="linear", show_default=True,
                     help="Edit method: linear AU directions in W+, or the AU-conditioned mapper (face-dependent edits)."),
        click.option("--mapper", "mapper_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="AU mapper file for --method mapper [default: the one bundled for the generator]."),
        click.option("--directions", "directions_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Linear AU directions file [default: the ones bundled for the generator]."),
        click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True,
                     help="Generator name or checkpoint path (must be the one the latent / directions were made for)."),
        click.option("--steps", type=click.IntRange(1), default=None,
                     help="Inversion steps for a photo [default: 60, the quick setting, on a CPU; 500 on a GPU]."),
        click.option("--lr", type=LEARNING_RATE, default=None,
                     help="Inversion learning rate [default: 0.08 up to 120 steps, else 0.05]."),
        click.option("--latent-dir", type=OutputFolder(), default=None,
                     help="Where a photo's latent <stem>.pt is cached and reused [default: the output's folder]."),
        click.option("--upsample", default=1, show_default=True, type=click.IntRange(0, 4),
                     help="Face detector upsampling (for small faces)."),
        click.option("--face", type=click.IntRange(0), default=None,
                     help="For a photo with several faces: edit face K (0 = leftmost; `align --all-faces` writes each)."),
        click.option("--local/--global", "local", default=LOCAL_DEFAULT, show_default=True,
                     help="Keep each edit to the face region of its AUs (brows, eyes, nose, mouth and chin, from the face's "
                          "landmarks), blended inside the generator, so hair, background and the rest of the face stay as they "
                          "were; --global lets the edit change the whole picture."),
        click.option("--motion/--no-motion", "motion", default=False, show_default=True,
                     help="Show the edit as the face itself, moved inside the AUs' face region the way the edit moves its "
                          "landmarks: no beard, glasses, wrinkles or make-up from the edit can appear, but the AUs read "
                          "weaker (experiments/RESULTS.md §2)."),
        click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP),
        click.option("--overwrite", is_flag=True,
                     help="Replace a cached latent <stem>.pt that cannot be reused (another photo's, other --steps/--lr, "
                          "or not a latent at all); without it that is an error, before any inversion."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass
class Session:
    """The loaded pieces: generator ``G``, ``editor`` and the ``subject`` (photo or latent)."""

    G: object
    editor: object
    subject: object


def start(source: Path, out: Path, *, aus_in_use: list[int], method: str, directions_path: Path | None, mapper_path: Path | None,
          generator_spec: str, steps: int | None, lr: float | None, latent_dir: Path | None, upsample: int,
          device: str, face: int | None = None, local: bool = LOCAL_DEFAULT, motion: bool = False,
          measures: bool = False, refine: int = 0,
          refine_colour: float = 0.0, refine_geometry: float = 0.0, refine_identity_net: str = "sface", overwrite: bool = False,
          extra_outputs: tuple[Path | None, ...] = (), check_output: Callable[[tuple[int, int]], None] | None = None) -> Session:
    """Load the generator and directions, check they cover ``aus_in_use``, then load or invert ``source``.

    First, before anything loads, the outputs (``out``, ``extra_outputs`` and a photo's latent cache
    file) are checked against the inputs: none may be an input (:mod:`stylerig_au.outputs`). ``out`` is
    the declared output, so an existing file there is replaced; the latent cache only per the
    overwrite rule (``overwrite``; a cached latent is reused whatever its settings unless
    ``steps``/``lr`` were given).

    ``check_output(size)``: raises StylerigError when the output cannot be written for a result of
    ``size`` (width, height): the photo's size, or the generator's resolution for a latent file. It is
    called before the inversion (and, for a photo, before the generator loads).

    ``local``: render each edit inside its AUs' face region only (:mod:`stylerig_au.edit.local`).
    ``motion``: show each edit as the face moved by the edit's landmark motion (:mod:`stylerig_au.edit.motion`).

    ``measures``: the edit has absolute targets, so the OpenFace estimator is loaded up front (a missing
    model then fails before the inversion, not after it). ``refine``: refine each edit for the face
    with this many steps against the student detector (:mod:`stylerig_au.edit.refine`; 0: off), with
    the colour term at weight ``refine_colour``, the geometry term at weight ``refine_geometry`` and the
    identity network ``refine_identity_net``; its models load here too, before the inversion.
    """

    from stylerig_au.edit.directions import LinearDirections, load_default_directions
    from stylerig_au.edit.editor import Editor
    from stylerig_au.edit.photo import OpenFaceMeasure, is_latent_file, latent_cache_path, load_subject, quick_config
    from stylerig_au.models import load_generator

    if mapper_path is not None and method != "mapper":
        raise StylerigError("--mapper is only used with --method mapper")
    if not source.exists():
        raise StylerigError(f"{source}: no such {'latent file' if is_latent_file(source) else 'photo'}")
    if source.is_dir():
        raise StylerigError(f"{source} is a folder; give one photo or latent file")
    if out.exists() and out.is_dir():
        raise StylerigError(f"--out {out} is a folder; give a file name")
    from stylerig_au.outputs import refuse_inputs_as_outputs

    cache = None if is_latent_file(source) else latent_cache_path(source, latent_dir if latent_dir is not None else out.parent, face)
    generator_file = Path(generator_spec) if Path(generator_spec).is_file() else None
    refuse_inputs_as_outputs([out, *extra_outputs, cache], [source, mapper_path, directions_path, generator_file])
    if check_output is not None and not is_latent_file(source):
        from stylerig_au.imageio import image_size

        check_output(image_size(source))  # reads the header only: also refuses a photo over the pixel limit
    device = resolve_device(device)
    G = load_generator(generator_spec, device=device)
    if check_output is not None and is_latent_file(source):
        check_output((G.resolution, G.resolution))
    mapper = None
    if method == "mapper":
        from stylerig_au.edit.mapper import load_default_mapper

        mapper = load_default_mapper(G, mapper_path, device=device)
        directions = LinearDirections.load(directions_path, G) if directions_path is not None else None
    elif directions_path is not None:
        directions = LinearDirections.load(directions_path, G)
    else:
        directions = load_default_directions(G)
    measure = OpenFaceMeasure()
    if measures:
        from stylerig_au.au.detect import make_detector

        measure = OpenFaceMeasure(make_detector("openface"))
    refiner = None
    if refine > 0:
        from stylerig_au.au.student import load_student
        from stylerig_au.edit.refine import EditRefiner, RefineSettings, w_spread

        student = load_student(device=device).net.eval()
        w_std = mapper.w_std if mapper is not None else w_spread(G)
        refiner = EditRefiner(G, student, w_std, RefineSettings(steps=refine, colour=refine_colour, geometry=refine_geometry,
                                                                  identity_net=refine_identity_net),
                               progress=True)
    editor = Editor(G, directions, method=method, measure=measure, mapper=mapper, refiner=refiner, local=local,
                    motion=motion)
    editor.check_aus(aus_in_use)
    # No --steps/--lr: load_subject chooses the steps by device and says which before it inverts a photo.
    config = quick_config(steps, device, lr) if steps is not None or lr is not None else None
    subject = load_subject(G, source, config, cache_dir=latent_dir if latent_dir is not None else out.parent,
                           device=device, upsample=upsample, face=face, log=lambda m: click.echo(m, err=True),
                           any_settings=steps is None and lr is None, overwrite=overwrite)
    if subject.inverted:
        click.echo(f"inverted {source.name} ({subject.record['steps']} steps, lpips {subject.record['losses']['lpips']:.3f}) "
                   f"-> {subject.latent_path}", err=True)
    return Session(G, editor, subject)
