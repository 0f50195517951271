"""``stylerig-au train-landmarks --data DIR [--data DIR2 ...] --out FILE``.

Distils dlib's 68-point landmarks into the differentiable landmark net
(:mod:`stylerig_au.au.landmark_net`) from AU sample datasets (``learn-directions``/``train-detector
--build``) and edited-sample datasets (``edited-samples``: faces with their edits; their held-out
pairs also measure how well the net reads what an edit moved). Resumes from ``<out>.train-state.pt``
when it exists (same settings), writes it after every epoch, and writes the net and a card (``.md``).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from stylerig_au.commands._numbers import FiniteFloat, LEARNING_RATE, SEED, THREADS
from stylerig_au.commands._paths import OutputFile
from stylerig_au.devices import HELP as DEVICE_HELP
from stylerig_au.devices import resolve_device
from stylerig_au.errors import StylerigError
from stylerig_au.outputs import refuse_inputs_as_outputs


def checkpoint_path(out: Path) -> Path:
    """The resumable training state beside the output file: ``<out stem>.train-state.pt``."""
    return out.with_name(f"{out.stem}.train-state.pt")


def load_training_data(folders: tuple[Path, ...], landmark_side: int = 1024):
    """Faces, landmark fractions, seeds, dataset index and (face, edit) row pairs of the datasets in ``folders``.

    ``landmark_side``: the side of the renders the datasets' landmarks were found on (the generator's resolution).
    Returns (uint8 [N, 3, S, S], float32 [N, 68, 2], int64 [N], int64 [N], int64 [P, 2], note str,
    float32 [N, 17] OpenFace readings).
    Raises StylerigError for a folder without a dataset or datasets of different image sides.
    """
    import torch

    from stylerig_au.au.landmark_net import to_fractions
    from stylerig_au.samples import load_samples

    images, marks, seeds, groups, pairs, notes, labels = [], [], [], [], [], [], []
    offset, side = 0, None
    for g, folder in enumerate(folders):
        s = load_samples(folder, with_images=True)
        found = s.face_found
        rows = found.nonzero().flatten()
        if side is None:
            side = s.images.shape[-1]
        elif s.images.shape[-1] != side:
            raise StylerigError(f"{folder}: images of {s.images.shape[-1]}² beside others of {side}²; use datasets of one side")
        images.append(s.images[rows])
        labels.append(s.aus[rows].float())
        marks.append(to_fractions(s.landmarks[rows].float(), landmark_side))
        seeds.append(s.seeds[rows])
        groups.append(torch.full((len(rows),), g, dtype=torch.int64))
        edited = s.extra.get("edited")
        if edited is not None:  # rows per seed: the plain face, then its edit(s)
            new_index = torch.full((len(found),), -1, dtype=torch.int64)
            new_index[rows] = torch.arange(len(rows)) + offset
            plain = -1
            for i in range(len(found)):
                if not bool(edited[i]):
                    plain = i
                elif plain >= 0 and int(s.seeds[i]) == int(s.seeds[plain]) and new_index[plain] >= 0 and new_index[i] >= 0:
                    pairs.append((int(new_index[plain]), int(new_index[i])))
        offset += len(rows)
        notes.append(f"{folder.name}: {len(rows)} faces" + (f" ({int(edited[found].sum())} edited)" if edited is not None else ""))
    pair_tensor = torch.tensor(pairs, dtype=torch.int64).view(-1, 2)
    return (torch.cat(images), torch.cat(marks), torch.cat(seeds), torch.cat(groups), pair_tensor, "; ".join(notes),
            torch.cat(labels))


def write_card(out: Path, info: dict, command: str) -> Path:
    """The model card ``<out stem>.md``: what the net is, how it was made and how well it reads held-out faces."""
    change = info.get("change") or {}
    lines = [f"# {out.name}: the landmark student", "",
             "A small CNN distilled from dlib's 68-point shape predictor on FFHQ-aligned generator faces; its",
             "landmarks are differentiable in the pixels (soft-argmax heatmaps), so losses can ask an edit to move",
             "a facial feature (`stylerig_au.au.landmark_net`). Read-only use: `load_landmark_net()`.", "",
             f"- Made by: `{command}`", f"- Data: {info['data']}",
             f"- Faces: {info['train_faces']} training, {info['heldout_faces']} held out (by seed)",
             f"- Held-out mean point error: **{info['heldout_nme']:.4f} IOD** (inter-ocular distances; dlib's labels are"
             " integer pixels at 1024², about 0.004 IOD)"]
    if change:
        lines += [f"- What edits moved, on {change['pairs']} held-out (face, edit) pairs: median correlation with dlib's"
                  f" changes {change['median_r']:.2f} over the geometric judge's features"
                  + (f", {change['geometry_median_r']:.2f} over OpenFace's geometry term per AU" if "geometry_median_r" in change else ""),
                  "", "| feature | r | mean abs. difference (IOD) | dlib's spread (IOD) |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {v['r']:.2f} | {v['mad']:.4f} | {v['spread']:.4f} |" for k, v in change["features"].items()]
        if "geometry_aus" in change:
            lines += ["", "| OpenFace geometry term | r | mean abs. difference | dlib's spread |", "| --- | --- | --- | --- |"]
            lines += [f"| AU{k} | {v['r']:.2f} | {v['mad']:.3f} | {v['spread']:.3f} |" for k, v in change["geometry_aus"].items()]
    lines += ["", "Licence: Apache-2.0 (stylerig_au); its labels come from dlib's 68-point predictor, trained on iBUG 300-W",
              "(non-commercial use).", "", "Training history (JSON):", "", "```", json.dumps(info["history"]), "```", ""]
    card = out.with_suffix(".md")
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


@click.command(name="train-landmarks")
@click.option("--data", "folders", multiple=True, required=True, type=click.Path(file_okay=False, path_type=Path),
              help="AU sample or edited-sample dataset folder (repeatable).")
@click.option("--out", required=True, type=OutputFile(), help="Landmark net file to write (.pt); a card (.md) goes beside it.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1), help="Passes over the training split.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1, 4096), help="Faces per step.")
@click.option("--lr", default=2e-3, show_default=True, type=LEARNING_RATE, help="Peak AdamW learning rate (one warm-up epoch, then cosine).")
@click.option("--holdout", default=0.1, show_default=True, type=FiniteFloat(0, 1, min_open=True, max_open=True), help="Fraction of seeds (the last ones of each dataset) kept out of training.")
@click.option("--input-width", default=128, show_default=True, type=click.IntRange(32, 1024), help="Width the landmark box is resized to inside the net.")
@click.option("--landmark-side", default=1024, show_default=True, type=click.IntRange(64),
              help="Side of the renders the datasets' landmarks were found on (the generator's resolution).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Random seed (shuffling, augmentation, initialisation).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--threads", type=THREADS, default=None, help="CPU threads for torch (default: torch's choice).")
def train_landmarks(folders: tuple[Path, ...], out: Path, epochs: int, batch: int, lr: float, holdout: float, input_width: int,
                    landmark_side: int, seed: int, device: str, threads: int | None) -> None:
    """Train the differentiable landmark net (distilled from dlib's 68 points on generator faces)."""
    import torch

    from stylerig_au.au.landmark_train import LandmarkTrainSettings, train_landmark_net

    if out.suffix != ".pt":
        raise StylerigError(f"--out {out}: the landmark net file must end in .pt")
    refuse_inputs_as_outputs([out], [])
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    images, marks, seeds, groups, pairs, note, labels = load_training_data(folders, landmark_side)
    settings = LandmarkTrainSettings(epochs=epochs, batch=batch, lr=lr, seed=seed, holdout=holdout,
                                     input_width=input_width, num_samples=len(images))
    openface = None
    try:
        from stylerig_au.au.openface import OpenFaceAU

        openface = OpenFaceAU()
    except StylerigError as err:  # the geometry-term agreement is optional: the OpenFace model may not be installed
        click.echo(f"note: no OpenFace geometry-term agreement ({err})", err=True)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    info = train_landmark_net(images, marks, seeds, out, settings, checkpoint_path(out), pairs=pairs, groups=groups,
                              openface=openface, device=device, log=log, data_note=note, labels=labels)
    command = "stylerig-au " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train-landmarks"] else \
        f"stylerig-au train-landmarks --out {out.name} --epochs {epochs}"
    card = write_card(out, info, command)
    click.echo(f"wrote {out} and {card}: held-out point error {info['heldout_nme']:.4f} IOD"
               + (f", edit-change median r {info['change']['median_r']:.2f}" if "change" in info else ""))
