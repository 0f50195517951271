"""``stylerig-au train-mapper --out FILE``: train the AU-conditioned mapper M(w+, ΔAU) -> Δw+.

Starts from the linear AU directions (an untrained mapper edits exactly like them) and learns a
latent-dependent correction, supervised by the student AU detector, with LPIPS and identity terms
that keep the rest of the face (see :mod:`stylerig_au.edit.mapper_train`). The training state is
kept in ``<out stem>.train-state.pt`` and saved every ``--save-every`` steps and on Ctrl-C: rerun the
same command to resume. Under ``torchrun --nproc_per_node N`` the same command trains with
DistributedDataParallel (one GPU per process with ``--device cuda``; gloo on CPUs).

Writes the mapper file and a model card (``<out stem>.md``) beside it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from stylerig_au.commands._editing import IDENTITY_NET_CHOICES
from stylerig_au.commands._numbers import LEARNING_RATE, PSI, THREADS
from stylerig_au.commands._paths import OutputFile
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import refuse_inputs_as_outputs


def checkpoint_path(out: Path) -> Path:
    """The resumable training state beside the output: ``<out stem>.train-state.pt``."""
    return out.with_name(f"{out.stem}.train-state.pt")


def parse_loss_weights(specs: tuple[str, ...]) -> dict[str, float]:
    """``("keep=2", "size=0.1")`` -> ``{"w_keep": 2.0, "w_size": 0.1}`` (MapperTrainSettings fields).

    Raises StylerigError for an unknown loss name, a missing '=' or a negative / non-numeric weight.
    """
    from stylerig_au.edit.mapper_train import LOSS_NAMES

    out: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or name not in LOSS_NAMES:
            raise StylerigError(f"--weight {spec!r}: expected LOSS=W with LOSS one of {', '.join(LOSS_NAMES)}")
        try:
            w = float(value)
        except ValueError:
            raise StylerigError(f"--weight {spec!r}: {value!r} is not a number") from None
        if not w >= 0 or w == float("inf"):
            raise StylerigError(f"--weight {spec!r}: a weight must be a finite number >= 0")
        out[f"w_{name}"] = w
    return out


@click.command(name="train-mapper")
@click.option("--out", required=True, type=OutputFile(), help="Mapper file to write (.pt); a card (.md) goes beside it.")
@click.option("--steps", default=300, show_default=True, type=click.IntRange(1), help="Optimisation steps (each renders 2 x batch faces).")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1, 1024), help="Faces per step and process.")
@click.option("--lr", default=3e-4, show_default=True, type=LEARNING_RATE, help="Peak Adam learning rate (short warm-up, then cosine).")
@click.option("--psi", default=0.8, show_default=True, type=PSI, help="Truncation of the training latents.")
@click.option("--hidden", default=256, show_default=True, type=click.IntRange(8, 8192), help="Width of the mapper's MLP.")
@click.option("--directions", "directions_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Linear directions to start from [default: the bundled ones].")
@click.option("--init", "init_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this mapper file (its network and input gains) instead of the linear directions: "
                   "fine-tunes a mapper, e.g. one calibrated with `calibrate-mapper` so that ΔAU is in OpenFace's units.")
@click.option("--student", "student_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Student AU detector [default: the bundled one].")
@click.option("--generator", "generator_spec", default="mobilestylegan-ffhq-1024", show_default=True, help="Generator name or checkpoint path.")
@click.option("--image-size", default=256, show_default=True, type=click.IntRange(64, 1024), help="Side the renders are scored at.")
@click.option("--save-every", default=25, show_default=True, type=click.IntRange(1), help="Write the training state every N steps.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 399),
              help="Seed of the training faces and the AU changes drawn per step (each seed its own faces).")
@click.option("--weight", "weights", multiple=True, metavar="LOSS=W",
              help="Weight of one loss term, repeatable: target, keep, outside, identity, size, geometry, distil, distil_image, colour "
                   "[defaults 1, 1, 4, 4, 0.05, 0, 0, 0, 0; with --distil and neither distil weight given, distil 1], e.g. --weight keep=2 to hold the other AUs more firmly, "
                   "--weight geometry=2 to make each AU move its facial features (OpenFace's geometry term through the landmark net), or "
                   "--weight colour=20 to keep the skin and lips their colour inside the edited region. "
                   "Image terms all 0 with --distil: distillation alone, no renders.")
@click.option("--landmark-net", "landmark_net_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Landmark net of the geometry term [default: the bundled one].")
@click.option("--distil", "distil_path", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Teach the mapper the refined edits of this dataset (`edited-samples DIR --refine-at 20`): its Δw+ "
                   "for each stored face and request against the refined Δw+ (the distil term).")
@click.option("--identity-net", type=click.Choice([*IDENTITY_NET_CHOICES, "lpips"]), default=IDENTITY_NET_CHOICES[0],
              show_default=True,
              help="What the identity loss compares: SFace features (cosine distance), dlib's face descriptor (the "
                   "evaluations' judge of identity: a mapper trained on it is graded by its own loss), or deep "
                   "LPIPS-VGG features (a cheaper proxy; the bundled mapper's).")
@click.option("--local", is_flag=True,
              help="Render and judge each training edit as the editor shows it by default: blended into the face inside its "
                   "AUs' regions (drawn from the face's landmarks). Consider --weight outside=0 with it.")
@click.option("--landmarks", "landmark_source", type=click.Choice(["dlib", "net"]), default="dlib", show_default=True,
              help="Where the identity crops and the --local regions come from: dlib, or the bundled landmark net "
                   "(batched on --device; for machines without dlib).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--threads", type=THREADS, default=None, help="CPU threads for torch (default: torch's choice).")
def train_mapper(out: Path, steps: int, batch: int, lr: float, psi: float, hidden: int, directions_path: Path | None,
                 init_path: Path | None, student_path: Path | None, generator_spec: str, image_size: int, save_every: int, seed: int, device: str,
                 weights: tuple[str, ...], threads: int | None, identity_net: str, landmark_net_path: Path | None,
                 distil_path: Path | None, local: bool, landmark_source: str) -> None:
    """Train the AU-conditioned mapper (student-supervised, starts from the linear directions)."""
    import torch

    from stylerig_au.au.student import load_student
    from stylerig_au.edit.directions import LinearDirections, load_default_directions
    from stylerig_au.edit.mapper import load_mapper, new_mapper, save_mapper
    from stylerig_au.edit.mapper_card import write_mapper_card
    from stylerig_au.edit.mapper_train import MapperTrainSettings, train_mapper as run
    from stylerig_au.models import load_generator
    from stylerig_au.perceptual import load_lpips

    if out.suffix != ".pt":
        raise StylerigError(f"--out {out}: the mapper file must end in .pt")
    refuse_inputs_as_outputs([out], [init_path, directions_path, student_path, landmark_net_path, Path(generator_spec)])  # before any work
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)  # under torchrun: GPU LOCAL_RANK
    loss_weights = parse_loss_weights(weights)
    if distil_path is not None:
        if "w_distil" not in loss_weights and "w_distil_image" not in loss_weights:
            loss_weights["w_distil"] = 1.0
    elif max(loss_weights.get("w_distil", 0), loss_weights.get("w_distil_image", 0)) > 0:
        raise StylerigError("--weight distil / distil_image needs --distil DIR (a dataset of refined edits from `edited-samples --refine-at 20`)")
    geometry_reader = None
    if loss_weights.get("w_geometry", 0) > 0:  # its landmark net and OpenFace's model, before the big loads
        from stylerig_au.au.landmark_net import load_geometry_reader

        geometry_reader = load_geometry_reader(landmark_net_path)
    G = load_generator(generator_spec, device="cpu")
    init = load_mapper(init_path, G) if init_path else None
    settings = MapperTrainSettings(steps=steps, batch=batch, lr=lr, psi=psi, image_size=image_size, save_every=save_every,
                                   seed=seed, identity_net=identity_net, init=f"{init_path.name} ({init.created})" if init is not None else "",
                                   landmark_net=str(landmark_net_path) if landmark_net_path else "",
                                   distil=str(distil_path) if distil_path else "", local=local, landmarks=landmark_source,
                                   **loss_weights)
    settings.check()
    if init is not None:
        mapper = init.train().requires_grad_(True)
        directions_created = init.meta.get("directions_created")
    else:
        directions = LinearDirections.load(directions_path, G) if directions_path else load_default_directions(G)
        mapper = new_mapper(G, directions, hidden=hidden)
        directions_created = directions.created
    distil = None
    if settings.distils:  # read and checked before the student and LPIPS load
        from stylerig_au.edit.distil import DistilTargets

        distil = DistilTargets(distil_path, G, list(mapper.aus))
        click.echo(f"distilling {len(distil)} edits refined for {distil.steps} steps ({distil_path})", err=True)
    student = load_student(student_path)
    lpips = load_lpips() if settings.needs_lpips else None
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    ckpt = checkpoint_path(out)
    result = run(G, student.net, lpips, mapper, settings, ckpt, device=device, log=log, geometry_reader=geometry_reader,
                 distil=distil)
    if result["rank"] != 0:
        return
    command = "stylerig-au " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train-mapper"] else \
        f"stylerig-au train-mapper --out {out.name} --steps {steps} --batch {batch}"
    meta = {
        "command": command, "settings": settings.resume_key() | {"steps": steps}, "world": result["world"],
        "device": device, "directions_created": directions_created, "student": str(student_path) if student_path else "bundled student-au-detector",
        "losses_first": result["first"], "losses_last": result["last"], "losses_span": result["span"], "seconds": result["seconds"],
        "steps_this_run": result["steps_run"], "hidden": mapper.config.hidden,
        "history": [{k: round(v, 5) for k, v in h.items()} for h in result["history"]],
    }
    if init is not None:
        meta["init"] = {"file": str(init_path), "created": init.created, "command": init.meta.get("command"),
                        "calibration_command": (init.meta.get("calibration") or {}).get("command"),
                        "input_gain": {str(a): g for a, g in init.input_gains().items()}}
    save_mapper(mapper.cpu(), out, G.name, meta)
    load_mapper(out, G)  # read back: what is written must load
    card = write_mapper_card(out, G.name, meta, mapper.config)
    last = result["last"]
    click.echo(f"wrote {out} and {card}: last-steps losses " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()))
