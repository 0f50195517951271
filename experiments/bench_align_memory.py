"""Peak memory (RSS) and time of aligning one large photo, by photo size and ``--upsample``.

Each case runs ``align_file`` in a fresh Python process (so its peak RSS is its own) on a synthetic
photo: a real development face (``unaligned/03.jpg``) enlarged to the size asked for and saved as a
JPEG. ``--uncapped`` lifts the detector's pixel bound (:data:`stylerig_au.align.DETECT_MAX_PIXELS`),
which is how every case ran before the bound, to compare. Prints a table and writes
``experiments/results/bench_align_memory.json`` with the device name.

    python experiments/bench_align_memory.py [--sizes 3000x2250 12000x9000] [--upsample 1 4] [--uncapped]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces"))

# Runs in the child: align one photo, report its own peak RSS (ru_maxrss is in KiB on Linux).
CHILD = """
import json, resource, sys, time
from stylerig_au import align
path, upsample, uncapped = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if uncapped:
    align.DETECT_MAX_PIXELS = 10**13
start = time.perf_counter()
faces = align.align_file(path, output_size=1024, upsample=upsample)
seconds = time.perf_counter() - start
print(json.dumps({"faces": len(faces), "seconds": seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_photo(face: Path, size: tuple[int, int], folder: Path) -> Path:
    """``face`` enlarged (Lanczos) to ``size`` (width, height) as a JPEG in ``folder``."""
    from PIL import Image

    out = folder / f"photo_{size[0]}x{size[1]}.jpg"
    if not out.exists():
        with Image.open(face) as img:
            img.convert("RGB").resize(size, Image.LANCZOS).save(out, quality=90)
    return out


def run_case(photo: Path, upsample: int, uncapped: bool) -> dict:
    """One child process; its JSON line, or the error when it failed (e.g. killed for memory)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(photo), str(upsample), "1" if uncapped else "0"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--sizes", nargs="+", default=["3000x2250", "12000x9000"], help="photo sizes WIDTHxHEIGHT")
    ap.add_argument("--upsample", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--uncapped", action="store_true", help="also run each case without the detector's pixel bound")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "bench_align_memory.json")
    args = ap.parse_args()

    import torch
    from bench_ops import device_name  # experiments/ is on sys.path when a script runs from it

    from stylerig_au.align import DETECT_MAX_PIXELS, detection_plan
    from stylerig_au.fileio import atomic_write_text

    face = args.faces / "unaligned" / "03.jpg"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-align-") as tmp:
        for text in args.sizes:
            size = parse_size(text)
            photo = make_photo(face, size, Path(tmp))
            for upsample in args.upsample:
                for uncapped in ([False, True] if args.uncapped else [False]):
                    scale, doublings = detection_plan(size, upsample) if not uncapped else (None, None)
                    result = run_case(photo, upsample, uncapped)
                    rows.append({"width": size[0], "height": size[1], "megapixels": size[0] * size[1] / 1e6,
                                 "upsample": upsample, "detector_pixel_bound": None if uncapped else DETECT_MAX_PIXELS,
                                 "detect_scale": scale, "detect_doublings": doublings, **result})
                    r = rows[-1]
                    print(f"{text:>11} up {upsample} {'uncapped' if uncapped else 'bounded ':8} "
                          + (f"peak RSS {r['peak_rss_mb']:7.0f} MB  {r['seconds']:6.1f} s  faces {r['faces']}"
                             if "error" not in r else f"failed: {r['error']}"), flush=True)
    record = {"device": device_name(torch.device("cpu")), "python": sys.version.split()[0], "rows": rows,
              "note": "peak RSS of a fresh process aligning one synthetic JPEG (one face, enlarged) with align_file"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"device: {record['device']}; wrote {args.out}")


if __name__ == "__main__":
    main()
