"""Speed of our OpenFace 2.2 AU estimator: faces/s with given landmarks, and with dlib landmarks included.

Uses the real development photos (celebahq-dev, unaligned, astronaut), repeated to fill batches.
Prints a table and writes ``experiments/results/bench_openface.json``.

    python experiments/bench_openface.py [--threads 1 2] [--batch 1 16 64] [--device cpu]
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
from stylerig_au.au.fhog import fhog
from stylerig_au.au.landmarks import landmarks_68
from stylerig_au.au.openface import OpenFaceAU
from stylerig_au.au.pdm import geometry_features
from stylerig_au.imageio import list_images, load_image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces"))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--model", type=Path, default=None, help="converted openface-2.2-au .pt (default: registry)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "bench_openface.json")
    args = ap.parse_args()

    from skimage import data

    photos = [data.astronaut()] + [load_image(p) for p in list_images([args.faces / "celebahq-dev", args.faces / "unaligned"])]
    est = OpenFaceAU(openface_model.load(args.model)).to(args.device)
    rows = []

    # landmarks included: dlib detection (upsample 0 and 1) + 68-point shape, one photo at a time
    landmarks_68(photos[0])  # load the dlib models
    lm_times = {}
    for upsample, max_side in ((1, None), (0, None), (1, 384)):
        t = time.perf_counter()
        found = [landmarks_68(p, upsample=upsample, detect_max_side=max_side) for p in photos]
        lm_times[(upsample, max_side)] = (time.perf_counter() - t) / len(photos)
        rows.append({"what": f"dlib landmarks (upsample {upsample}, detect_max_side {max_side}), per photo",
                     "ms_per_face": round(1000 * lm_times[(upsample, max_side)], 1), "faces_found": sum(f is not None for f in found),
                     "photo_sizes": sorted({f"{p.shape[1]}x{p.shape[0]}" for p in photos})})
        if (upsample, max_side) == (1, None):
            marks = found  # the default settings (what `stylerig-au detect` uses)
    keep = [k for k, m in enumerate(marks) if m is not None]
    photos = [photos[k] for k in keep]
    marks = [marks[k] for k in keep]

    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            idx = [k % len(photos) for k in range(batch)]
            imgs = [torch.from_numpy(np.array(photos[k])).permute(2, 0, 1).to(args.device) for k in idx]
            lms = torch.from_numpy(np.stack([marks[k] for k in idx])).to(args.device, torch.float64)
            with torch.no_grad():
                total = _time(lambda: est(imgs, lms), args.device, args.repeats)
                fit_t = _time(lambda: est.fit(lms), args.device, args.repeats)
                fit = est.fit(lms)
                align_t = _time(lambda: est.align(imgs, lms, fit), args.device, args.repeats)
                faces, _ = est.align(imgs, lms, fit)
                fhog_t = _time(lambda: fhog(faces), args.device, args.repeats)
                feats = torch.cat([fhog(faces).flatten(1), geometry_features(fit.local, est.pdm_basis).float()], 1)
                svr_t = _time(lambda: est.predict_features(feats), args.device, args.repeats)
            x = imgs[0].float().requires_grad_(True)
            grad_t = _time(lambda: est([x] * batch, lms).sum().backward(), args.device, 1)
            fps = batch / total
            with_lm = {f"upsample{u}_maxside{m}": round(1.0 / (t + total / batch), 1) for (u, m), t in lm_times.items()}
            rows.append({
                "what": "estimator, landmarks given", "device": args.device, "threads": threads, "batch": batch,
                "faces_per_s": round(fps, 1), "ms_per_batch": round(1000 * total, 1),
                "breakdown_ms": {"pdm_fit": round(1000 * fit_t, 1), "align+mask": round(1000 * align_t, 1), "fhog": round(1000 * fhog_t, 1), "svr": round(1000 * svr_t, 2)},
                "forward+backward_ms_per_batch": round(1000 * grad_t, 1),
                "faces_per_s_with_dlib_landmarks": with_lm,
            })
            print(f"{args.device} threads {threads} batch {batch:3d}: {fps:7.1f} faces/s (fit {1000 * fit_t:.1f} ms, align {1000 * align_t:.1f} ms, "
                  f"fhog {1000 * fhog_t:.1f} ms, svr {1000 * svr_t:.2f} ms per batch; fwd+bwd {1000 * grad_t:.0f} ms); with dlib landmarks {with_lm} faces/s")
    for r in rows[:3]:
        print(f"{r['what']}: {r['ms_per_face']} ms")
    result = {
        "what": "OpenFace 2.2 static AU estimator (stylerig_au, PyTorch) throughput",
        "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cpus, shared with other jobs)"
        + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "faces": len(photos),
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
