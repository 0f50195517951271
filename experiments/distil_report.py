"""What a dataset of refined edits (``stylerig-au edited-samples DIR --refine-at 0 --refine-at 20 ...``)
teaches, and how near mappers come to it.

1. The teacher, read from the labels the dataset already holds (OpenFace on every image): for each stored
   step count (0 = the mapper's one-pass edit, K = refined for K steps), over the faces dlib found in both
   the face and its edit, the slope of OpenFace's change of the asked AU on the asked change (least
   squares through 0; 1 = the edits reach what is asked), the share of edits within ±0.5 of the ask, and
   the drift (mean |change| of the other AUs); the slope also over raised and over lowered AUs alone, and
   the mean |achieved − asked| over all edits and over raises of 1.5 or more.
2. How the refined Δw+ differs from the bundled mapper's (:func:`correction_summary`): whether the
   corrections share a direction across faces (what a mapper could learn from few faces) or not.
3. With ``--mappers``: how near each mapper's one-pass edit comes to the refined edits, as the distil
   terms measure it (:class:`stylerig_au.edit.distil.DistilTargets`): Δw+ distance in units of w's spread,
   and the image distance (LPIPS + MSE at the stored side) on up to ``--rows`` edits whose seeds are below
   ``--split`` (seen in training, when the mapper was trained on those) and from it on (held out).

    python experiments/distil_report.py DIR [--mappers A.pt B.pt] [--split SEED] [--out results/distil_report_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _slope(asked: np.ndarray, got: np.ndarray) -> float | None:
    """Least-squares slope through 0 of ``got`` on ``asked`` (None without asks)."""
    return float((asked * got).sum() / (asked ** 2).sum()) if len(asked) else None


def teacher_summary(data) -> dict:
    """Per stored step count: {"edits", "slope" (and "slope_raise" / "slope_lower" over raised / lowered AUs),
    "within_0.5", "drift"} from the dataset's OpenFace labels."""
    e = data.extra
    steps, delta, aus, found = e["refine_steps"].numpy(), e["delta"].numpy(), data.aus.numpy(), data.face_found.numpy()
    seeds = data.seeds.numpy()
    plain = {int(s): i for i, s in enumerate(seeds) if steps[i] < 0}
    out = {}
    for k in sorted({int(s) for s in steps if s >= 0}):
        asked, got, drift = [], [], []
        for i in np.nonzero(steps == k)[0]:
            base = plain[int(seeds[i])]
            if not (found[i] and found[base]):
                continue
            on = delta[i] != 0
            change = aus[i] - aus[base]
            asked.extend(delta[i][on])
            got.extend(change[on])
            drift.append(np.abs(change[~on]).mean())
        asked, got = np.array(asked), np.array(got)
        up = asked > 0
        out[str(k)] = {"edits": len(drift), "slope": _slope(asked, got), "slope_raise": _slope(asked[up], got[up]),
                       "slope_lower": _slope(asked[~up], got[~up]),
                       "error": float(np.abs(got - asked).mean()) if len(got) else None,
                       "error_big_raise": float(np.abs(got - asked)[asked >= 1.5].mean()) if (asked >= 1.5).any() else None,
                       "within_0.5": float((np.abs(got - asked) <= 0.5).mean()) if len(got) else None,
                       "drift": float(np.mean(drift)) if drift else None}
    return out


def correction_summary(targets, mapper) -> dict:
    """How the refined Δw+ differs from ``mapper``'s one-pass Δw+ (both in units of w's spread): RMS sizes,
    the mean cosine between each correction and the mapper's step, and per AU the mean pairwise cosine of
    the (sign-aligned) corrections of different faces: near 0 = each face's correction is its own."""
    import torch.nn.functional as F

    with torch.no_grad():
        step = mapper(targets.ws, targets.delta) / mapper.w_std
    corr = targets.dw / mapper.w_std - step
    flat_c, flat_s = corr.flatten(1), step.flatten(1)
    main_au = targets.delta.abs().argmax(1)
    per_au = {}
    for a in main_au.unique().tolist():
        idx = (main_au == a).nonzero().flatten()
        if len(idx) < 2:
            continue
        c = F.normalize(flat_c[idx] * torch.sign(targets.delta[idx, a])[:, None], dim=1)
        n = len(idx)
        per_au[str(targets.aus[a])] = {"edits": n, "mean_pairwise_cosine": float(((c @ c.T).sum() - n) / (n * n - n))}
    return {"step_rms": float(flat_s.pow(2).mean().sqrt()), "correction_rms": float(flat_c.pow(2).mean().sqrt()),
            "cosine_correction_step": float(F.cosine_similarity(flat_c, flat_s, dim=1).mean()), "per_au": per_au}


