"""Compare two ``edit_ceiling.py`` result files on the faces and AUs they share.

Refinement runs differ in what they refine against (``--student``), where they start (``--mapper``)
or how many faces they ran. This script restricts both files to their common faces (seeds) and
edited AUs, summarises each as ``edit_ceiling.py`` does (OpenFace and the run's own student), and
gives the paired difference per face of the refined edits' OpenFace reading (mean ± standard error
over faces): achieved change on the edited AU, drift, identity.

    python experiments/compare_ceilings.py A.json B.json [--variant optimised]

Prints a table; with ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edit_ceiling import summarise  # experiments/ is on sys.path when a script runs from it


def per_face(result: dict, seed: str, variant: str, aus: list[int]) -> dict[str, float]:
    """Mean OpenFace achieved change, drift and identity of one face's edits of ``aus`` in one variant."""
    measured = result["measured"]
    rows = {a: i for i, a in enumerate(result["aus"])}
    ch = np.array(result["faces"][seed][variant]["openface"], dtype=float)
    ident = np.array(result["faces"][seed][variant]["identity"], dtype=float)
    achieved = [ch[rows[a], measured.index(a)] for a in aus]
    drift = [np.mean(np.abs(np.delete(ch[rows[a]], measured.index(a)))) for a in aus]
    return {"achieved": float(np.nanmean(achieved)), "drift": float(np.nanmean(drift)),
            "identity": float(np.nanmean([ident[rows[a]] for a in aus]))}


def compare(a: dict, b: dict, variant: str = "optimised") -> dict:
    """Summaries of ``a`` and ``b`` on their shared faces and AUs, and the paired per-face differences (b − a)."""
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
        fa, fb = per_face(a, s, variant, aus), per_face(b, s, variant, aus)
        for k in diffs:
            diffs[k].append(fb[k] - fa[k])
    n = len(seeds)
    out["paired_b_minus_a"] = {k: {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")}
                               for k, v in diffs.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--variant", default="optimised", help="the refined variant to compare (e.g. optimised_10)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        res = compare(json.loads(args.a.read_text()), json.loads(args.b.read_text()), args.variant)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
        args.out.write_text(json.dumps({**res, "a": str(args.a), "b": str(args.b),
                                        "command": " ".join(["python", "experiments/compare_ceilings.py", *sys.argv[1:]])}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
