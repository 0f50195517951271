"""Compare our OpenFace 2.2 AU estimator with pyfaceau (same dlib landmarks) on real photos.

Photos: the shared development faces (celebahq-dev, unaligned) and skimage's astronaut. Writes
per-AU mean / max absolute error, per-photo intensities of both, and feature-level differences
to ``experiments/results/openface_vs_pyfaceau.json``.

    python experiments/eval_openface_oracle.py [--faces DIR] [--raw AU_PREDICTORS_DIR]

Needs the dev-only oracle dependencies (see ``stylerig_au.au.oracle``) and the OpenFace licence.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stylerig_au.fileio import atomic_write_text
from stylerig_au.au import openface_model
from stylerig_au.au.landmarks import landmarks_68
from stylerig_au.au.openface import OpenFaceAU
from stylerig_au.au.oracle import PyFaceAUOracle
from stylerig_au.imageio import list_images, load_image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces"))
DEFAULT_RAW = REPO.parent / "shared" / "pretrained" / "openface-2.2" / "AU_predictors"


def photos(faces: Path) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = [("skimage:astronaut", data.astronaut())]
    for sub in ("celebahq-dev", "unaligned"):
        out += [(f"{sub}/{p.name}", load_image(p)) for p in list_images([faces / sub])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder with celebahq-dev/ and unaligned/")
    ap.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="OpenFace AU_predictors folder (for pyfaceau)")
    ap.add_argument("--model", type=Path, default=None, help="converted openface-2.2-au .pt (default: registry)")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "openface_vs_pyfaceau.json")
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ours = OpenFaceAU(openface_model.load(args.model))
    oracle = PyFaceAUOracle(args.raw)
    assert ours.aus == oracle.aus
    rows, a_all, b_all, hog_err = [], [], [], []
    for name, image in photos(args.faces):
        lm = landmarks_68(image)
        if lm is None:
            rows.append({"photo": name, "face": False})
            continue
        a = ours.predict_photos([image], [lm])[0].astype(np.float64)
        xo, _ = oracle.features(image, lm)
        b = oracle.predict(image, lm)
        with torch.no_grad():
            xs = ours.features([torch.from_numpy(np.array(image)).permute(2, 0, 1).float()], torch.from_numpy(lm)[None])[0].double().numpy()
        hog_err.append(float(np.abs(xs[:4464] - xo[:4464]).mean()))
        a_all.append(a)
        b_all.append(b)
        rows.append({
            "photo": name,
            "face": True,
            "ours": dict(zip(map(str, ours.aus), np.round(a, 4).tolist())),
            "pyfaceau": dict(zip(map(str, ours.aus), np.round(b, 4).tolist())),
            "hog_mean_abs_diff": hog_err[-1],
            "hog_max_abs_diff": float(np.abs(xs[:4464] - xo[:4464]).max()),
            "geom_max_abs_diff": float(np.abs(xs[4464:] - xo[4464:]).max()),
        })
    a_all, b_all = np.array(a_all), np.array(b_all)
    err = np.abs(a_all - b_all)
    result = {
        "what": "OpenFace 2.2 static AU intensities: stylerig_au (torch) vs pyfaceau 1.4.1 (numpy/OpenCV/dlib FHOG), same dlib 68 landmarks",
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cpus), torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "faces": int(len(a_all)),
        "photos": len(rows),
        "mae_per_au": {f"AU{au:02d}": round(float(e), 4) for au, e in zip(ours.aus, err.mean(0))},
        "max_abs_err_per_au": {f"AU{au:02d}": round(float(e), 4) for au, e in zip(ours.aus, err.max(0))},
        "mae_all": round(float(err.mean()), 4),
        "worst_au_mae": round(float(err.mean(0).max()), 4),
        "threshold": 0.15,
        "passes": bool(err.mean(0).max() <= 0.15),
        "per_photo": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"{'AU':>5} {'MAE':>7} {'max':>7}")
    for au, m, x in zip(ours.aus, err.mean(0), err.max(0)):
        print(f"AU{au:02d} {m:7.4f} {x:7.4f}")
    print(f"faces {len(a_all)}; worst per-AU MAE {err.mean(0).max():.4f}; mean HOG |diff| {np.mean(hog_err):.5f} -> {args.out}")


if __name__ == "__main__":
    main()
