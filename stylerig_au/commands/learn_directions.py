"""``stylerig-au learn-directions``: AU-labelled samples -> linear AU directions file + model card + preview grid.

Resumable at every stage: the sample dataset is built chunk by chunk, and the per-AU edit
measurements are cached in ``<data>/learn_cache.json``.
"""

from __future__ import annotations

from pathlib import Path

import click

from stylerig_au.commands._numbers import PSI, WORKERS, FiniteFloat
from stylerig_au.commands._paths import OutputFile
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import refuse_inputs_as_outputs

PROBE_SEED_START = 1_000_000  # probe latents come from seeds no training sample uses


def default_data_dir(generator: str) -> Path:
    """Where the sample dataset of a generator lives by default: ``<asset cache>/datasets/au-samples-<generator>``."""
    from stylerig_au import pretrained

    return pretrained.cache_dir().parent / "datasets" / f"au-samples-{Path(generator).stem}"


@click.command("learn-directions")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator name or checkpoint path.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sample dataset folder (built or extended here; resumable). Default: <asset cache>/../datasets/au-samples-<generator>.")
@click.option("--samples", "num_samples", default=2016, show_default=True, type=click.IntRange(50), help="Labelled generator samples to learn from.")
@click.option("--build-workers", default=1, show_default=True, type=WORKERS, help="Processes making samples side by side on the CPU (one per core is about that many times faster).")
@click.option("--psi", default=0.8, show_default=True, type=PSI, help="Truncation of the sampled w.")
@click.option("--probes", default=6, show_default=True, type=click.IntRange(1), help="Held-out latents each test edit is measured on.")
@click.option("--condition-aus/--no-condition-aus", default=False, show_default=True,
              help="Also keep the other AUs' read-outs fixed (less drift, but most AUs then barely move in "
                   "MobileStyleGAN; see the bundled card). Head pose is always kept fixed.")
@click.option("--target", "target_name", type=click.Choice(["openface", "geometry"]), default="openface", show_default=True,
              help="What the directions are fitted to: OpenFace's AU intensities, or only their shape term (from the "
                   "landmarks' 3D shape fit), which texture such as a beard or glasses cannot satisfy. Both are "
                   "calibrated with OpenFace so that +2 measures about +2.")
@click.option("--keep", "keep_name", type=click.Choice(["nothing", "identity", "texture", "texture-others", "attributes"]),
              default="nothing", show_default=True,
              help="Also keep fixed: identity (the 16 leading principal components of SFace's face features; dlib stays the "
                   "judge), texture (the texture term of OpenFace's reading of every AU), or texture-others (of the other "
                   "AUs only), or attributes (the age and gender the age/gender judge reads). Each needs the samples' "
                   "stored images.")
@click.option("--max-step-sigmas", default=6.0, show_default=True, type=FiniteFloat(1.0, 20.0),
              help="A +2 edit moves w at most this many sample standard deviations along its direction (directions "
                   "that keep more fixed are longer and may need more room; larger values risk broken faces).")
@click.option("--local/--global", "local", default=False, show_default=True,
              help="Calibrate the step sizes on edits kept to their AUs' face region (as `edit` renders them by default) "
                   "rather than on edits of the whole picture.")
@click.option("--out", "out_file", required=True, type=OutputFile(),
              help="Directions file to write (.pt); a model card (.md) and a preview grid (_preview.png) go beside it.")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--accept-license", is_flag=True, help="Accept the OpenFace models' non-commercial licence if they must be fetched.")
def learn_directions(generator_spec: str, data_dir: Path | None, num_samples: int, build_workers: int, psi: float, probes: int,
                     condition_aus: bool, target_name: str, keep_name: str, max_step_sigmas: float, local: bool, out_file: Path, device: str,
                     accept_license: bool) -> None:
    """Learn one linear W direction per AU from generator samples labelled by the OpenFace estimator."""
    from stylerig_au.au.detect import make_detector
    from stylerig_au.edit.card import write_card, write_preview
    from stylerig_au.edit.learn import TARGETS, attributes_kept, local_openface_measure, identity_kept, openface_measure, texture_kept
    from stylerig_au.edit.learn import learn_directions as learn
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import build_samples, load_samples

    if out_file.suffix != ".pt":
        raise StylerigError(f"--out {out_file}: the directions file must end in .pt")
    refuse_inputs_as_outputs([out_file], [Path(generator_spec)])  # the overwrite rule, before any work
    device = resolve_device(device)
    G = load_generator(generator_spec, device=device)
    detector = make_detector("openface", accept_license=accept_license).to(device)
    data_dir = data_dir or default_data_dir(G.name)
    click.echo(f"samples: {data_dir}")
    build_samples(G, data_dir, num_samples, detector=detector, psi=psi, device=device, workers=build_workers, log=click.echo)
    samples = load_samples(data_dir, limit=num_samples, with_images=keep_name != "nothing")
    aus = tuple(int(a) for a in samples.meta["aus"])
    keep = {"nothing": None, "identity": identity_kept(G.resolution, 16, "sface"),
            "texture": texture_kept(G.resolution, aus, detector),
            "texture-others": texture_kept(G.resolution, aus, detector, own_free=True),
            "attributes": attributes_kept(G.resolution)}[keep_name]
    probe_ws = seed_ws(G, PROBE_SEED_START, probes, psi, device)
    measure = local_openface_measure(G, detector, probe_ws) if local else openface_measure(G, detector)
    directions, results = learn(G, samples, measure, probe_ws=probe_ws, keep_aus=condition_aus,
                                target=TARGETS[target_name], keep=keep, max_step_sigmas=max_step_sigmas, cache=data_dir / "learn_cache.json", log=click.echo)
    directions.meta["command"] = (f"stylerig-au learn-directions --generator {generator_spec} --samples {num_samples} "
                                  f"--psi {psi} --probes {probes}{'' if condition_aus else ' --no-condition-aus'} --target {target_name} "
                                  f"--keep {keep_name} --max-step-sigmas {max_step_sigmas:g}{' --local' if local else ''} "
                                  f"--out {out_file.name}")
    directions.save(out_file)
    preview = write_preview(G, directions, out_file.with_name(out_file.stem + "_preview.png"), probe_ws[:1])
    card = write_card(directions, results, out_file.with_suffix(".md"), preview)
    click.echo(f"wrote {out_file}, {card} and {preview}")
