"""Can a mapper edit be made more local after the fact? Two post-hoc restrictions, scored by OpenFace.

The calibrated mapper reaches +2 on most AUs but drifts (other AUs move) and changes identity (age,
facial hair, skin colour; ``eval_edits.py``). This script renders the same ``+amount`` single-AU
edits of a mapper in several variants and reads each with the OpenFace estimator:

- ``raw``: the mapper's edit as it is;
- ``slots``: its Δw+ kept only on the W+ slots of the AU's linear-direction mask (the slots the
  bundled directions found the AU to need; the mapper itself may move all 16 editable slots);
- ``blend-F``: image-space compositing: the edit inside the face region of the AU
  (``mapper_train.REGION_BOXES`` by the AU's region, feathered over F × the side), the unedited
  render outside it.

Per variant: mean |achieved − amount| over AUs, AUs within ±0.5, drift (mean |change| of the other
AUs) and dlib identity distance, as in ``eval_edits.py``.

    python experiments/local_edit_variants.py --mapper cal16.pt --faces 4 --seed-start 1000000

The default faces are the held-out ones; pass ``--seed-start 1000000`` (the calibration's probe
faces) to explore without touching them. Prints a table and writes
``experiments/results/local_edit_variants_<device>.json`` and a PNG grid (2 faces; per face a row
for each variant, columns: the face, then each AU's edit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eval_edits import add_face_set_arguments, describe_mapper  # experiments/ is on sys.path when a script runs from it

REPO = Path(__file__).resolve().parent.parent
GRID_FACES = 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapper", default=None, help="mapper file (default: the bundled one)")
    ap.add_argument("--feather", type=float, nargs="+", default=[0.04, 0.08],
                    help="feather widths of the region blends, as fractions of the image side")
    add_face_set_arguments(ap)
    args = ap.parse_args(argv)

    from stylerig_au.au.detect import make_detector
    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.edit.mapper_train import region_mask
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import batch_to_uint8, make_grid, save_image
    from stylerig_au.metrics import identity_distance
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import label_images

    device = args.device
    G = load_generator(device=device)
    mapper = load_default_mapper(G, args.mapper, device=device)
    directions = load_default_directions(G)
    openface = make_detector("openface").to(device)
    aus = mapper.aus
    of_cols = [list(openface.aus).index(a) for a in aus]
    variants = ["raw", "slots"] + [f"blend-{f:g}" for f in args.feather]

    def synth(ws: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return G.synthesis(ws).clamp(-1, 1)

    ws_all = seed_ws(G, args.seed_start, args.faces, args.psi, device)
    # [variant, face, edited AU, measured AU] changes and [variant, face, edited AU] identity distances
    change = np.full((len(variants), args.faces, len(aus), len(aus)), np.nan)
    ident = np.full((len(variants), args.faces, len(aus)), np.nan)
    tiles: list[np.ndarray] = []
    bar = tqdm(total=args.faces * len(aus), desc="local edit variants", unit="edit")
    for f in range(args.faces):
        ws = ws_all[f:f + 1]
        base = synth(ws)
        base_u8 = batch_to_uint8(base)
        base_aus = label_images(base_u8, openface)["aus"][0][of_cols]
        if not np.isfinite(base_aus).all():
            print(f"seed {args.seed_start + f}: no face found by dlib; skipped", file=sys.stderr)
            bar.update(len(aus))
            continue
        base_small = F.interpolate(base, size=512, mode="area")
        rows = {v: [base_u8[0]] for v in variants}
        for i, au in enumerate(aus):
            delta = torch.zeros(1, len(aus), device=device)
            delta[0, i] = args.amount
            with torch.no_grad():
                step = mapper(ws, delta)
            edit = synth(ws + step)
            for v_idx, v in enumerate(variants):
                if v == "raw":
                    img = edit
                elif v == "slots":
                    img = synth(ws + step * directions.mask(au).to(device)[None, :, None])
                else:
                    mask = region_mask([[au]], edit.shape[-1], feather=float(v.split("-", 1)[1]), device=device)
                    img = mask * edit + (1 - mask) * base
                img_u8 = batch_to_uint8(img)
                change[v_idx, f, i] = label_images(img_u8, openface)["aus"][0][of_cols] - base_aus
                ident[v_idx, f, i] = float(identity_distance(base_small, F.interpolate(img, size=512, mode="area"))[0])
                rows[v].append(img_u8[0])
            bar.update(1)
        if f < GRID_FACES:
            for v in variants:
                tiles.extend(rows[v])
    bar.close()

    summary = {}
    print(f"{'variant':<12} {'error':>6} {'within':>7} {'drift':>6} {'identity':>9}")
    for v_idx, v in enumerate(variants):
        achieved = np.array([np.nanmean(change[v_idx, :, i, i]) for i in range(len(aus))])
        drift = np.array([np.nanmean(np.abs(np.delete(change[v_idx, :, i], i, axis=1))) for i in range(len(aus))])
        per_au = {str(a): {"achieved_mean": float(achieved[i]), "drift_mean": float(drift[i]),
                           "identity_mean": float(np.nanmean(ident[v_idx, :, i]))} for i, a in enumerate(aus)}
        summary[v] = {"mean_abs_error": float(np.mean(np.abs(achieved - args.amount))),
                      "within_0.5": int(np.sum(np.abs(achieved - args.amount) <= 0.5)),
                      "mean_drift": float(drift.mean()), "mean_identity": float(np.nanmean(ident[v_idx])), "per_au": per_au}
        s = summary[v]
        print(f"{v:<12} {s['mean_abs_error']:6.2f} {s['within_0.5']:>4d}/{len(aus)} {s['mean_drift']:6.2f} {s['mean_identity']:9.2f}")
    out = args.out or REPO / "experiments" / "results" / f"local_edit_variants_{'cuda' if device.startswith('cuda') else 'cpu'}.json"
    grid = out.with_suffix(".png")
    if tiles:
        save_image(grid, make_grid(tiles, ncols=len(aus) + 1, cell=128), value_range=(0, 255))
    result = {"device": device_label(device), "torch": torch.__version__, "generator": G.name,
              **describe_mapper(mapper),
              "amount": args.amount, "psi": args.psi, "faces": args.faces, "seed_start": args.seed_start,
              "variants": summary, "grid_rows": f"{GRID_FACES} faces x ({', '.join(variants)})",
              "command": " ".join(["python", "experiments/" + Path(sys.argv[0]).name, *sys.argv[1:]])}
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"-> {out}, {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
