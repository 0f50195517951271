"""Compare two ``eval_edits.py`` results on the same held-out faces, face by face.

Both runs edit the same seeds, so the difference between two methods is best judged per face: for
each face the mean over its expressed-AU edits is taken (off-target drift, identity distance,
|achieved − amount|), then the mean and the standard error of the per-face differences (B − A) are
reported. A difference several standard errors from zero is not noise from the choice of faces.

    python experiments/compare_edit_evals.py experiments/results/eval_edits_cpu_mapper.json new.json

Prints a table; with ``--out FILE`` also writes it as JSON.
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


def compare(a: dict, b: dict) -> dict[str, dict[str, float]]:
    """Per metric: means of A and B over the faces both measured, B − A and its paired standard error.

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="eval_edits.py JSON (the reference)")
    ap.add_argument("b", type=Path, help="eval_edits.py JSON (the candidate)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    try:
        a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
        table = compare(a, b)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as exc:
        print(f"error: not two eval_edits.py results (missing or malformed field {exc}); "
              "compare the JSON files that experiments/eval_edits.py writes", file=sys.stderr)
        return 1
    print(f"A = {args.a}\nB = {args.b}")
    print(f"{'metric':>18} {'A':>7} {'B':>7} {'B - A':>8} {'± SE':>7} faces")
    for metric, r in table.items():
        print(f"{metric:>18} {r['a']:7.3f} {r['b']:7.3f} {r['b_minus_a']:+8.3f} {r['paired_se']:7.3f} {r['faces']:5d}")
    if args.out:
        from stylerig_au.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps({"a": str(args.a), "b": str(args.b), "metrics": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
