"""Find each AU's style-space channels: local to the AU's face region and tied to the AU across samples.

A StyleSpace-style edit (Wu et al. 2021) for issue 26's third lever. For each AU:

1. **Locality**: on a few probe faces (seeds from 1,000,000, never held out), how much of the feature
   map each style channel scales lies inside the AU's region (:func:`stylerig_au.edit.local.region_mask`),
   by energy (:func:`locality`).
2. **Tie to the AU**: the correlation, over the AU dataset's generator samples (``--samples``, from
   ``learn-directions``; the OpenFace readings stored there, or with ``--target geometry`` their shape
   term), between each channel's style and the AU's reading, both with the head pose (and with
   ``--control attributes`` the judged age and gender) regressed out.
3. The edit moves the ``--top`` channels most tied to the AU among those whose locality is at least
   ``--min-local``, each by its correlation times its spread over the samples, scaled by one step size.
   With ``--select effect`` the ``--candidates`` most tied are measured instead (:func:`channel_effects`:
   each moved alone on the probe faces) and the ``--top`` that move the AU's landmark feature furthest per
   unit of SFace identity change are kept, each with the sign of its measured motion; with
   ``--select student-effect``, those that raise the student's reading of the AU most per unit of SFace change
   plus judged-gender change (``--gender-cost``).
4. The step size (its sign included) is calibrated on the probe faces with the **student** detector (so OpenFace stays an
   independent judge in ``eval_edits.py --stylespace``) to read ``+2``.

Writes a JSON file of per-AU channels and offsets (``--out``; cached work in ``<out>.cache.npz``, so a rerun
resumes), read by ``python experiments/eval_edits.py --stylespace FILE``.

    python experiments/stylespace_edits.py --samples DIR --out experiments/results/stylespace_channels_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
PROBE_SEED_START = 1_000_000
SIDE = 256  # region masks are drawn at this size, then area-resized to each feature map


def residual(y: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """y [N, K] with a linear fit on pose [N, P] (plus a constant) removed."""
    x = np.concatenate([pose, np.ones((len(pose), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return y - x @ coef


def correlations(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation [K, C] of every column of y [N, K] with every column of s [N, C]."""
    s = (s - s.mean(0)) / (s.std(0) + 1e-8)
    y = (y - y.mean(0)) / (y.std(0) + 1e-8)
    return (y.T @ s) / len(s)


def locality(G, probe_ws: torch.Tensor, aus: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(share [len(aus), C] of each style channel's feature energy that lies inside each AU's region, averaged
    over the probe faces (faces dlib does not find are skipped); side [C] of the feature map each channel scales).

    A style channel scales one input channel x_c of its layer, so its effect on that layer's output (and,
    through the later local convolutions and upsamplings, on the picture) lives where x_c is active: the
    share is ``Σ M x_c² / Σ x_c²`` over the feature map, M the region mask at the map's resolution. The
    first layer's input is a learned constant (4×4) and counts the same way.
    """
    from stylerig_au.edit.local import find_face, region_mask
    from stylerig_au.edit.stylespace import style_layers
    from stylerig_au.imageio import batch_to_uint8

    layers = style_layers(G)
    total = layers[-1].start + layers[-1].channels
    named = dict(G.synthesis.named_modules())
    inside = np.zeros((len(aus), total))
    side = np.zeros(total)
    counted = 0
    for w in tqdm(probe_ws, desc="style channels' locality", unit="face"):
        energy: dict[str, torch.Tensor] = {}

        def keep(layer):
            def hook(_module, inputs):
                energy[layer.name] = inputs[0].detach().float()[0] ** 2  # [C, H, W]
            return hook

        handles = [named[layer.name.removesuffix(".mod").removeprefix("synthesis.")].register_forward_pre_hook(keep(layer))
                   for layer in layers]
        try:
            with torch.no_grad():
                image = G.synthesis(w[None]).clamp(-1, 1)
        finally:
            for h in handles:
                h.remove()
        face = find_face(batch_to_uint8(image)[0])
        if face is None:
            continue
        counted += 1
        for i, au in enumerate(aus):
            mask = torch.from_numpy(region_mask(face.landmarks, [au], SIDE, G.resolution))[None, None]
            for layer in layers:
                e = energy[layer.name]
                side[layer.start:layer.start + layer.channels] = e.shape[-1]
                m = F.interpolate(mask, size=e.shape[-2:], mode="area")[0]
                share = (e * m).sum((1, 2)) / e.sum((1, 2)).clamp_min(1e-30)
                inside[i, layer.start:layer.start + layer.channels] += share.numpy()
    return inside / max(counted, 1), side


def offsets_for(corr: np.ndarray, local: np.ndarray, spread: np.ndarray, top: int, min_local: float,
                allowed_side: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(channels [k], unit offsets [k]) of one AU: the ``top`` channels most correlated with it among those
    at least ``min_local`` inside its region (and where ``allowed_side`` [C] is True), each moved by
    corr / max|corr| times its spread."""
    allowed = np.flatnonzero((local >= min_local) & (True if allowed_side is None else allowed_side))
    if allowed.size == 0:
        return np.zeros(0, int), np.zeros(0)
    chosen = allowed[np.argsort(-np.abs(corr[allowed]))[:top]]
    return chosen, corr[chosen] / np.abs(corr[chosen]).max() * spread[chosen]


