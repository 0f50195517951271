"""Which AUs can the generator express at +2? Measured on its own samples, read by OpenFace.

Issue 7's reach target is for "the AUs that the generator can express". This script turns that
phrase into a measurement that does not depend on any edit method:

1. it samples N generator faces (seeds 7,000,000+, used by nothing else; truncation ``--psi``,
   default 1.0, the generator's full range) and reads them with the OpenFace estimator
   (an AU sample dataset, :func:`stylerig_au.samples.build_samples`: resumable, chunked);
2. it renders the held-out faces of ``eval_edits.py`` (seeds 2,000,000+, psi 0.8) and reads them too;
3. for each held-out face and AU it takes the fraction of the samples that read at least
   ``--amount`` above that face's own reading, and averages it over the faces.

An AU counts as *expressible at +amount* when that fraction is at least ``--min-fraction``
(default 0.01): the generator itself makes such faces, at least one sample in a hundred. The PNG
shows, per AU, the held-out faces' median-reading sample and the samples that read highest, so
one can see whether the readings are that AU or OpenFace being fooled.

It also estimates the *natural drift* of each AU: across the same samples, the least-squares slope
of every other AU on this one (how much the other AUs move with +1 of it in the generator's own
faces, OpenFace's cross-talk between AUs included), as the mean |slope| of the 16 others times
``--amount``: the drift a +amount change "as the generator's faces do it" would show, to set
beside ``eval_edits.py``'s drift (target ≤ 0.3). A rough yardstick: OpenFace's noise in the AU
itself flattens the slopes, and what goes with an AU across faces (age, sex, pose) is not what one
face's expression change must move.

With ``--edits FILE ...`` it re-scores ``eval_edits.py`` and ``edit_ceiling.py`` results (OpenFace's
reading; for the latter both the mapper's and the refined edits) on the expressible AUs only: the
issue's reach, drift and identity targets.

    python experiments/expressible_aus.py --data DIR --num 1600 --workers 2
    python experiments/expressible_aus.py --data DIR --edits experiments/results/eval_edits_cpu_mapper.json

Writes ``experiments/results/expressible_aus_<device>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from eval_edits import HELD_OUT_SEED_START  # experiments/ is on sys.path when a script runs from it

REPO = Path(__file__).resolve().parent.parent
SAMPLE_SEED_START = 7_000_000
TOP_FACES = 4


def reach_fractions(sample_aus: np.ndarray, base_aus: np.ndarray, amount: float) -> np.ndarray:
    """Fraction of samples reading at least ``amount`` above each held-out face, per AU.

    Args:
        sample_aus: float [n, A] OpenFace intensities of the generator samples (faces found only).
        base_aus: float [f, A] intensities of the held-out faces.
        amount: the edit size (AU units).
    Returns:
        float [f, A] in [0, 1].
    """
    targets = base_aus[:, None, :] + amount  # [f, 1, A]
    return (sample_aus[None, :, :] >= targets).mean(axis=1)


def natural_coupling(sample_aus: np.ndarray) -> np.ndarray:
    """How the other AUs move with each AU across the generator's own faces.

    Args:
        sample_aus: float [n, A] intensities of the samples.
    Returns:
        float [A, A]: entry [k, j] is the least-squares slope of AU j on AU k (with an intercept),
        the change of AU j that comes with +1 of AU k in these faces; the diagonal is 1.
    """
    centred = sample_aus - sample_aus.mean(axis=0)
    var = (centred ** 2).mean(axis=0)
    cov = centred.T @ centred / len(sample_aus)
    return cov / np.maximum(var, 1e-12)[:, None]


def edit_tables(result: dict) -> dict[str, dict[int, dict]]:
    """The per-AU OpenFace readings of a result file, by stage.

    An ``eval_edits.py`` result gives one stage, ``"edit"``; an ``edit_ceiling.py`` result gives
    ``"mapper"`` and ``"optimised"`` (the refined edits). Each stage maps AU -> ``achieved``,
    ``drift`` and ``identity`` (means over faces). Raises ValueError for any other file.
    """
    if "per_au" in result and "amount" in result:
        return {"edit": {int(a): {"achieved": p["achieved_mean"], "drift": p["drift_mean"], "identity": p["identity_mean"]}
                         for a, p in result["per_au"].items()}}
    summary = result.get("summary") or {}
    if "amount" in result and summary and all("openface" in stage for stage in summary.values()):
        return {name: {int(a): dict(p) for a, p in stage["openface"]["per_au"].items()} for name, stage in summary.items()}
    raise ValueError("neither an eval_edits.py nor an edit_ceiling.py result")


def score_edits(per_au: dict[int, dict], amount: float, aus: list[int]) -> dict:
    """Reach, drift and identity of one stage of :func:`edit_tables`, restricted to the AUs ``aus``.

    Returns mean |achieved − amount| over those AUs (each AU's mean over faces), how many land
    within ±0.5 (and which miss), and the mean drift and identity distance over those AUs.
    """
    kept = [a for a in aus if a in per_au]
    if not kept:
        return {"aus": [], "count": 0}
    achieved = np.array([per_au[a]["achieved"] for a in kept])
    return {"aus": kept, "count": len(kept),
            "mean_abs_error": float(np.abs(achieved - amount).mean()),
            "within_0.5": int((np.abs(achieved - amount) <= 0.5).sum()),
            "missed": [a for a, v in zip(kept, achieved) if abs(v - amount) > 0.5],
            "mean_drift": float(np.mean([per_au[a]["drift"] for a in kept])),
            "mean_identity": float(np.mean([per_au[a]["identity"] for a in kept]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="AU sample dataset folder (made or resumed here)")
    ap.add_argument("--num", type=int, default=1600, help="generator samples (default 1600)")
    ap.add_argument("--psi", type=float, default=1.0, help="truncation of the samples (default 1.0: none)")
    ap.add_argument("--seed-start", type=int, default=SAMPLE_SEED_START)
    ap.add_argument("--workers", type=int, default=1, help="processes making samples (one per core)")
    ap.add_argument("--faces", type=int, default=8, help="held-out faces of eval_edits.py (default 8)")
    ap.add_argument("--faces-seed-start", type=int, default=HELD_OUT_SEED_START)
    ap.add_argument("--faces-psi", type=float, default=0.8)
    ap.add_argument("--amount", type=float, default=2.0)
    ap.add_argument("--min-fraction", type=float, default=0.01,
                    help="an AU is expressible when at least this fraction of samples reads +amount above a held-out face (default 0.01)")
    ap.add_argument("--edits", type=Path, nargs="*", default=[],
                    help="eval_edits.py or edit_ceiling.py result files to re-score on the expressible AUs (OpenFace's reading)")
    ap.add_argument("--generator", default="mobilestylegan-ffhq-1024")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "expressible_aus_cpu.json")
    args = ap.parse_args(argv)

    from stylerig_au.au.detect import make_detector
    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.media import labelled_grid
    from stylerig_au.errors import StylerigError
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import batch_to_uint8, save_image
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.samples import build_samples, label_images, load_samples

    edit_results = []
    for path in args.edits:
        try:
            result = json.loads(path.read_text())
            edit_results.append((path, float(result["amount"]), edit_tables(result)))
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"error: {path}: cannot use it ({type(err).__name__}: {err}); give eval_edits.py or edit_ceiling.py "
                  "result files", file=sys.stderr)
            return 2
    G = load_generator(args.generator)
    detector = make_detector("openface")
    try:
        build_samples(G, args.data, args.num, detector=detector, psi=args.psi, seed_start=args.seed_start,
                      workers=args.workers, log=print)
        samples = load_samples(args.data, with_images=True, limit=args.num)
    except StylerigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    found = samples.face_found.numpy()
    sample_aus = samples.aus.numpy()[found]
    images = samples.images[torch.from_numpy(found)]
    seeds = samples.seeds.numpy()[found]
    aus = list(detector.aus)

    with torch.no_grad():
        ws = seed_ws(G, args.faces_seed_start, args.faces, args.faces_psi)
        base_u8 = np.concatenate([batch_to_uint8(G.synthesis(ws[i:i + 1]).clamp(-1, 1)) for i in range(args.faces)])
    base_aus = label_images(base_u8, detector)["aus"]
    base_aus = base_aus[np.isfinite(base_aus).all(axis=1)]
    if not len(base_aus):
        print("error: dlib found no face in the held-out faces", file=sys.stderr)
        return 1

    frac = reach_fractions(sample_aus, base_aus, args.amount)
    slopes = natural_coupling(sample_aus)
    per_au, expressible, grid_rows, labels = {}, [], [], []
    print(f"{len(sample_aus)} samples (psi {args.psi}), {len(base_aus)} held-out faces; +{args.amount:g} expressible when "
          f"≥ {args.min_fraction:.1%} of samples read that far above a face")
    print("(reach: mean over the held-out faces of the fraction of samples at least +amount above the face; "
          "fewest: the face with the smallest fraction; nat. drift: see the docstring)")
    print(f"{'AU':<5} {'faces':>6} {'median':>7} {'p90':>6} {'p99':>6} {'max':>6} {'reach +2':>9} {'fewest':>7} "
          f"{'nat. drift':>10}  expressible")
    for k, au in enumerate(aus):
        col = sample_aus[:, k]
        q50, q90, q99 = np.quantile(col, [0.5, 0.9, 0.99])
        mean_frac = float(frac[:, k].mean())
        ok = mean_frac >= args.min_fraction
        if ok:
            expressible.append(au)
        others = np.delete(slopes[k], k)
        natural_drift = float(np.abs(others).mean() * args.amount)
        order = np.argsort(-col)
        median_pick = int(np.argmin(np.abs(col - np.median(base_aus[:, k]))))
        per_au[str(au)] = {"held_out_mean": float(base_aus[:, k].mean()), "sample_median": float(q50),
                           "sample_p90": float(q90), "sample_p99": float(q99), "sample_max": float(col.max()),
                           "fraction_reaching": mean_frac, "fraction_reaching_min_face": float(frac[:, k].min()),
                           "fraction_reaching_max_face": float(frac[:, k].max()),
                           "fraction_reaching_se": float(np.sqrt(mean_frac * (1 - mean_frac) / len(col))), "expressible": ok,
                           "natural_drift": natural_drift,
                           "natural_coupling": {str(a): round(float(slopes[k, j]), 4) for j, a in enumerate(aus) if j != k},
                           "top_seeds": [int(seeds[i]) for i in order[:TOP_FACES]],
                           "top_readings": [round(float(col[i]), 3) for i in order[:TOP_FACES]]}
        print(f"AU{au:<3d} {base_aus[:, k].mean():6.2f} {q50:7.2f} {q90:6.2f} {q99:6.2f} {col.max():6.2f} "
              f"{mean_frac:9.1%} {frac[:, k].min():7.1%} {natural_drift:10.2f}  {'yes' if ok else 'no'}")
        grid_rows.append([images[median_pick].permute(1, 2, 0).numpy()] + [images[i].permute(1, 2, 0).numpy() for i in order[:TOP_FACES]])
        labels.append(f"AU{au}\n{mean_frac:.1%} reach")

    rescored = {}
    if edit_results:
        print(f"\neval_edits results on all {len(aus)} AUs and on the {len(expressible)} expressible ones:")
        print(f"{'file':<58} {'error':>11} {'within ±0.5':>12} {'drift':>11} {'identity':>11}")
    for path, amount, tables in edit_results:
        for stage, table in tables.items():
            name = path.name if stage == "edit" else f"{path.name} [{stage}]"
            every, sub = score_edits(table, amount, aus), score_edits(table, amount, expressible)
            rescored[name] = {"all": every, "expressible": sub}
            if not sub["count"]:
                print(f"{name:<58} (none of its AUs is expressible)")
                continue
            print(f"{name:<58} {every['mean_abs_error']:5.2f}/{sub['mean_abs_error']:<5.2f} "
                  f"{every['within_0.5']:5d}/{sub['within_0.5']:<2d}/{sub['count']:<3d} {every['mean_drift']:5.2f}/{sub['mean_drift']:<5.2f} "
                  f"{every['mean_identity']:5.2f}/{sub['mean_identity']:<5.2f}")

    png = args.out.with_suffix(".png")
    save_image(png, labelled_grid(grid_rows, labels, ["median face"] + [f"highest {i + 1}" for i in range(TOP_FACES)], cell=160))
    report = {"device": device_label("cpu"), "torch": torch.__version__, "generator": G.name, "detector": "openface",
              "samples": int(len(sample_aus)), "samples_without_face": int((~found).sum()), "psi": args.psi,
              "sample_seed_start": args.seed_start, "data": str(args.data),
              "held_out_faces": int(len(base_aus)), "held_out_seed_start": args.faces_seed_start, "held_out_psi": args.faces_psi,
              "amount": args.amount, "min_fraction": args.min_fraction, "expressible_aus": expressible,
              "not_expressible_aus": [a for a in aus if a not in expressible],
              "expressible_at_other_fractions": {str(t): [a for k, a in enumerate(aus) if frac[:, k].mean() >= t]
                                                 for t in (0.005, 0.02)},
              "per_au": per_au,
              "natural_drift_mean": float(np.mean([p["natural_drift"] for p in per_au.values()])),
              "natural_drift_mean_expressible": (float(np.mean([per_au[str(a)]["natural_drift"] for a in expressible]))
                                                 if expressible else None),
              "rescored_edits": rescored, "grid": png.name, "command": "python experiments/expressible_aus.py " + " ".join(sys.argv[1:])}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"\nexpressible at +{args.amount:g}: {', '.join(f'AU{a}' for a in expressible) or 'none'}; "
          f"not: {', '.join(f'AU{a}' for a in aus if a not in expressible) or 'none'}")
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
