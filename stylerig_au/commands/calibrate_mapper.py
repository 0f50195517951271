"""``stylerig-au calibrate-mapper --out FILE``: set the AU mapper's per-AU input gains with OpenFace or the student.

Renders ``+step`` edits of probe faces (seeds from 1,000,000: never held out for evaluation, never
used to train the mapper), measures them with the OpenFace estimator (``--estimator openface``, the
default) or the student detector the mapper was trained with (``--estimator student``), and rescales
each AU's input so that the edit measures ``+step`` (see :mod:`stylerig_au.edit.mapper_calibrate`).
The network is unchanged. Calibrating with the student keeps OpenFace out of everything the mapper
is fitted to, so ``experiments/eval_edits.py`` stays an independent-detector check. Measurements are cached in ``<out stem>.calibration-cache.json``: rerun the same command
to resume. Writes the calibrated mapper file and its card (``<out stem>.md``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from stylerig_au.commands._numbers import FiniteFloat, PSI
from stylerig_au.commands._paths import OutputFile
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import refuse_inputs_as_outputs


@click.command(name="calibrate-mapper")
@click.option("--out", required=True, type=OutputFile(), help="Calibrated mapper file to write (.pt); a card (.md) goes beside it.")
@click.option("--mapper", "mapper_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Mapper file to calibrate [default: the bundled one].")
@click.option("--probes", default=8, show_default=True, type=click.IntRange(1, 10000), help="Probe faces each test edit is measured on.")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1, 100), help="Measure-and-rescale rounds per AU.")
@click.option("--step", default=2.0, show_default=True, type=FiniteFloat(0, 5, min_open=True), help="AU change of the test edits.")
@click.option("--estimator", type=click.Choice(["openface", "student"]), default="openface", show_default=True,
              help="AU estimator that measures the probe edits: OpenFace, or the student the mapper was trained with "
                   "(keeps OpenFace an independent judge).")
@click.option("--max-gain", default=2.5, show_default=True, type=FiniteFloat(1, 100), help="Largest gain an AU may get (weak AUs stop there).")
@click.option("--local/--global", "local", default=False, show_default=True,
              help="Measure the probe edits kept to their AUs' face region (as `edit` renders them by default) rather "
                   "than edits of the whole picture.")
@click.option("--psi", default=0.8, show_default=True, type=PSI, help="Truncation of the probe latents.")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator name or checkpoint path.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--accept-license", is_flag=True, help="Accept the OpenFace models' non-commercial licence if they must be fetched.")
def calibrate_mapper(out: Path, mapper_path: Path | None, probes: int, rounds: int, step: float, estimator: str, max_gain: float,
                     local: bool, psi: float, generator_spec: str, device: str, accept_license: bool) -> None:
    """Rescale the AU mapper's per-AU inputs so that OpenFace (or the student) measures the asked-for change."""
    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.vocab import AU_NUMBERS
    from stylerig_au.commands.learn_directions import PROBE_SEED_START
    from stylerig_au.edit import learn
    from stylerig_au.edit.mapper import load_default_mapper, load_mapper, save_mapper
    from stylerig_au.edit.mapper_calibrate import GAIN_CLAMP, calibrate_mapper as run, calibration_meta
    from stylerig_au.edit.mapper_card import write_mapper_card
    from stylerig_au.models import load_generator, seed_ws

    if out.suffix != ".pt":
        raise StylerigError(f"--out {out}: the mapper file must end in .pt")
    refuse_inputs_as_outputs([out], [mapper_path, Path(generator_spec)])  # the overwrite rule, before any work
    device = resolve_device(device)
    G = load_generator(generator_spec, device=device)
    mapper = load_default_mapper(G, mapper_path, device=device)
    if estimator == "student":
        detector = make_detector("student").to(device)
        measure, measured_aus = learn.student_measure(G, detector), list(detector.aus)
    else:
        detector = make_detector("openface", accept_license=accept_license).to(device)
        measure, measured_aus = learn.openface_measure(G, detector), list(AU_NUMBERS)
    probe_ws = seed_ws(G, PROBE_SEED_START, probes, psi, device)
    if local:
        measure = (learn.local_student_measure(G, detector, probe_ws) if estimator == "student"
                   else learn.local_openface_measure(G, detector, probe_ws))
    clamp = (GAIN_CLAMP[0], max_gain)
    # the cache is per estimator and rendering: other measurements of the same settings must not resume from it
    kind = ("" if estimator == "openface" else "-" + estimator) + ("-local" if local else "")
    cache = out.with_name(f"{out.stem}.calibration-cache{kind}.json")
    results = run(mapper, measure, probe_ws, measured_aus=measured_aus, step=step, rounds=rounds,
                  clamp=clamp, cache=cache, log=click.echo)
    command = "stylerig-au " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["calibrate-mapper"] else \
        f"stylerig-au calibrate-mapper --out {out.name} --probes {probes} --rounds {rounds}"
    meta = dict(mapper.meta)
    meta["calibration"] = calibration_meta(results, command=command, probes=probes, probe_seed_start=PROBE_SEED_START,
                                           psi=psi, step=step, rounds=rounds, clamp=list(clamp), detector=estimator,
                                           local=local)
    save_mapper(mapper.cpu(), out, G.name, meta)
    load_mapper(out, G)  # read back: what is written must load
    card = write_mapper_card(out, G.name, meta, mapper.config)
    click.echo(f"wrote {out} and {card}: gains " + ", ".join(f"AU{r.au} {r.gain:.2f}" for r in results))