def mapper_distances(G, targets, mapper, lpips, split: int, rows: int) -> dict:
    """Δw+ and image distance of ``mapper`` to the refined edits, on seeds below / from ``split``."""
    out = {}
    for name, mask in (("seen", targets.seeds < split), ("held_out", targets.seeds >= split)):
        idx = mask.nonzero().flatten()[:rows]
        if not len(idx):
            continue
        with torch.no_grad():
            dw = float(targets.loss(mapper, idx, mapper.w_std))
            image = sum(float(targets.image_loss(mapper, G, lpips, idx[i:i + 4], mapper.w_std)) * len(idx[i:i + 4])
                        for i in range(0, len(idx), 4)) / len(idx)
        out[name] = {"rows": len(idx), "dw": dw, "image": image}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--mappers", nargs="*", default=[], help="mapper files to compare with the bundled one")
    ap.add_argument("--split", type=int, default=None, help="first held-out seed (default: no held-out rows)")
    ap.add_argument("--rows", type=int, default=32, help="at most this many edits per side of the split")
    ap.add_argument("--generator", default="mobilestylegan-ffhq-1024")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.distil import DistilTargets
    from stylerig_au.edit.mapper import load_default_mapper, load_mapper
    from stylerig_au.errors import StylerigError
    from stylerig_au.models import load_generator
    from stylerig_au.perceptual import load_lpips
    from stylerig_au.samples import load_samples

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        data = load_samples(args.dataset, with_images=True)
        G = load_generator(args.generator)
        bundled = load_default_mapper(G, None).eval()
        targets = DistilTargets(args.dataset, G, list(bundled.aus), data=data)
        mappers = {"bundled": bundled, **{m: load_mapper(m, G).eval() for m in args.mappers}}
    except StylerigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    teacher = teacher_summary(data)
    print(f"{'edit':<22} {'edits':>6} {'slope':>6} {'raise':>6} {'lower':>6} {'error':>6} {'≥1.5':>6} {'within':>7} {'drift':>6}")
    for k, s in teacher.items():
        name = "mapper (one pass)" if k == "0" else f"refined {k} steps"
        print(f"{name:<22} {s['edits']:>6} {s['slope']:6.2f} {s['slope_raise']:6.2f} {s['slope_lower']:6.2f} {s['error']:6.2f} {s['error_big_raise']:6.2f} {s['within_0.5']:7.0%} {s['drift']:6.2f}")
    corrections = correction_summary(targets, bundled)
    cosines = [v["mean_pairwise_cosine"] for v in corrections["per_au"].values()]
    print(f"refined minus one-pass Δw+: RMS {corrections['correction_rms']:.3f} (one-pass step {corrections['step_rms']:.3f}), "
          f"cosine with the step {corrections['cosine_correction_step']:+.3f}; between faces of one AU: mean pairwise cosine "
          f"{min(cosines):+.2f} to {max(cosines):+.2f} over {len(cosines)} AUs")
    split = args.split if args.split is not None else int(targets.seeds.max()) + 1
    lpips = load_lpips()
    distances = {}
    for name, m in mappers.items():
        distances[name] = d = mapper_distances(G, targets, m, lpips, split, args.rows)
        print(f"{name}: " + "; ".join(f"{side} ({v['rows']} edits) Δw+ {v['dw']:.4f}, image {v['image']:.4f}" for side, v in d.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"device": device_label("cpu"), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "dataset": str(args.dataset), "dataset_edits": data.meta.get("edits"), "faces": int(len(set(data.seeds.tolist()))),
                  "split": split, "teacher": teacher, "corrections": corrections, "distances": distances,
                  "mapper_commands": {n: m.meta.get("command") for n, m in mappers.items()},
                  "command": "python experiments/distil_report.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