def channel_effects(G, probe_ws: torch.Tensor, channels: np.ndarray, spread: np.ndarray, aus: list[int],
                    sigmas: float, read=None, judge=None) -> dict[str, np.ndarray]:
    """What moving each channel by ``sigmas`` spreads does on the probe faces, means over the faces dlib finds:
    ``motion`` [len(channels), len(aus)]: each AU's landmark feature (:func:`stylerig_au.au.geometry.au_motion`,
    IOD, positive the AU's way); ``identity`` [len(channels)]: SFace distance to the unedited face; with
    ``read`` (images -> the student's AU readings [N, len(aus)]) ``student`` [len(channels), len(aus)]: the
    readings' change; with ``judge`` (the age/gender judge) ``male_logit`` [len(channels)]: the change of the
    judged log-odds of male. A channel's effect is measured, not inferred from the samples, so a channel that
    grows a beard on faces whose OpenFace reading is high is not credited with moving the lips."""
    from stylerig_au.au.geometry import au_motion
    from stylerig_au.edit.local import find_face
    from stylerig_au.edit.motion import marks_in_box
    from stylerig_au.edit.stylespace import style_layers, style_offsets
    from stylerig_au.imageio import batch_to_uint8
    from stylerig_au.metrics import sface_distance

    def logit(image: torch.Tensor) -> float:
        from eval_edits import judge_attributes  # experiments/ is on sys.path when a script runs from it

        p = float(np.clip(judge_attributes(judge, batch_to_uint8(image))[1][0], 1e-4, 1 - 1e-4))
        return float(np.log(p / (1 - p)))

    layers = style_layers(G)
    total = layers[-1].start + layers[-1].channels
    out = {"motion": np.zeros((len(channels), len(aus))), "identity": np.zeros(len(channels))}
    if read is not None:
        out["student"] = np.zeros((len(channels), len(aus)))
    if judge is not None:
        out["male_logit"] = np.zeros(len(channels))
    faces = []
    with torch.no_grad():
        for w in probe_ws:
            base = G.synthesis(w[None]).clamp(-1, 1)
            face = find_face(batch_to_uint8(base)[0])
            if face is not None:
                faces.append((w, base, face, None if read is None else read(base)[0],
                              None if judge is None else logit(base)))
    if not faces:
        raise SystemExit("error: dlib finds no face in the probe renders")
    n = len(faces)
    for k, c in enumerate(tqdm(channels, desc="style channels' effects", unit="channel")):
        for w, base, face, base_read, base_logit in faces:
            with torch.no_grad(), style_offsets(G, offset_vector(total, [c], [spread[c]], sigmas)):
                moved = G.synthesis(w[None]).clamp(-1, 1)
            marks = marks_in_box(batch_to_uint8(moved)[0], face)
            for i, au in enumerate(aus):
                out["motion"][k, i] += float(au_motion(face.landmarks[None], marks[None], au)[0]) / n
            out["identity"][k] += float(sface_distance(base, moved, boxes=[(face.box, face.box)])[0]) / n
            if read is not None:
                out["student"][k] += (read(moved)[0] - base_read) / n
            if judge is not None:
                out["male_logit"][k] += (logit(moved) - base_logit) / n
    return out


def offset_vector(total: int, channels, unit, scale: float) -> torch.Tensor:
    """A flat style offset [total] moving ``channels`` by ``scale · unit``."""
    out = torch.zeros(total)
    out[torch.as_tensor(np.asarray(channels, dtype=np.int64))] = torch.as_tensor(np.asarray(unit, np.float32)) * float(scale)
    return out


FORMAT = "stylerig-au/stylespace-channels"


def read_channels(path: Path) -> dict:
    """The record of a channels file this script wrote; ValueError (one line, with what to do) for anything else."""
    try:
        record = json.loads(Path(path).read_text())
        kind = record.get("format")
    except (OSError, ValueError, AttributeError) as err:
        kind = type(err).__name__
    if kind != FORMAT:
        raise ValueError(f"{path}: not style-space channels ({kind}); make them with experiments/stylespace_edits.py")
    return record


