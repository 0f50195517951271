"""How big is an AU mapper edit to the student detector and to OpenFace? Per AU, on held-out faces.

The mapper is trained until the student sees the asked-for change, but OpenFace reads its +2 edits
as +0.3 to +2.4 (``eval_edits.py --method mapper``). This script renders the same +amount edits and
reads every face and edit with both detectors: the student as the mapper's training sees it (the
1024² render area-downsampled to 256², raw outputs) and the OpenFace estimator. Per AU it reports
the mean change each detector measures on the edited AU, their ratio (student / OpenFace), and the
off-target drift each detector sees.

    python experiments/student_vs_openface_edits.py --faces 8                  # bundled mapper
    python experiments/student_vs_openface_edits.py --faces 8 --mapper cal.pt  # a calibrated one

Prints a table and writes ``experiments/results/student_vs_openface_edits_<device>.json``.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapper", default=None, help="mapper file (default: the bundled one)")
    add_face_set_arguments(ap)
    args = ap.parse_args(argv)

    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.student import load_student
    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.mapper import apply_mapper, load_default_mapper
    from stylerig_au.edit.spec import AU
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import batch_to_uint8
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import label_images

    device = args.device
    G = load_generator(device=device)
    mapper = load_default_mapper(G, args.mapper, device=device)
    openface = make_detector("openface").to(device)
    student = load_student(device=device)
    aus = mapper.aus
    of_cols = [list(openface.aus).index(a) for a in aus]
    st_cols = [student.aus.index(a) for a in aus]

    def read(ws: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(OpenFace [A], student [A]) intensities of the render of ws [1, num_ws, w_dim], in ``aus`` order."""
        with torch.no_grad():
            img = G.synthesis(ws).clamp(-1, 1)
            st = student(F.interpolate(img, size=256, mode="area"))[0, st_cols].cpu().numpy()
        return label_images(batch_to_uint8(img), openface)["aus"][0][of_cols], st

    ws_all = seed_ws(G, args.seed_start, args.faces, args.psi, device)
    change_of = np.full((args.faces, len(aus), len(aus)), np.nan)  # [face, edited AU, measured AU]
    change_st = np.full_like(change_of, np.nan)
    bar = tqdm(total=args.faces * (len(aus) + 1), desc="student vs OpenFace", unit="img")
    for f in range(args.faces):
        ws = ws_all[f:f + 1]
        base_of, base_st = read(ws)
        bar.update(1)
        for i, au in enumerate(aus):
            of, st = read(apply_mapper(mapper, ws, AU(au, args.amount), G.slots))
            change_of[f, i], change_st[f, i] = of - base_of, st - base_st
            bar.update(1)
    bar.close()

    per_au = {}
    print(f"{'AU':<5} {'OpenFace':>9} {'student':>8} {'ratio':>6} {'drift OF':>9} {'drift st':>9}")
    for i, au in enumerate(aus):
        of, st = change_of[:, i, i], change_st[:, i, i]
        other = [j for j in range(len(aus)) if j != i]
        row = {"openface": float(np.nanmean(of)), "student": float(np.nanmean(st)),
               "drift_openface": float(np.nanmean(np.abs(change_of[:, i, other]))),
               "drift_student": float(np.nanmean(np.abs(change_st[:, i, other])))}
        row["ratio"] = row["student"] / row["openface"] if abs(row["openface"]) > 1e-3 else None
        per_au[str(au)] = row
        ratio = f"{row['ratio']:6.2f}" if row["ratio"] is not None else "     -"
        print(f"AU{au:<3d} {row['openface']:+9.2f} {row['student']:+8.2f} {ratio} {row['drift_openface']:9.2f} {row['drift_student']:9.2f}")
    summary = {k: float(np.mean([r[k] for r in per_au.values()])) for k in ("openface", "student", "drift_openface", "drift_student")}
    print("mean  " + "  ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    out = args.out or REPO / "experiments" / "results" / f"student_vs_openface_edits_{'cuda' if device.startswith('cuda') else 'cpu'}.json"
    result = {"device": device_label(device), "torch": torch.__version__, "generator": G.name,
              **describe_mapper(mapper),
              "amount": args.amount, "psi": args.psi, "faces": args.faces, "held_out_seed_start": args.seed_start,
              "summary": summary, "per_au": per_au, "command": " ".join(["python", "experiments/" + Path(sys.argv[0]).name, *sys.argv[1:]])}
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
