"""Compare two runs of one edit experiment on the faces they share, face by face (B − A, paired).

Two ``eval_edits.py`` results: both edit the same seeds, so the difference between two methods is
best judged per face: for each face the mean over its expressed-AU edits is taken (off-target drift,
identity distance, |achieved − amount|), then the mean and the standard error of the per-face
differences are reported. A difference several standard errors from zero is not noise from the
choice of faces.

Two ``edit_ceiling.py`` results (refinement runs that differ in what they refine against, where they
start or how many faces they ran): both are restricted to their common faces and edited AUs,
summarised as ``edit_ceiling.py`` does (OpenFace and the run's own student), and the refined edits'
OpenFace reading is paired per face (achieved change on the edited AU, drift, identity).

    python experiments/compare_runs.py experiments/results/eval_edits_cpu_mapper.json new.json
    python experiments/compare_runs.py ceiling_a.json ceiling_b.json [--variant optimised_10]

The kind of run is read from the files. Prints a table; with ``--out FILE`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

METRICS = ("drift", "identity_distance", "abs_error")


def per_face_means(rows: list[dict], aus: set[int], value: Callable[[dict], float]) -> dict[int, float]:
    """{seed: mean of ``value(row)`` over that face's rows whose AU is in ``aus``}; non-finite values skipped.

    ``rows`` are eval_edits.py rows (``seed``, ``au``, ``achieved``, ``drift``, ``identity_distance``).
    """
    values: dict[int, list[float]] = {}
    for row in rows:
        v = value(row)
        if row["au"] in aus and np.isfinite(v):
            values.setdefault(int(row["seed"]), []).append(float(v))
    return {seed: float(np.mean(v)) for seed, v in values.items()}


def metric_of(metric: str, amount: float) -> Callable[[dict], float]:
    """A row's value for ``metric``: ``abs_error`` is |achieved − amount|, the others are read as they are."""
    if metric == "abs_error":
        return lambda row: abs(row["achieved"] - amount)
    return lambda row: row[metric]


def compare_edit_evals(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """Two ``eval_edits.py`` results, per metric: means of A and B over the faces both measured, B − A and its paired standard error.

    Raises ValueError when the two results share fewer than 2 faces or edit by different amounts.
    """
    if float(a.get("amount", 2.0)) != float(b.get("amount", 2.0)):
        raise ValueError(f"the two results edit by different amounts ({a.get('amount')} vs {b.get('amount')})")
    amount = float(a.get("amount", 2.0))
    table = {}
    for metric in METRICS:
        pa, pb = (per_face_means(r["rows"], set(r["summary"]["expressed_aus"]), metric_of(metric, amount)) for r in (a, b))
        seeds = sorted(set(pa) & set(pb))
        if len(seeds) < 2:
            raise ValueError("the two results share fewer than 2 measured faces: were they run on the same seeds?")
        diff = np.array([pb[s] - pa[s] for s in seeds])
        table[metric] = {"a": float(np.mean([pa[s] for s in seeds])), "b": float(np.mean([pb[s] for s in seeds])),
                         "b_minus_a": float(diff.mean()), "paired_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
                         "faces": len(seeds)}
    return table


def ceiling_per_face(result: dict, seed: str, variant: str, aus: list[int]) -> dict[str, float]:
    """Mean OpenFace achieved change, drift and identity of one face's edits of ``aus`` in one variant."""
    measured = result["measured"]
    rows = {a: i for i, a in enumerate(result["aus"])}
    ch = np.array(result["faces"][seed][variant]["openface"], dtype=float)
    ident = np.array(result["faces"][seed][variant]["identity"], dtype=float)
    achieved = [ch[rows[a], measured.index(a)] for a in aus]
    drift = [np.mean(np.abs(np.delete(ch[rows[a]], measured.index(a)))) for a in aus]
    return {"achieved": float(np.nanmean(achieved)), "drift": float(np.nanmean(drift)),
            "identity": float(np.nanmean([ident[rows[a]] for a in aus]))}


def compare_ceilings(a: dict, b: dict, variant: str = "optimised") -> dict:
    """Two ``edit_ceiling.py`` results: summaries on their shared faces and AUs, and the paired per-face
    differences (b − a) of the ``variant`` edits' OpenFace reading."""
    from edit_ceiling import summarise  # experiments/ is on sys.path when a script runs from it

    if a["measured"] != b["measured"] or a["amount"] != b["amount"]:
        raise ValueError("the two runs measured different AUs or asked different amounts")
    seeds = [s for s in a["faces"] if s in b["faces"]]
    aus = [x for x in a["aus"] if x in b["aus"]]
    if not seeds or not aus:
        raise ValueError("the two runs share no face or no edited AU")
    out: dict = {"seeds": [int(s) for s in seeds], "aus": aus, "runs": {}}
    for name, r in (("a", a), ("b", b)):
        idx = [r["aus"].index(x) for x in aus]
        out["runs"][name] = {"student": r.get("student", "bundled student-au-detector"), "mapper": r.get("mapper_created", ""),
                             **{v: {reader: summarise(np.array([[r["faces"][s][v][reader][i] for i in idx] for s in seeds], dtype=float),
                                                      np.array([[r["faces"][s][v]["identity"][i] for i in idx] for s in seeds], dtype=float),
                                                      aus, r["measured"], r["amount"])
                                    for reader in ("openface", "student")} for v in ("mapper", variant)}}
    diffs = {k: [] for k in ("achieved", "drift", "identity")}
    for s in seeds:
        fa, fb = ceiling_per_face(a, s, variant, aus), ceiling_per_face(b, s, variant, aus)
        for k in diffs:
            diffs[k].append(fb[k] - fa[k])
    n = len(seeds)
    out["paired_b_minus_a"] = {k: {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")}
                               for k, v in diffs.items()}
    return out


def is_ceiling_run(result: dict) -> bool:
    """True for an ``edit_ceiling.py`` result (faces -> variants), False for an ``eval_edits.py`` one (rows)."""
    return "faces" in result and "rows" not in result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="eval_edits.py or edit_ceiling.py JSON (the reference)")
    ap.add_argument("b", type=Path, help="a JSON of the same script (the candidate)")
    ap.add_argument("--variant", default="optimised", help="edit_ceiling runs: the refined variant to compare (e.g. optimised_10)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    try:
        a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
        if is_ceiling_run(a) != is_ceiling_run(b):
            raise ValueError("one file is an edit_ceiling.py result and the other an eval_edits.py one")
        if is_ceiling_run(a):
            return _print_ceilings(args, compare_ceilings(a, b, args.variant))
        table = compare_edit_evals(a, b)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as exc:
        print(f"error: not two eval_edits.py or edit_ceiling.py results (missing or malformed field {exc}); "
              "compare the JSON files those scripts write", file=sys.stderr)
        return 1
    print(f"A = {args.a}\nB = {args.b}")
    print(f"{'metric':>18} {'A':>7} {'B':>7} {'B - A':>8} {'± SE':>7} faces")
    for metric, r in table.items():
        print(f"{metric:>18} {r['a']:7.3f} {r['b']:7.3f} {r['b_minus_a']:+8.3f} {r['paired_se']:7.3f} {r['faces']:5d}")
    if args.out:
        from stylerig_au.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps({"a": str(args.a), "b": str(args.b), "metrics": table}, indent=1) + "\n")
    return 0


def _print_ceilings(args, res: dict) -> int:
    """Print (and with ``--out`` write) a :func:`compare_ceilings` result; returns 0."""
    print(f"{len(res['seeds'])} faces ({res['seeds'][0]}...), {len(res['aus'])} AUs")
    print(f"{'run':<4} {'variant':<11} {'reader':<9} {'achieved':>8} {'error':>6} {'±0.5':>6} {'drift':>6} {'identity':>9}")
    for name in ("a", "b"):
        for v in ("mapper", args.variant):
            for reader in ("openface", "student"):
                s = res["runs"][name][v][reader]
                print(f"{name:<4} {v:<11} {reader:<9} {s['mean_achieved']:8.2f} {s['mean_abs_error']:6.2f} "
                      f"{s['within_0.5']:>3d}/{len(res['aus'])} {s['mean_drift']:6.2f} {s['mean_identity']:9.2f}")
    for k, d in res["paired_b_minus_a"].items():
        print(f"b - a, {args.variant}, OpenFace {k}: {d['mean']:+.3f} ± {d['se']:.3f} per face")
    if args.out:
        from stylerig_au.fileio import atomic_write_text

        command = " ".join(["python", "experiments/compare_runs.py", *sys.argv[1:]])
        atomic_write_text(args.out, json.dumps({**res, "a": str(args.a), "b": str(args.b), "command": command}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
