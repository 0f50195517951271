"""Does a student detector read *edited* faces, and the changes edits make, as OpenFace does?

The edits the student supervises leave the plain-sample distribution it was distilled on; where it
misreads them, an optimisation against it (the mapper's training, ``edit --refine``) can satisfy it
without moving OpenFace. This script scores one or more students against OpenFace on

* ``plain``: a plain AU sample dataset (``--plain``; e.g. seeds 5440-6399, the bundled student's
  held-out faces): per-image agreement (mean r over the varying AUs, MAE), as ``eval_detector.py``;
* ``edited``: the held-out seeds of an edited-sample dataset (``--edited``, made by
  ``train-detector --edited DIR --build-edited N``; the last ``--holdout`` of its seeds, the split
  ``train-detector`` holds out), per-image agreement on the edited images;
* ``change``: per edited pair, the change (edit − face) each reader sees. On the AUs the edit asked
  for: r and MAE of the student's change against OpenFace's, and the ratio of their mean changes
  in the asked-for direction (1 = the student sees edits as big as OpenFace does; above 1, it
  sees more than OpenFace, which an optimisation against it can exploit). On the other AUs
  (drift): MAE of the student's change against OpenFace's.

    python experiments/eval_student_edits.py --plain DIR --edited DIR2 --student bundled new.pt

Prints a table and writes ``experiments/results/eval_student_edits_cpu.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def change_agreement(student_change: np.ndarray, openface_change: np.ndarray, delta: np.ndarray) -> dict:
    """Student vs OpenFace reading of the changes of edited pairs.

    Args:
        student_change, openface_change: float [P, A] change (edit − face) per pair and AU.
        delta: float [P, A] the edit's request (non-zero on the asked-for AUs).
    Returns:
        ``asked``: {n, r, mae, ratio} over the (pair, asked AU) entries, with the changes signed so
        that the asked direction is positive; ``other``: {n, mae} over the other AUs.
    """
    asked = delta != 0
    sign = np.sign(delta[asked])
    s, o = student_change[asked] * sign, openface_change[asked] * sign
    r = float(np.corrcoef(s, o)[0, 1]) if len(s) > 1 and s.std() > 0 and o.std() > 0 else float("nan")
    so, oo = student_change[~asked], openface_change[~asked]
    return {"asked": {"n": int(asked.sum()), "r": r, "mae": float(np.abs(s - o).mean()),
                      "student_mean": float(s.mean()), "openface_mean": float(o.mean()),
                      "ratio": float(s.mean() / o.mean()) if o.mean() > 0 else float("nan")},
            "other": {"n": int((~asked).sum()), "mae": float(np.abs(so - oo).mean())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", type=Path, required=True, help="plain AU sample dataset to score on (all of it)")
    ap.add_argument("--edited", type=Path, required=True, help="edited-sample dataset (its held-out seeds are scored)")
    ap.add_argument("--holdout", type=float, default=0.15, help="held-out fraction of the edited dataset's seeds (as in train-detector)")
    ap.add_argument("--student", nargs="+", default=["bundled"], help="student files ('bundled': the bundled one)")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "eval_student_edits_cpu.json")
    args = ap.parse_args(argv)

    from stylerig_au.au.student import load_student
    from stylerig_au.diagnostics import device_label
    from stylerig_au.au.student_train import agreement, predict_uint8, split_by_seed
    from stylerig_au.errors import StylerigError
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.samples import load_samples

    try:
        plain = load_samples(args.plain, with_images=True).valid()
        edited_all = load_samples(args.edited, with_images=True)
        if "edited" not in edited_all.extra:
            raise StylerigError(f"{args.edited}: not an edited-sample dataset (make one with train-detector --edited DIR --build-edited N)")
        students = {name: load_student(None if name == "bundled" else name) for name in args.student}
    except StylerigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    aus = list(plain.meta["aus"])
    _, held = split_by_seed(edited_all.seeds, args.holdout)
    # pairs: each held-out edit (a seed may have several, e.g. after 5, 10 and 20 refinement steps)
    # with its seed's plain face, both faces found
    ok = held & edited_all.face_found
    is_edit = edited_all.extra["edited"]
    plain_row = {int(edited_all.seeds[r]): int(r) for r in torch.nonzero(ok & ~is_edit).flatten()}
    edit_rows_list = [int(r) for r in torch.nonzero(ok & is_edit).flatten() if int(edited_all.seeds[r]) in plain_row]
    edit_rows = torch.tensor(edit_rows_list, dtype=torch.long)
    face_rows = torch.tensor([plain_row[int(edited_all.seeds[r])] for r in edit_rows_list], dtype=torch.long)
    pair_seeds = sorted({int(edited_all.seeds[r]) for r in edit_rows_list})
    of = edited_all.aus.numpy()
    delta = edited_all.extra["delta"][edit_rows].numpy()
    openface_change = of[edit_rows] - of[face_rows]

    result = {"device": device_label("cpu"), "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "plain": str(args.plain), "plain_faces": len(plain), "edited": str(args.edited),
              "edited_meta": edited_all.meta.get("edits"), "held_out_pairs": len(edit_rows_list), "held_out_faces": len(pair_seeds),
              "held_out_seeds": [pair_seeds[0], pair_seeds[-1]] if pair_seeds else [], "students": {}}
    print(f"{'student':<40} {'plain r':>8} {'MAE':>6} {'edited r':>9} {'MAE':>6} {'asked r':>8} {'MAE':>6} {'ratio':>6} {'other MAE':>10}")
    for name, student in students.items():
        net = student.net.eval()
        p_plain = predict_uint8(net, plain.images)
        p_edit = predict_uint8(net, edited_all.images[edit_rows])
        p_face = predict_uint8(net, edited_all.images[face_rows])
        res = {"plain": agreement(p_plain, plain.aus.numpy(), aus),
               "edited": agreement(p_edit, of[edit_rows], aus),
               "change": change_agreement(p_edit - p_face, openface_change, delta)}
        if "refine_steps" in edited_all.extra:  # the change read after each number of refinement steps
            steps = edited_all.extra["refine_steps"][edit_rows].numpy()
            res["change_by_refine_steps"] = {int(k): change_agreement((p_edit - p_face)[steps == k], openface_change[steps == k], delta[steps == k])
                                             for k in np.unique(steps)}
        result["students"][name] = res
        c = res["change"]
        print(f"{name[-40:]:<40} {res['plain']['mean_r']:8.3f} {res['plain']['mean_mae']:6.3f} {res['edited']['mean_r']:9.3f} "
              f"{res['edited']['mean_mae']:6.3f} {c['asked']['r']:8.3f} {c['asked']['mae']:6.3f} {c['asked']['ratio']:6.2f} {c['other']['mae']:10.3f}")
        for k, ck in res.get("change_by_refine_steps", {}).items():
            print(f"{'  after ' + str(k) + ' refinement steps':<40} {'':>8} {'':>6} {'':>9} {'':>6} {ck['asked']['r']:8.3f} "
                  f"{ck['asked']['mae']:6.3f} {ck['asked']['ratio']:6.2f} {ck['other']['mae']:10.3f}")
    result["command"] = " ".join(["python", "experiments/" + Path(sys.argv[0]).name, *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
