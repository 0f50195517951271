"""Time and peak memory of the fused ops, CUDA vs reference, at a 1024² StyleGAN2's shapes.

For every synthesis block resolution r (8 … --max-res) the generator runs, per image:
  * ``blur``  : upfirdn2d of the transposed-conv output [B, C_r, r+1, r+1] with the 4x4 [1,3,3,1]
                filter, padding 1, gain 4 (the up-sampling conv's low-pass),
  * ``rgb-up``: upsample2d of the skip image [B, 3, r/2, r/2] → [B, 3, r, r],
  * ``lrelu`` : bias_act(lrelu, gain √2) on each conv output [B, C_r, r, r],
  * ``rgb-bias``: bias_act(linear) on the to-RGB output [B, 3, r, r],
with C_r = min(32768 // r, 512) (config-f). Each is timed forward ("fwd") and forward + backward
("fwd+bwd"); then the whole synthesis network, ``impl='ref'`` vs ``impl='cuda'``.

Prints a table and writes ``experiments/results/bench_ops_<device-slug>.json`` with the device name.
On a machine without CUDA the reference column is measured and the CUDA columns read 'n/a'.

    python experiments/bench_ops.py                      # full shapes (GPU)
    python experiments/bench_ops.py --max-res 128 --batch 1 --threads 1 --repeats 5   # quick CPU run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from stylerig_au.ops import jit

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> tuple[float, float | None]:
    """(median milliseconds, peak extra MiB during one call or None on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak


def op_cases(max_res: int, batch: int, dtype: torch.dtype, device: torch.device):
    """(op label, shape label, make_inputs, run(impl, inputs)) for each hot shape."""
    f = ops.setup_filter([1, 3, 3, 1], device=device)
    res = 8
    while res <= max_res:
        c = min(32768 // res, 512)

        def blur(impl, t, c=c):
            return ops.upfirdn2d(t, f, padding=1, gain=4, impl=impl)

        def rgb_up(impl, t):
            return ops.upsample2d(t, f, impl=impl)

        def lrelu(impl, t, b):
            return ops.bias_act(t, b, act="lrelu", impl=impl)

        def rgb_bias(impl, t, b):
            return ops.bias_act(t, b, act="linear", impl=impl)

        yield "upfirdn2d blur", [batch, c, res + 1, res + 1], lambda s=(batch, c, res + 1, res + 1): (
            torch.randn(s, device=device, dtype=dtype),), blur
        yield "upsample2d rgb-up", [batch, 3, res // 2, res // 2], lambda s=(batch, 3, res // 2, res // 2): (
            torch.randn(s, device=device, dtype=dtype),), rgb_up
        yield "bias_act lrelu", [batch, c, res, res], lambda s=(batch, c, res, res), c=c: (
            torch.randn(s, device=device, dtype=dtype), torch.randn(c, device=device, dtype=dtype)), lrelu
        yield "bias_act rgb-bias", [batch, 3, res, res], lambda s=(batch, 3, res, res): (
            torch.randn(s, device=device, dtype=dtype), torch.randn(3, device=device, dtype=dtype)), rgb_bias
        res *= 2


def timed_pair(make, run, impl: str, device: torch.device, repeats: int, warmup: int) -> dict[str, float | None]:
    inputs = make()
    leaves = [t.detach().requires_grad_(True) for t in inputs]

    def fwd():
        with torch.no_grad():
            return run(impl, *inputs)

    def fwd_bwd():
        out = run(impl, *leaves)
        out.backward(torch.ones_like(out))

    f_ms, f_mem = measure(fwd, device, repeats, warmup)
    b_ms, b_mem = measure(fwd_bwd, device, repeats, warmup)
    return {"fwd_ms": f_ms, "fwd_peak_mib": f_mem, "fwdbwd_ms": b_ms, "fwdbwd_peak_mib": b_mem}


def bench_synthesis(res: int, batch: int, device: torch.device, impls: list[str], repeats: int, warmup: int) -> dict:
    from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config

    torch.manual_seed(0)
    G = StyleGAN2(StyleGAN2Config(resolution=res)).to(device).eval()
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device)
    out: dict[str, dict] = {}
    for impl in impls:
        G.set_impl(impl)
        w_leaf = ws.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                return G.synthesis(ws)

        def fwd_bwd():
            img = G.synthesis(w_leaf)
            img.square().mean().backward()

        f_ms, f_mem = measure(fwd, device, repeats, warmup)
        b_ms, b_mem = measure(fwd_bwd, device, repeats, warmup)
        out[impl] = {"fwd_ms": f_ms, "fwd_peak_mib": f_mem, "fwdbwd_ms": b_ms, "fwdbwd_peak_mib": b_mem}
    return out


def fmt(v: float | None, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:.3f}{unit}" if v < 10 else f"{v:.1f}{unit}"


def ratio(ref: float | None, cuda: float | None) -> float | None:
    return None if ref is None or cuda is None or cuda <= 0 else ref / cuda


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--batch", type=int, default=4, help="images per batch")
    parser.add_argument("--max-res", type=int, default=1024, help="largest block resolution benchmarked")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="op dtype")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--synthesis-res", type=int, default=None, help="generator resolution (default --max-res; 0 skips)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_ops_<device>.json)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    impls = ["ref"]
    cuda_note = "CUDA ops not measured: no CUDA device"
    if device.type == "cuda":
        try:
            jit.load(verbose=False)
            impls.append("cuda")
            cuda_note = ""
        except StylerigError as err:
            cuda_note = str(err)
    name = device_name(device)
    print(f"device: {name}; torch {torch.__version__}; dtype {args.dtype}; batch {args.batch}")
    if cuda_note:
        print(f"note: {cuda_note}")

    rows = []
    header = f"{'op':<20} {'shape':<22} {'pass':<8} {'ref ms':>9} {'cuda ms':>9} {'speedup':>8} {'ref MiB':>9} {'cuda MiB':>9}"
    print(header)
    print("-" * len(header))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jit.OpsFallbackWarning)
        for op, shape, make, run in op_cases(args.max_res, args.batch, dtype, device):
            res = {impl: timed_pair(make, run, impl, device, args.repeats, args.warmup) for impl in impls}
            for key, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
                ref, cuda = res["ref"], res.get("cuda", {})
                row = {
                    "op": op, "shape": shape, "pass": label,
                    "ref_ms": ref[f"{key}_ms"], "cuda_ms": cuda.get(f"{key}_ms"),
                    "ref_peak_mib": ref[f"{key}_peak_mib"], "cuda_peak_mib": cuda.get(f"{key}_peak_mib"),
                }
                row["speedup"] = ratio(row["ref_ms"], row["cuda_ms"])
                rows.append(row)
                print(f"{op:<20} {'x'.join(map(str, shape)):<22} {label:<8} {fmt(row['ref_ms']):>9} "
                      f"{fmt(row['cuda_ms']):>9} {fmt(row['speedup'], 'x'):>8} {fmt(row['ref_peak_mib']):>9} "
                      f"{fmt(row['cuda_peak_mib']):>9}", flush=True)

        synthesis = None
        syn_res = args.max_res if args.synthesis_res is None else args.synthesis_res
        if syn_res:
            synthesis = {"resolution": syn_res, "batch": args.batch, **bench_synthesis(
                syn_res, args.batch, device, impls, max(3, args.repeats // 4), args.warmup)}
            print(f"\nStyleGAN2 synthesis {syn_res}² (random weights, batch {args.batch}, float32 / the network's own fp16 split):")
            for key, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
                ref_ms = synthesis["ref"][f"{key}_ms"]
                cuda_ms = synthesis.get("cuda", {}).get(f"{key}_ms")
                synthesis[f"{key}_speedup"] = ratio(ref_ms, cuda_ms)
                print(f"  {label:<8} ref {fmt(ref_ms)} ms, cuda {fmt(cuda_ms)} ms, speedup {fmt(synthesis[f'{key}_speedup'], 'x')}")

    hot = [r["speedup"] for r in rows if r["speedup"] is not None]
    summary = {
        "min_speedup": min(hot) if hot else None,
        "median_speedup": statistics.median(hot) if hot else None,
        "rows_below_2x": sum(1 for s in hot if s < 2),
    }
    if hot:
        print(f"\nop speedups: min {summary['min_speedup']:.2f}x, median {summary['median_speedup']:.2f}x, "
              f"{summary['rows_below_2x']} of {len(hot)} rows below 2x")
    report = {
        "device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "dtype": args.dtype, "batch": args.batch, "max_res": args.max_res, "repeats": args.repeats,
        "impls": impls, "note": cuda_note or None, "rows": rows, "synthesis": synthesis, "summary": summary,
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
    }
    out = args.out or RESULTS / f"bench_ops_{slug(name)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