def load_edits(record: dict, G) -> dict[int, torch.Tensor]:
    """The per-AU style offsets [C] of a :func:`read_channels` record, each for a ``+step`` edit; ValueError
    (with what to do) for channels of another generator."""
    from stylerig_au.edit.stylespace import style_layers

    if record.get("generator") != G.name:
        raise ValueError(f"style-space channels for {record.get('generator')}, not {G.name}; make them with "
                         "experiments/stylespace_edits.py")
    layers = style_layers(G)
    total = layers[-1].start + layers[-1].channels
    return {int(au): offset_vector(total, e["channels"], e["unit"], e["scale"] / record["settings"]["step"])
            for au, e in record["aus"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=Path, required=True, help="AU dataset folder (learn-directions --data)")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "stylespace_channels_cpu.json")
    ap.add_argument("--generator", default="mobilestylegan-ffhq-1024")
    ap.add_argument("--probe-faces", type=int, default=4)
    ap.add_argument("--top", type=int, default=16, help="channels per AU")
    ap.add_argument("--min-local", type=float, default=0.6, help="least share of a channel's effect inside the region")
    ap.add_argument("--min-side", type=int, default=16, help="only channels of feature maps at least this big (coarser maps cannot be local)")
    ap.add_argument("--rounds", type=int, default=3, help="step sizes measured per AU (the closest to --step is kept)")
    ap.add_argument("--step", type=float, default=2.0)
    ap.add_argument("--start-scale", type=float, default=5.0, help="first step size tried (the strongest channel moves this many spreads)")
    ap.add_argument("--max-scale", type=float, default=20.0, help="largest step size (in sample spreads)")
    ap.add_argument("--psi", type=float, default=0.8)
    ap.add_argument("--target", choices=("openface", "geometry"), default="openface",
                    help="what the channels are tied to: OpenFace's readings, or their shape term (landmarks only)")
    ap.add_argument("--select", choices=("correlation", "effect", "student-effect"), default="correlation",
                    help="correlation: the channels most tied to the AU over the samples; effect: of the --candidates "
                         "most tied, those whose measured landmark motion per unit of SFace identity change is largest; "
                         "student-effect: those that raise the student's reading most per unit of SFace change and of "
                         "judged-gender change (--gender-cost)")
    ap.add_argument("--gender-cost", type=float, default=0.1,
                    help="with --select student-effect: what a change of 1 in the judged log-odds of male costs, in SFace distance")
    ap.add_argument("--candidates", type=int, default=48, help="with an effect --select: channels measured per AU")
    ap.add_argument("--effect-sigmas", type=float, default=6.0, help="with an effect --select: how far each channel is moved")
    ap.add_argument("--control", nargs="*", choices=("attributes",), default=[],
                    help="also regress the judged age and gender out before correlating (besides the head pose)")
    args = ap.parse_args(argv)

    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.vocab import AU_NUMBERS
    from stylerig_au.edit import learn
    from stylerig_au.edit.mapper_train import to_side
    from stylerig_au.edit.stylespace import style_layers, style_offsets, styles
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import load_samples

    try:
        samples = load_samples(args.samples, with_images="attributes" in args.control).valid()
    except Exception as err:  # noqa: BLE001 - one line for a wrong folder
        print(f"error: {args.samples}: not an AU dataset ({err}); make one with stylerig-au learn-directions --data DIR",
              file=sys.stderr)
        return 2
    G = load_generator(args.generator)
    layers = style_layers(G)
    total = layers[-1].start + layers[-1].channels
    ws = samples.w[:, None].repeat(1, G.num_ws, 1)
    s = styles(G, ws).numpy().astype(np.float64)
    spread = s.std(0)
    aus = [int(a) for a in samples.meta["aus"]]
    y = samples.aus.numpy().astype(np.float64) if args.target == "openface" else learn.geometry_labels(samples)
    controls = [samples.pose.numpy().astype(np.float64)]
    if "attributes" in args.control:  # InterFaceGAN-style conditioning: what the judged age and gender explain goes
        controls.append(learn.attribute_values(samples, int(samples.meta["image_size"])))
    controls = np.concatenate(controls, 1)
    keep = np.isfinite(controls).all(1) & np.isfinite(y).all(1)
    corr = correlations(residual(s[keep], controls[keep]), residual(y[keep], controls[keep]))  # [17, C]

    probe_ws = seed_ws(G, PROBE_SEED_START, args.probe_faces, args.psi)
    cache = args.out.with_name(args.out.stem + ".cache.npz")
    key = f"{args.probe_faces}-{args.psi}-energy"
    stored = dict(np.load(cache)) if cache.is_file() else {}
    if str(stored.get("key")) == key:
        local, side = stored["local"], stored["side"]
    else:
        local, side = locality(G, probe_ws, aus)
        np.savez(cache, local=local, side=side, key=key)

    student = make_detector("student")
    student_aus = list(student.aus)

    def read(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return student(to_side(images.clamp(-1, 1), 256)).float().numpy()

    with torch.no_grad():
        base = read(G.synthesis(probe_ws))
    chosen = {}
    for i, au in enumerate(aus):
        chosen[au] = offsets_for(corr[i], local[i], spread, args.candidates if args.select != "correlation" else args.top,
                                 args.min_local, side >= args.min_side)
    if args.select != "correlation":  # keep the candidates whose measured effect is largest per unit of its cost
        pool = np.unique(np.concatenate([c for c, _ in chosen.values()]))
        effects_file = args.out.with_name(args.out.stem + ".effects.npz")
        by_student = args.select == "student-effect"
        effects = dict(np.load(effects_file)) if effects_file.is_file() else {}
        if not (np.array_equal(effects.get("pool"), pool) and (not by_student or "student" in effects)):
            judge = None
            if by_student:
                from stylerig_au.attributes import load_judge

                judge = load_judge()

            def read_aus(images: torch.Tensor) -> np.ndarray:  # in `aus` order; 0 for an AU the student does not read
                got = read(images)
                return np.stack([got[:, student_aus.index(a)] if a in student_aus else np.zeros(len(got)) for a in aus], 1)

            effects = channel_effects(G, probe_ws, pool, spread, aus, args.effect_sigmas,
                                      read=read_aus if by_student else None, judge=judge)
            np.savez(effects_file, pool=pool, **effects)
        for i, au in enumerate(aus):
            rows = np.searchsorted(pool, chosen[au][0])
            if by_student:  # the student's rise per unit of identity change and of judged-gender change
                gain = effects["student"][rows, i]
                cost = effects["identity"][rows] + args.gender_cost * np.abs(effects["male_logit"][rows]) + 0.02
                floor = 0.05  # a channel that moves the reading by less than this: none
            else:  # the AU's landmark feature per unit of identity change
                gain = effects["motion"][rows, i]
                cost = effects["identity"][rows] + 0.02
                floor = 0.002  # under 0.2 % IOD: none
            merit = np.abs(gain) / cost
            best = np.argsort(-merit)[:args.top]
            best = best[np.abs(gain[best]) > floor]
            channels = chosen[au][0][best]
            chosen[au] = (channels, np.sign(gain[best]) * spread[channels] * merit[best]
                          / max(float(merit[best].max(initial=0)), 1e-9))
    result = {}
    for i, au in enumerate(tqdm(aus, desc="calibrate style edits", unit="AU")):
        channels, unit = chosen[au]
        entry = {"channels": channels.tolist(), "unit": [round(float(u), 6) for u in unit],
                 "correlation": [round(float(c), 4) for c in corr[i][channels]],
                 "locality": [round(float(v), 3) for v in local[i][channels]],
                 "layers": [next(lay.name for lay in layers if lay.start <= c < lay.start + lay.channels) for c in channels],
                 "scales": [], "student_reads": []}
        if channels.size == 0 or au not in student_aus:
            entry["scale"] = 0.0
            result[str(au)] = entry
            continue
        scale = args.start_scale
        for _ in range(args.rounds):
            with torch.no_grad(), style_offsets(G, offset_vector(total, channels, unit, scale)):
                achieved = float(np.nanmean(read(G.synthesis(probe_ws))[:, student_aus.index(au)] - base[:, student_aus.index(au)]))
            entry["scales"].append(scale)
            entry["student_reads"].append(round(achieved, 3))
            # the sign may flip: a channel's correlation over samples need not be its effect on one face
            wanted = scale * args.step / achieved if abs(achieved) > 0.05 else args.max_scale
            wanted = float(np.clip(wanted, -args.max_scale, args.max_scale))
            if wanted in entry["scales"]:
                break
            scale = wanted
        # far offsets break the face rather than move the AU further: keep the measured scale that came closest
        entry["scale"] = entry["scales"][int(np.argmin([abs(r - args.step) for r in entry["student_reads"]]))]
        result[str(au)] = entry
        print(f"AU{au}: {len(channels)} channels, student {entry['student_reads']} at scales "
              f"{[round(x, 2) for x in entry['scales']]} -> {entry['scale']:.2f}")
    record = {"format": FORMAT, "generator": G.name, "channels_total": total,
              "samples": len(samples), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "au_order": list(AU_NUMBERS), "aus": result}
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
