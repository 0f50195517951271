"""Latency of editing an already-inverted latent: apply the edit, then synthesise the 1024² image.

This is what each further edit of a photo costs once it has been inverted (``stylerig-au edit`` on a
cached latent). For each method (linear directions, AU mapper) and batch size, the median wall time
of ``Editor.edit`` + ``Editor.render`` over the timed repeats (after warm-up; CUDA synchronised) is
reported per image, for edits rendered over the whole picture (``global``) and kept to the AUs' face
region (``local``, the CLI's default: the unedited and edited latents are rendered together, and the
face's landmarks are found once per latent, in the warm-up), and shown as the unedited face moved by the
edit's landmark motion (``motion``: a global render, the edited face's landmarks, a warp). Targets: ≤ 1.5 s per image on a CPU (batch 1), ≤ 20 ms per image on an H100 at
batch 16.

    python experiments/bench_edit.py                          # CPU, batch 1 and 16
    python experiments/bench_edit.py --device cuda --batch 1 16

Prints a table and writes ``experiments/results/bench_edit_<cpu|cuda>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--methods", nargs="+", default=["linear", "mapper"], choices=["linear", "mapper"])
    ap.add_argument("--render", nargs="+", default=["global", "local", "motion"], choices=["global", "local", "motion"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.edit.spec import AU
    from stylerig_au.evaluate import make_editor
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.models import load_generator, seed_ws

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    cuda = device.startswith("cuda")
    G = load_generator(device=device)
    sources = {"linear": lambda: load_default_directions(G), "mapper": lambda: load_default_mapper(G, device=device)}
    edit = AU(12, 2) + AU(6, 1)
    rows = []
    print(f"{'method':>7} {'render':>6} {'batch':>5} {'s/img':>8} {'img/s':>7} {'first s/img':>11}")
    for method, render in [(m, r) for m in args.methods for r in args.render]:
        editor = make_editor(G, sources[method](), local=render == "local", motion=render == "motion")
        for batch in args.batch:
            ws = seed_ws(G, 2_000_000, batch, 0.8, device)
            times = []
            for i in range(args.warmup + args.repeats):
                if cuda:
                    torch.cuda.synchronize()
                tick = time.perf_counter()
                editor.render(ws, edit)
                if cuda:
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - tick)
                if i == 0:
                    first = (time.perf_counter() - tick) / batch
            per_image = statistics.median(times) / batch
            rows.append({"method": method, "render": render, "batch": batch, "seconds_per_image": per_image,
                         "images_per_s": 1 / per_image, "first_seconds_per_image": first,
                         "times_s": [round(t, 4) for t in times]})
            print(f"{method:>7} {render:>6} {batch:>5} {per_image:8.3f} {1 / per_image:7.2f} {first:11.3f}")
    result = {"what": "edit an inverted latent: Editor.edit + render (1024² synthesis), edit AU12+2 & AU6+1; "
                      "first_seconds_per_image: the first edit of each latent (local and motion renders: its landmark search)",
              "device": device_label(device), "torch": torch.__version__, "generator": G.name,
              "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "warmup": args.warmup, "repeats": args.repeats,
              "rows": rows, "command": "python experiments/bench_edit.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = args.out or REPO / "experiments" / "results" / f"bench_edit_{'cuda' if cuda else 'cpu'}.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
