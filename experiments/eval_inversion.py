"""Evaluate W+ inversion on real faces: LPIPS, MSE, SSIM, two identity distances, seconds per image.

Each photo is FFHQ-aligned to the generator's resolution, inverted with ``stylerig_au.invert``
and its reconstruction compared with the aligned photo, both area-resized to 256² (LPIPS-VGG at
256² as in the targets; MSE on [0, 1]; SSIM gaussian 11x11; ``identity_distance``: dlib's descriptor
distance, same person < 0.6; ``identity_sface``: SFace's cosine distance, same person below about 0.6). Seconds per image = optimisation wall time of a batch / its size (alignment excluded).

    python experiments/eval_inversion.py --quick --limit 3            # CPU demo settings
    python experiments/eval_inversion.py --device cuda --steps 500    # GPU
    python experiments/eval_inversion.py --keep runs/inv --resume     # interruptible: rerun to go on

Prints a table (per image and mean) and writes JSON (with the device name) to
``experiments/results/eval_inversion_<device>[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stylerig_au.diagnostics import device_label

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = REPO.parent / "shared" / "faces" / "celebahq-dev"
QUICK = {"steps": 60, "lr": 0.08}



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of photos (default: %(default)s)")
    ap.add_argument("--generator", default="mobilestylegan-ffhq-1024", help="generator name or checkpoint")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--steps", type=int, default=500, help="optimisation steps (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help=f"CPU demo settings {QUICK}")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    ap.add_argument("--batch-size", type=int, default=1, help="faces optimised together (default: %(default)s)")
    ap.add_argument("--keep", type=Path, default=None, help="keep latents / reconstructions in this folder")
    ap.add_argument("--resume", action="store_true",
                    help="with --keep: reuse finished latents there, checkpoint every 25 steps, continue interrupted ones")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: experiments/results/eval_inversion_<device>.json)")
    args = ap.parse_args(argv)

    from stylerig_au import metrics
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import list_images, load_image, resize
    from stylerig_au.invert import InvertConfig, invert_files, prepare_jobs
    from stylerig_au.models import load_generator
    from stylerig_au.perceptual import load_lpips

    steps, lr = (QUICK["steps"], QUICK["lr"]) if args.quick else (args.steps, args.lr)
    files = list_images([args.faces])
    if args.limit:
        files = files[: args.limit]
    if args.resume and not args.keep:
        print("--resume needs --keep DIR (the folder to resume from)", file=sys.stderr)
        return 2
    if not files:
        print(f"no photos in {args.faces}", file=sys.stderr)
        return 1
    G = load_generator(args.generator, device=args.device)
    lp = load_lpips(device=args.device)
    config = InvertConfig(steps=steps, lr=lr, checkpoint_every=25 if args.resume else 0)
    work = args.keep or Path(tempfile.mkdtemp(prefix="eval_inversion_"))
    t_all = time.perf_counter()
    try:
        results = invert_files(G, files, work, config, batch_size=args.batch_size, device=args.device, lpips_model=lp,
                               overwrite=not args.resume)
    except KeyboardInterrupt:
        hint = "rerun the same command to go on" if args.resume else "use --keep DIR --resume to make a run that can go on"
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return 130
    rows = []
    for res in results:
        if res.status == "skipped":
            print(f"{res.stem}: reused the finished latent in {work}", file=sys.stderr)
        elif res.status != "done":
            print(f"skip {res.source}: {res.message}", file=sys.stderr)
            continue
        job = next(j for j in prepare_jobs(Path(res.source), G.resolution) if j.stem == res.stem)
        target = resize(job.image, (256, 256))
        recon = resize(load_image(res.recon), (256, 256))
        ident = {}
        for key, distance in (("identity_distance", metrics.identity_distance), ("identity_sface", metrics.sface_distance)):
            try:
                ident[key] = float(distance(target, recon, shared_frame=True)[0])  # a photo and its reconstruction
            except Exception as err:  # noqa: BLE001 - no face found in either image: report, don't crash
                print(f"{res.stem}: {key} unavailable ({err})", file=sys.stderr)
                ident[key] = float("nan")
        rows.append(
            {
                "image": Path(res.source).name,
                "lpips": float(metrics.lpips(target, recon)[0]),
                "mse": float(metrics.mse(target, recon)[0]),
                "ssim": float(metrics.ssim(target, recon)[0]),
                **ident,
                "seconds": res.seconds,
            }
        )
    if not rows:
        print("no image was inverted", file=sys.stderr)
        return 1
    keys = ["lpips", "mse", "ssim", "identity_distance", "identity_sface", "seconds"]
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    print(f"\n{'image':<14}" + "".join(f"{k:>19}" for k in keys))
    for r in rows + [{"image": "MEAN", **mean}]:
        print(f"{r['image']:<14}" + "".join(f"{r[k]:>19.4f}" for k in keys))
    report = {
        "device": device_label(args.device),
        "torch": torch.__version__,
        "generator": G.name,
        "settings": {"steps": steps, "lr": lr, "quick": args.quick, "batch_size": args.batch_size, "limit": args.limit, "resumed": args.resume, "loss_size": config.loss_size,
                     "metric_size": 256},
        "per_image": rows,
        "mean": mean,
        "total_seconds": time.perf_counter() - t_all,
    }
    tag = "cuda" if args.device.startswith("cuda") else "cpu"
    out = args.out or REPO / "experiments" / "results" / f"eval_inversion_{tag}{'_quick' if args.quick else ''}.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill stops it like Ctrl-C
    sys.exit(main())
