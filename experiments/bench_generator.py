"""Synthesis speed and peak memory of the generators (StyleGAN2 config-f 1024², MobileStyleGAN 1024²).

Each configuration (generator, batch, precision, op implementation) runs in a fresh subprocess, so
the peak memory of one does not leak into the next:
  - CPU:  peak resident set size of that process (``ru_maxrss``), and the part above the RSS right
    after the model was loaded (``peak_extra_mb``, the synthesis working set);
  - CUDA: ``torch.cuda.max_memory_allocated`` during synthesis, and the part above the model weights.
Speed is images/s from the median wall time of the timed synthesis calls (mapping excluded; CUDA
synchronised), after warm-up calls.

StyleGAN2 uses random config-f weights (speed does not depend on the values). On CUDA both generators
run with ``impl='cuda'`` (fused kernels) and ``impl='ref'`` (pure PyTorch); on CPU only 'ref' exists. fp16 on CUDA: StyleGAN2 runs its 4
highest resolutions in fp16 with conv_clamp 256 (NVIDIA's FFHQ setting); MobileStyleGAN runs under
``torch.autocast(float16)``.

    python experiments/bench_generator.py                 # all configs on the default device
    python experiments/bench_generator.py --device cpu --quick
    python experiments/bench_generator.py --device cpu --quick --generators mobilestylegan-ffhq-1024 --merge

Writes ``experiments/results/bench_generator_<device-slug>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load(generator: str, device: str, precision: str, impl: str):
    from stylerig_au.models import load_generator
    from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config

    if generator == "stylegan2-f-1024":
        fp16 = precision == "fp16"
        cfg = StyleGAN2Config(num_fp16_res=4 if fp16 else 0, conv_clamp=256.0 if fp16 else None)
        return StyleGAN2(cfg, name=generator, impl=impl).eval().requires_grad_(False).to(device)
    return load_generator(generator, device=device, impl=impl)


def run_one(spec: dict) -> dict:
    """Measure one configuration in this process; returns the result row."""
    import torch

    device, batch, precision = spec["device"], spec["batch"], spec["precision"]
    torch.manual_seed(0)
    G = _load(spec["generator"], device, precision, spec["impl"])
    loaded_rss = _rss_mb()
    ws = G.w_avg.detach().to(device).reshape(1, 1, -1).repeat(batch, G.num_ws, 1)
    ws = ws + 0.5 * torch.randn_like(ws)
    is_sg2 = spec["generator"].startswith("stylegan2")

    def synth():
        with torch.no_grad():
            if is_sg2:
                return G.synthesis(ws, noise_mode="const", force_fp32=precision == "fp32")
            with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                return G.synthesis(ws)

    if device == "cuda":
        torch.cuda.synchronize()
        weights_mb = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(spec["warmup"] + spec["repeats"]):
        start = time.perf_counter()
        img = synth()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    assert img.shape[0] == batch and torch.isfinite(img.float()).all(), "synthesis produced non-finite values"
    median = statistics.median(times)
    row = dict(spec, resolution=int(G.resolution), images_per_s=batch / median, ms_per_batch=1000 * median,
               times_s=[round(t, 4) for t in times], measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               load_average=os.getloadavg()[0])
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        row.update(peak_mem_mb=peak, peak_extra_mb=peak - weights_mb, mem_kind="cuda max_memory_allocated")
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row.update(peak_mem_mb=peak, peak_extra_mb=peak - loaded_rss, mem_kind="process peak RSS")
    return row


def device_info(device: str) -> tuple[str, str]:
    """(human-readable device name, file-name slug)."""
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
    else:
        name = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        name = f"{name} ({torch.get_num_threads()} threads)"
    slug = "cpu" if device == "cpu" else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return name, slug


def plan(args: argparse.Namespace) -> list[dict]:
    precisions = ["fp32", "fp16"] if args.device == "cuda" else ["fp32"]
    impls = ["cuda", "ref"] if args.device == "cuda" else ["ref"]
    specs = []
    for generator in args.generators:
        for batch in args.batches:
            for precision in precisions:
                for impl in impls:
                    specs.append(dict(generator=generator, device=args.device, batch=batch, precision=precision,
                                      impl=impl, warmup=args.warmup, repeats=args.repeats))
    return specs


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--generators", default="stylegan2-f-1024,mobilestylegan-ffhq-1024",
                        help="comma-separated: stylegan2-f-1024, mobilestylegan-ffhq-1024, or checkpoint paths")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="1 warm-up, 2 timed calls; on CPU batches 1 and 4 (batch 16 of StyleGAN2 at 1024² "
                             "needs ~10 GB and minutes on a small CPU)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_generator_<slug>.json)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of other generators already in the JSON (re-measure some generators only)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))))
        return 0
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.generators = [g.strip() for g in args.generators.split(",") if g.strip()]
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.quick:
        args.warmup, args.repeats = 1, 2
        if args.device == "cpu":
            args.batches = [1, 4]
    name, slug = device_info(args.device)
    rows, skipped = [], []
    print(f"device: {name}; torch {torch.__version__}")
    header = f"{'generator':<26}{'batch':>6}{'prec':>6}{'impl':>6}{'img/s':>9}{'ms/batch':>11}{'peak MB':>10}{'extra MB':>10}"
    print(header)
    for spec in plan(args):
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            skipped.append(dict(spec, reason=reason))
            print(f"{spec['generator']:<26}{spec['batch']:>6}{spec['precision']:>6}{spec['impl']:>6}  skipped: {reason}")
            continue
        row = json.loads(line[len("RESULT "):])
        rows.append(row)
        print(f"{row['generator']:<26}{row['batch']:>6}{row['precision']:>6}{row['impl']:>6}{row['images_per_s']:>9.3f}"
              f"{row['ms_per_batch']:>11.1f}{row['peak_mem_mb']:>10.0f}{row['peak_extra_mb']:>10.0f}")
    out = args.out or RESULTS / f"bench_generator_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.is_file():
        old = json.loads(out.read_text())
        rows = [r for r in old.get("results", []) if r["generator"] not in args.generators] + rows
        skipped = [r for r in old.get("skipped", []) if r["generator"] not in args.generators] + skipped
    payload = dict(device=name, device_kind=args.device, torch=torch.__version__, python=platform.python_version(),
                   threads=torch.get_num_threads(), load_average_at_end=os.getloadavg(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   quick=args.quick, warmup=args.warmup, repeats=args.repeats, results=rows, skipped=skipped,
                   notes="images/s = batch / median synthesis time (mapping excluded); see the script docstring "
                         "for how memory is measured. StyleGAN2 weights are random config-f.")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
