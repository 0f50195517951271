"""Evaluate single-AU edits on held-out faces: achieved AU change, off-target drift, identity, speed.

For each held-out generator face (seeds from 2,000,000 on, never used for learning) and each AU, a
``+amount`` edit is rendered and both images are read by the OpenFace estimator:

- achieved: the edited AU's change (target: ``amount``); with a negative amount (e.g. ``--amount -1``) only
  the AUs a face already shows at least that much are edited (a blank tile in the grid for the others);
- geometry_motion: how far the landmark feature the AU moves actually moved (``stylerig_au.au.geometry``,
  inter-ocular units, positive = the AU's way): a judge that texture such as a beard or glasses cannot fool;
- drift: mean absolute change of the other 16 AUs; each row keeps all 17 changes, and each AU's
  summary names the three other AUs that moved most (ranked by mean |change|, with the signed mean
  beside it), to show where drift comes from;
- identity: dlib identity distance between the face and its edit (same person < 0.6; target ≤ 0.45),
  the judge; ``identity_sface``: SFace's cosine distance between them (same person below about 0.6),
  a second opinion from the network the training identity term uses by default;
- age_change, male_prob_change: what an independent age/gender judge (``stylerig_au.attributes``, dlib-models'
  Cydral networks, never trained against) reads on the edit minus the face; the summary gives the share of
  edits that change the age by more than 5 years or move P(male) across 0.5, beside the judge's own noise
  (spread of its mirrored-vs-plain readings on the dev photos and on the held-out faces); ``--no-attributes``
  skips it;
- seconds: applying the edit + synthesising one 1024² image (batch 1), the cost of editing an
  already-inverted latent.

Note: the linear directions were calibrated with the same OpenFace estimator (on other latents), so
for them this is a held-out-faces check, not an independent-detector check.

    python experiments/eval_edits.py --faces 8                 # CPU, bundled directions
    python experiments/eval_edits.py --faces 8 --method mapper # CPU, bundled AU mapper
    python experiments/eval_edits.py --faces 32 --device cuda
    python experiments/eval_edits.py --faces 8 --method mapper --expressible experiments/results/expressible_aus_cpu.json

The summary's ``expressed_*`` numbers cover the AUs the generator can express: with
``--expressible``, the set ``expressible_aus.py`` measured on the generator's own samples (issue 7's
"AUs that the generator can express"); without it, the directions' linearly expressed AUs (all 17
for the bundled directions).

The mapper was trained against the student detector, never against OpenFace, so for it this is
also an independent-detector check (its linear part starts from the directions above, whose step
sizes OpenFace set; a mapper calibrated with ``calibrate-mapper`` keeps the check independent only
with ``--estimator student``).

Prints a table and writes ``experiments/results/eval_edits_<device>.json`` and a PNG grid
(rows: faces; columns: the face, then each AU's +amount edit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stylerig_au.diagnostics import device_label
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
HELD_OUT_SEED_START = 2_000_000



def describe_mapper(mapper) -> dict:
    """What a result file records about the mapper it scored: when it was made, its training and
    calibration commands, and its input gains."""
    return {"mapper_created": mapper.created, "mapper_command": mapper.meta.get("command"),
            "mapper_calibration": (mapper.meta.get("calibration") or {}).get("command"),
            "mapper_input_gain": {str(a): round(g, 4) for a, g in mapper.input_gains().items()}}


def add_face_set_arguments(ap: argparse.ArgumentParser) -> None:
    """The options shared by the scripts that edit held-out faces: --faces, --seed-start, --psi, --amount, --device, --out."""
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START,
                    help="first seed of the faces (default 2,000,000; keep below 3,000,000, where the mapper's training latents start)")
    ap.add_argument("--psi", type=float, default=0.8)
    ap.add_argument("--amount", type=float, default=2.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)


def au_columns_grid(tiles: list, aus: list[int], amount: float, cell: int = 128, row_labels: list[str] | None = None):
    """Rows of ``len(aus) + 1`` tiles (the unedited face, then its edit of each AU) as one grid whose columns
    are labelled 'face', 'AU1 +2', ... and whose rows carry ``row_labels`` if given: uint8 [H, W, 3]."""
    from stylerig_au.edit.media import labelled_grid, value_label

    n = len(aus) + 1
    rows = [tiles[i:i + n] for i in range(0, len(tiles), n)]
    return labelled_grid(rows, row_labels=row_labels, cell=cell,
                         col_labels=["face"] + [f"AU{au} {value_label(amount)}" for au in aus])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="mobilestylegan-ffhq-1024")
    ap.add_argument("--directions", default=None, help="directions file (default: the bundled ones)")
    ap.add_argument("--method", choices=("linear", "mapper"), default="linear")
    ap.add_argument("--stylespace", type=Path, default=None,
                    help="edit by these style-space channel offsets (experiments/stylespace_edits.py) instead of --method")
    ap.add_argument("--mapper", default=None, help="mapper file for --method mapper (default: the bundled one)")
    ap.add_argument("--expressible", type=Path, default=None,
                    help="an expressible_aus.py result: summarise over the AUs the generator can express at +amount "
                         "(default: the directions' linearly expressed AUs)")
    ap.add_argument("--no-attributes", action="store_true", help="skip the age/gender judge")
    ap.add_argument("--local", action="store_true",
                    help="keep each edit to its AU's face region (stylerig_au.edit.local: blended inside the generator)")
    ap.add_argument("--motion", action="store_true",
                    help="show each edit as the unedited face moved the way the edit moves its landmarks "
                         "(stylerig_au.edit.motion)")
    ap.add_argument("--motion-gain", type=float, default=1.0,
                    help="with --motion: scale the landmark motion by this")
    ap.add_argument("--motion-interiors", nargs="*", default=["mouth", "eyes"], choices=["mouth", "eyes"], metavar="PART",
                    help="with --motion: parts taken from the edited render (mouth, eyes; none: pure warp)")
    ap.add_argument("--gain", type=float, default=1.0,
                    help="ask each edit for gain × amount (still scored against amount): how far a method can go")
    ap.add_argument("--local-from", type=int, default=16, metavar="RES",
                    help="with --local: blend after every feature layer from this resolution up")
    ap.add_argument("--rescore", type=Path, nargs="+", default=None, metavar="RESULT",
                    help="instead of editing: print the summary of stored results (over --expressible's AUs)")
    add_face_set_arguments(ap)
    args = ap.parse_args(argv)
    expressible = None
    if args.expressible is not None:
        try:
            expressible = set(int(a) for a in json.loads(args.expressible.read_text())["expressible_aus"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"error: {args.expressible}: not an expressible_aus.py result ({type(err).__name__}); run "
                  "experiments/expressible_aus.py first", file=sys.stderr)
            return 2
    if args.rescore:
        return rescore(args.rescore, expressible)
    channels = None
    if args.stylespace is not None:  # a wrong file is refused before the models load
        from stylespace_edits import read_channels  # experiments/ is on sys.path when a script runs from it

        try:
            channels = read_channels(args.stylespace)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.geometry import au_motion
    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.local import MASK_SIDE, find_face, region_mask, render_base, render_local
    from stylerig_au.edit.motion import marks_in_box, transfer_motion
    from stylerig_au.edit.spec import AU
    from stylerig_au.fileio import atomic_write_text, result_json
    from stylerig_au.imageio import batch_to_uint8, save_image
    from stylerig_au.metrics import identity_distances
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import label_images

    device = args.device
    G = load_generator(args.generator, device=device)
    dirs = load_default_directions(G, args.directions)
    if args.method == "mapper":
        from stylerig_au.edit.mapper import load_default_mapper

        source = load_default_mapper(G, args.mapper, device=device)
        described = describe_mapper(source)
    else:
        source, described = dirs, {"directions": dirs.method, "directions_created": dirs.created}
    from stylerig_au.evaluate import make_editor

    editor = make_editor(G, source)
    style_edits = None
    if channels is not None:
        from stylespace_edits import load_edits
        from stylerig_au.edit.stylespace import style_offsets

        try:
            style_edits = load_edits(channels, G)
        except (ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        described = {"stylespace": str(args.stylespace)}
    judge = None
    if not args.no_attributes:
        from stylerig_au.attributes import load_judge

        judge = load_judge(device=device)
    detector = make_detector("openface").to(device)
    aus = list(dirs.aus)
    det_aus = list(detector.aus)
    suffix = "_stylespace" if style_edits is not None else "" if args.method == "linear" else f"_{args.method}"
    out = args.out or REPO / "experiments" / "results" / f"eval_edits_{'cuda' if device.startswith('cuda') else 'cpu'}{suffix}.json"

    def render(ws: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        with torch.no_grad():
            img = G.synthesis(ws).clamp(-1, 1)
        return batch_to_uint8(img), img

    def render_edit(ws, edited_ws, base, face, base_marks, au) -> tuple[torch.Tensor, np.ndarray]:
        """(edited image [1, 3, R, R] in [-1, 1], uint8 copy) as --motion, --local or a global render shows it."""
        if args.motion:
            with torch.no_grad():
                moving = G.synthesis(edited_ws).clamp(-1, 1)
            moved_marks = marks_in_box(batch_to_uint8(moving)[0], face)
            edit = transfer_motion(base, moving, face.landmarks, moved_marks, [au], args.motion_gain,
                                   args.motion_interiors).clamp(-1, 1)
            return edit, batch_to_uint8(edit)
        if args.local:
            mask = torch.from_numpy(region_mask(base_marks[0], [au], MASK_SIDE, G.resolution))[None, None]
            with torch.no_grad():
                edit = render_local(G, ws, edited_ws, mask.to(device), from_resolution=args.local_from).clamp(-1, 1)
            return edit, batch_to_uint8(edit)
        edit_u8, edit = render(edited_ws)
        return edit, edit_u8

    rows = []
    tiles = []
    seconds = []
    base_faces = []
    ws_all = seed_ws(G, args.seed_start, args.faces, args.psi, device)
    bar = tqdm(total=args.faces * (len(aus) + 1), desc=f"eval edits ({'stylespace' if style_edits is not None else args.method})", unit="img")
    for f in range(args.faces):
        ws = ws_all[f:f + 1]
        base_u8, base = render(ws)
        # the unedited render each local edit blends with, kept for the face's edits (style edits render both rows)
        kept = render_base(G, ws, from_resolution=args.local_from) if args.local and style_edits is None else ws
        base_label = label_images(base_u8, detector)
        base_aus, base_marks = base_label["aus"][0], base_label["landmarks"]
        base_small = F.interpolate(base, size=512, mode="area")
        face = find_face(base_u8[0]) if args.motion else None
        bar.update(1)
        if not np.isfinite(base_aus).all() or (args.motion and face is None):
            print(f"seed {args.seed_start + f}: no face found by dlib; skipped", file=sys.stderr)
            bar.update(len(aus))
            continue
        row_tiles = [base_u8[0]]
        if judge is not None:
            base_attr = judge_attributes(judge, base_u8)
            if np.isfinite(base_attr[0][0]):
                base_faces.append(base_u8[0])
        for au in aus:
            if args.amount < 0 and base_aus[det_aus.index(au)] < -args.amount:
                # a decrease is asked only of AUs the face shows at least that much (OpenFace reads 0-5)
                bar.update(1)
                if f < 4:
                    row_tiles.append(np.zeros_like(base_u8[0]))
                continue
            tick = time.perf_counter()
            if style_edits is None:
                edited_ws, styled = editor.edit(ws, AU(au, args.amount * args.gain)), contextlib.nullcontext()
            else:  # the latent stays, the styles move while the edit renders ([base; edit] rows for a local render)
                offset = style_edits[au].to(device) * args.amount * args.gain
                per_image = torch.stack([torch.zeros_like(offset), offset]) if args.local and not args.motion else offset
                edited_ws, styled = ws, style_offsets(G, per_image)
            with styled:
                edit, edit_u8 = render_edit(kept, edited_ws, base, face, base_marks, au)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - tick)
            edit_label = label_images(edit_u8, detector)
            edit_aus = edit_label["aus"][0]
            change = edit_aus - base_aus
            k = det_aus.index(au)
            edit_small = F.interpolate(edit, size=512, mode="area")
            both = identity_distances(base_small, edit_small, device=device, shared_frame=True)
            ident, ident_sface = float(both["dlib"][0]), float(both["sface"][0])
            rows.append({"seed": args.seed_start + f, "au": au, "achieved": float(change[k]),
                         "drift": float(np.abs(np.delete(change, k)).mean()), "identity_distance": ident,
                         "geometry_motion": float(au_motion(base_marks, edit_label["landmarks"], au)[0]),
                         "identity_sface": ident_sface,
                         "changes": {str(a): round(float(c), 4) for a, c in zip(det_aus, change)}})
            if judge is not None:
                edit_attr = judge_attributes(judge, edit_u8)
                rows[-1].update(age_base=float(base_attr[0][0]), age_change=float(edit_attr[0][0] - base_attr[0][0]),
                                male_prob_base=float(base_attr[1][0]),
                                male_prob_change=float(edit_attr[1][0] - base_attr[1][0]))
            if f < 4:
                row_tiles.append(edit_u8[0])
            bar.update(1)
        if f < 4:
            tiles.extend(row_tiles)
    bar.close()
    if not rows:
        print("error: no held-out face could be measured", file=sys.stderr)
        return 1

    expressed = expressible if expressible is not None else set(dirs.meta.get("expressed", aus))
    per_au = {}
    print(f"{'AU':>5} {'expr':>5} {'achieved':>9} {'±sd':>6} {'drift':>6} {'ID':>6} {'SFace':>6} {'geo':>6} {'moved':>5}  most moved other AUs")
    for au in aus:
        r = [x for x in rows if x["au"] == au and np.isfinite(x["achieved"])]
        if not r:
            continue
        ach = np.array([x["achieved"] for x in r])
        per_au[au] = {"expressed": au in expressed, "achieved_mean": float(ach.mean()), "achieved_sd": float(ach.std()),
                      "drift_mean": float(np.mean([x["drift"] for x in r])),
                      "identity_mean": float(np.mean([x["identity_distance"] for x in r])),
                      "identity_sface_mean": float(np.mean([x["identity_sface"] for x in r])), "faces": len(r),
                      **geometry_summary(r, args.amount),
                      "top_drift": top_drift(r, au), **attribute_changes(r)}
        p = per_au[au]
        moved = ", ".join(f"AU{a} {m['mean']:+.2f} (|{m['abs']:.2f}|)" for a, m in p["top_drift"].items())
        print(f"AU{au:<3d} {'yes' if p['expressed'] else 'no':>5} {p['achieved_mean']:+9.2f} {p['achieved_sd']:6.2f} "
              f"{p['drift_mean']:6.2f} {p['identity_mean']:6.2f} {p['identity_sface_mean']:6.2f} "
              f"{p['geometry_motion_mean']:+6.3f} {p['geometry_moved_share']:5.2f}  {moved}")
    summary = summarise(rows, per_au, args.amount, seconds)
    if judge is not None:
        summary.setdefault("attributes", {})["judge_noise"] = judge_noise(judge, base_faces)
    print(json.dumps(summary, indent=1))
    grid = out.with_suffix(".png")
    save_image(grid, au_columns_grid(tiles, aus, args.amount), value_range=(0, 255))
    result = {
        "device": device_label(device), "torch": torch.__version__, "generator": G.name, "method": "stylespace" if style_edits is not None else args.method,
        **described, "amount": args.amount, "psi": args.psi,
        "local_from_resolution": args.local_from if args.local else None, "gain": args.gain,
        "motion_gain": args.motion_gain if args.motion else None,
        "motion_interiors": args.motion_interiors if args.motion else None,
        "faces": args.faces, "held_out_seed_start": args.seed_start, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "expressed_from": str(args.expressible) if args.expressible is not None else "directions (linear read-out R²)",
        "summary": summary, "per_au": per_au, "rows": rows, "grid": str(grid.relative_to(REPO)) if grid.is_relative_to(REPO) else str(grid),
    }
    atomic_write_text(out, result_json(result))
    print(f"-> {out}, {grid}")
    return 0


def summarise(rows: list[dict], per_au: dict[int, dict], amount: float, seconds: list[float] | None = None) -> dict:
    """The run's summary over the AUs whose ``per_au`` entry says ``expressed``: reach (mean |achieved −
    amount|, AUs within ±0.5), drift, both identity distances, the geometric judge (AUs whose landmark
    feature moved the AU's way on most faces) and, when the rows carry them, the age/gender judge's
    changes pooled over those AUs' edits."""
    expressed_aus = sorted(a for a, p in per_au.items() if p["expressed"])
    ex = [per_au[a] for a in expressed_aus]

    def mean_of(key: str) -> float | None:
        values = [p[key] for p in ex if key in p]
        return float(np.mean(values)) if values else None

    summary = {
        "expressed_aus": expressed_aus,
        "expressed_mean_abs_error": float(np.mean([abs(p["achieved_mean"] - amount) for p in ex])) if ex else None,
        "expressed_within_0.5": sum(abs(p["achieved_mean"] - amount) <= 0.5 for p in ex),
        "expressed_mean_drift": mean_of("drift_mean"),
        "expressed_mean_identity": mean_of("identity_mean"),
        "expressed_mean_identity_sface": mean_of("identity_sface_mean"),
        "expressed_geometry_moved": sum(p.get("geometry_moved_share", 0) > 0.5 for p in ex),
        **face_standard_errors(rows, set(expressed_aus)),
    }
    if seconds:
        summary["seconds_per_edit_median"] = float(np.median(seconds))
    attributes = attribute_changes([r for r in rows if r["au"] in expressed_aus])
    if attributes:
        summary["attributes"] = {"expressed": attributes}
    return summary


def rescore(files: list[Path], expressible: set[int] | None) -> int:
    """Print the summary of stored eval_edits.py results over the ``expressible`` AUs (all of each
    file's expressed AUs when None), one line per file; ``--rescore``."""
    print(f"{'file':40s} {'error':>6} {'within':>7} {'drift':>6} {'ID':>5} {'SFace':>6} {'geo':>5} {'age>5':>6} {'flip':>5} {'Δage':>6}")
    for file in files:
        try:
            result = json.loads(Path(file).read_text())
            per_au = {int(a): dict(p) for a, p in result["per_au"].items()}
            rows, amount = result["rows"], float(result["amount"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"error: {file}: not an eval_edits.py result ({type(err).__name__})", file=sys.stderr)
            return 2
        judged = any("geometry_motion" in r for r in rows)
        for au, p in per_au.items():
            p["expressed"] = au in expressible if expressible is not None else p["expressed"]
            if judged:  # the geometric judge's share, by the sign of the asked change
                p.update(geometry_summary([r for r in rows if r["au"] == au], amount))
        s = summarise(rows, per_au, amount)
        a = s.get("attributes", {}).get("expressed", {})
        fmt = lambda key, spec: format(a[key], spec) if key in a else "–"  # noqa: E731 - rows written before the judge
        print(f"{Path(file).name:40s} {s['expressed_mean_abs_error']:6.2f} {s['expressed_within_0.5']:3d} of {len(s['expressed_aus']):<2d} "
              f"{s['expressed_mean_drift']:6.2f} {s['expressed_mean_identity']:5.2f} {(s['expressed_mean_identity_sface'] or math.nan):6.2f} "
              f"{s['expressed_geometry_moved']:5d} {fmt('share_age_over_5', '6.2f')} {fmt('share_gender_flip', '5.2f')} "
              f"{fmt('age_change_mean', '+6.1f')}")
    return 0


def geometry_summary(rows: list[dict], amount: float = 1.0) -> dict[str, float]:
    """The geometric judge over one AU's edit rows: mean signed motion of the AU's landmark feature
    (IOD units, positive = the way the AU's rise moves it) and the share of faces where it moved the
    way the edit asked (up for a positive ``amount``, down for a negative one) by more than
    :data:`stylerig_au.au.geometry.MOVED_IOD`. NaN when no row has the motion."""
    from stylerig_au.au.geometry import MOVED_IOD

    motion = np.array([r["geometry_motion"] for r in rows if np.isfinite(r.get("geometry_motion", np.nan))])
    if not len(motion):
        return {"geometry_motion_mean": float("nan"), "geometry_moved_share": float("nan")}
    return {"geometry_motion_mean": float(motion.mean()),
            "geometry_moved_share": float((np.sign(amount) * motion > MOVED_IOD).mean())}


AGE_CHANGE_YEARS = 5.0  # an edit "ages" the face when the judge's expected age moves by more than this


def judge_attributes(judge, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected age in years, P(male)) of each uint8 RGB image [N, H, W, 3], float64 [N] each; NaN where no face is found."""
    from stylerig_au.attributes import face_chips
    from stylerig_au.errors import StylerigError

    age, male = np.full(len(images_u8), np.nan), np.full(len(images_u8), np.nan)
    for i, image in enumerate(images_u8):
        try:
            chips = face_chips(image)
        except StylerigError:
            continue
        attrs = judge.judge_chips([chips.age], [chips.gender])
        age[i], male[i] = attrs.age[0], attrs.male_prob[0]
    return age, male


def attribute_changes(rows: list[dict]) -> dict[str, float | int | None]:
    """Means of the judge's ``age_change`` / ``male_prob_change`` over eval rows, and the share of edits
    that change the age by more than :data:`AGE_CHANGE_YEARS` or move P(male) across 0.5.

    A row's base P(male) is its edit's minus its change, so a flip is ``(base - 0.5)(edit - 0.5) < 0``.
    Rows without the judge's reading (written without it, or no face found) are left out; {} if none.
    """
    r = [x for x in rows if np.isfinite(x.get("age_change", np.nan)) and np.isfinite(x.get("male_prob_change", np.nan))]
    if not r:
        return {}
    age = np.array([x["age_change"] for x in r])
    male = np.array([x["male_prob_change"] for x in r])
    base_male = np.array([x["male_prob_base"] for x in r])
    flips = (base_male - 0.5) * (base_male + male - 0.5) < 0
    return {"age_change_mean": float(age.mean()), "age_change_abs_mean": float(np.abs(age).mean()),
            "male_prob_change_mean": float(male.mean()), "male_prob_change_abs_mean": float(np.abs(male).mean()),
            "share_age_over_5": float(np.mean(np.abs(age) > AGE_CHANGE_YEARS)), "share_gender_flip": float(flips.mean()),
            "edits": len(r)}


def judge_noise(judge, base_faces: list[np.ndarray]) -> dict:
    """The judge's own noise (:func:`stylerig_au.attributes.flip_noise`) on the dev photos
    (``$STYLERIG_AU_FACES/celebahq-dev``, None when absent) and on the held-out faces' renders."""
    import os

    from stylerig_au.attributes import flip_noise
    from stylerig_au.imageio import list_images, load_image

    dev = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces")) / "celebahq-dev"
    photos = [load_image(p) for p in list_images([dev])] if dev.is_dir() else []
    return {"dev_photos": flip_noise(judge, photos) if len(photos) > 1 else None,
            "held_out_faces": flip_noise(judge, base_faces) if len(base_faces) > 1 else None}


def top_drift(rows: list[dict], au: int, n: int = 3) -> dict[str, dict[str, float]]:
    """The ``n`` other AUs that the edits of ``au`` moved most, ranked by mean absolute change.

    ``rows`` are the eval rows of one edited AU, each with its ``changes`` ({AU: edited − base}, all
    detector AUs). Returns {AU: {"abs": mean |change|, "mean": signed mean change}}, largest first; the
    signed mean tells a systematic coupling (e.g. AU6 raising AU12) from scatter. Rows written before
    ``changes`` was recorded give an empty dict.
    """
    changes = [r["changes"] for r in rows if "changes" in r]
    if not changes:
        return {}
    others = [a for a in changes[0] if a != str(au)]
    stats = {a: {"abs": float(np.mean([abs(c[a]) for c in changes])), "mean": float(np.mean([c[a] for c in changes]))}
             for a in others}
    ranked = sorted(others, key=lambda a: -stats[a]["abs"])[:n]
    return {a: {k: round(v, 3) for k, v in stats[a].items()} for a in ranked}


def face_standard_errors(rows: list[dict], aus: set[int]) -> dict[str, float | None]:
    """Standard errors over faces of the mean drift and identity distance of the edits of ``aus``.

    Each face's edits are averaged first (the faces are the independent samples; its 17 edits share
    one face), then the standard error of those per-face means is taken. None with fewer than 2 faces.
    """
    from compare_runs import per_face_means  # experiments/ is on sys.path when a script runs from it

    out: dict[str, float | None] = {}
    for key, name in (("drift", "expressed_drift_se_over_faces"), ("identity_distance", "expressed_identity_se_over_faces")):
        per_face = list(per_face_means(rows, aus, lambda r, k=key: r[k]).values())
        out[name] = float(np.std(per_face, ddof=1) / np.sqrt(len(per_face))) if len(per_face) > 1 else None
    return out


if __name__ == "__main__":
    sys.exit(main())
