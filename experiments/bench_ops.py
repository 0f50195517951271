"""Time, memory traffic and bandwidth of the fused ops, CUDA vs reference, at a 1024² StyleGAN2's shapes.

For every synthesis block resolution r (8 … --max-res) the generator runs, per image:
  * ``blur``  : upfirdn2d of the transposed-conv output [B, C_r, r+1, r+1] with the 4x4 [1,3,3,1]
                filter, padding 1, gain 4 (the up-sampling conv's low-pass),
  * ``rgb-up``: upsample2d of the skip image [B, 3, r/2, r/2] → [B, 3, r, r],
  * ``lrelu`` : bias_act(lrelu, gain √2) on each conv output [B, C_r, r, r],
  * ``rgb-bias``: bias_act(linear) on the to-RGB output [B, 3, r, r],
with C_r = min(32768 // r, 512) (config-f). Each is timed forward ("fwd") and forward + backward
("fwd+bwd", with a ready-made output gradient).

Next to each time: the bytes the op must move (every input read once, every output written once;
backward reads the output gradient and, for bias_act, one saved tensor of x's size, and writes the
input gradient: a bias-gradient reduction's re-read and the filter are not counted), the bandwidth
that gives, and ``copy_frac``: the time of a device-to-device copy moving the same bytes, measured
in the same run, over the op's time (1.0 = as fast as a plain copy, the physical limit of these
memory-bound ops). The ``auto`` column is the path ``impl='auto'`` dispatches to (see
``ops.activation.kernel_can_win``) and its time.

Then the whole synthesis network (random weights) at each --synthesis-batch, ``impl='ref'`` vs
``'cuda'`` (kernels forced) and ``'auto'`` (the default), forward and forward + backward, in fp32 and in
the network's fp16 split (config-f at 1024²: the 4 highest resolutions in fp16 with conv_clamp 256;
fp32 everywhere on a CPU).

Prints tables and writes ``experiments/results/bench_ops_<device-slug>[_<dtype>].json`` with the device
name. Without CUDA the reference and copy columns are measured and the CUDA columns read 'n/a'.

    python experiments/bench_ops.py                      # full shapes (GPU)
    python experiments/bench_ops.py --max-res 16 --batch 1 --synthesis-res 16 --synthesis-batch 1 --repeats 2   # tiny CPU run
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
from typing import Callable, NamedTuple

import torch

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from stylerig_au.ops import activation, jit

RESULTS = Path(__file__).resolve().parent / "results"
FP16_SPLIT = {"num_fp16_res": 4, "conv_clamp": 256.0}  # NVIDIA's config-f training setting


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


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int,
            peak_memory: bool = True) -> tuple[float, float | None]:
    """(median milliseconds, peak extra MiB during one call, or None on CPU / when not asked)."""
    for _ in range(warmup):
        fn()
    sync(device)
    peak = None
    if device.type == "cuda" and peak_memory:
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


class CopyTimer:
    """Milliseconds of a device-to-device copy moving ``nbytes`` (reads nbytes/2, writes nbytes/2), cached."""

    def __init__(self, device: torch.device, repeats: int, warmup: int) -> None:
        self.device, self.repeats, self.warmup = device, repeats, warmup
        self.cache: dict[int, float] = {}

    def ms(self, nbytes: int) -> float:
        half = max(1, nbytes // 2)
        if half not in self.cache:
            src = torch.empty(half, dtype=torch.uint8, device=self.device).fill_(1)
            dst = torch.empty_like(src)
            self.cache[half] = measure(lambda: dst.copy_(src), self.device, self.repeats, self.warmup, peak_memory=False)[0]
            del src, dst
        return self.cache[half]


class OpCase(NamedTuple):
    """One hot shape: inputs, the call, the bytes each pass must move, and where 'auto' sends it."""

    op: str
    shape: list[int]
    make: Callable[[], tuple[torch.Tensor, ...]]
    run: Callable[..., torch.Tensor]
    fwd_bytes: int
    fwdbwd_bytes: int
    auto_uses_kernel: bool


def op_cases(max_res: int, batch: int, dtype: torch.dtype, device: torch.device):
    """The OpCase of each hot shape, resolution 8 … max_res."""
    f = ops.setup_filter([1, 3, 3, 1], device=device)
    size = torch.empty(0, dtype=dtype).element_size()

    def numel(shape) -> int:
        out = 1
        for s in shape:
            out *= s
        return out

    def blur(impl, t):
        return ops.upfirdn2d(t, f, padding=1, gain=4, impl=impl)

    def rgb_up(impl, t):
        return ops.upsample2d(t, f, impl=impl)

    def lrelu(impl, t, b):
        return ops.bias_act(t, b, act="lrelu", impl=impl)

    def rgb_bias(impl, t, b):
        return ops.bias_act(t, b, act="linear", impl=impl)

    def randn(*shape):
        return lambda: tuple(torch.randn(s, device=device, dtype=dtype) for s in shape)

    def linear_op(n_in, n_out):  # upfirdn2d: fwd reads x, writes y; bwd reads dy, writes dx
        return (n_in + n_out) * size, 2 * (n_in + n_out) * size

    def elementwise(n):  # bias_act: fwd reads x, writes y; bwd reads dy and one saved tensor, writes dx
        return 2 * n * size, 5 * n * size

    def auto_kernel(act):
        spec = activation.ACTIVATIONS[act]
        return activation.kernel_can_win(spec, spec.gain, -1.0)

    res = 8
    while res <= max_res:
        c = min(32768 // res, 512)
        s_blur, s_skip, s_conv, s_rgb = [batch, c, res + 1, res + 1], [batch, 3, res // 2, res // 2], [batch, c, res, res], [batch, 3, res, res]
        yield OpCase("upfirdn2d blur", s_blur, randn(s_blur), blur, *linear_op(numel(s_blur), numel(s_conv)), True)
        yield OpCase("upsample2d rgb-up", s_skip, randn(s_skip), rgb_up, *linear_op(numel(s_skip), numel(s_rgb)), True)
        yield OpCase("bias_act lrelu", s_conv, randn(s_conv, [c]), lrelu, *elementwise(numel(s_conv)), auto_kernel("lrelu"))
        yield OpCase("bias_act rgb-bias", s_rgb, randn(s_rgb, [3]), rgb_bias, *elementwise(numel(s_rgb)), auto_kernel("linear"))
        res *= 2


def timed_pair(case: OpCase, impl: str, device: torch.device, repeats: int, warmup: int) -> dict[str, float | None]:
    inputs = case.make()
    leaves = [t.detach().requires_grad_(True) for t in inputs]
    with torch.no_grad():
        dy = torch.randn_like(case.run("ref", *inputs))

    def fwd():
        with torch.no_grad():
            return case.run(impl, *inputs)

    def fwd_bwd():
        out = case.run(impl, *leaves)
        out.backward(dy)

    f_ms, f_mem = measure(fwd, device, repeats, warmup)
    b_ms, b_mem = measure(fwd_bwd, device, repeats, warmup)
    return {"fwd_ms": f_ms, "fwd_peak_mib": f_mem, "fwdbwd_ms": b_ms, "fwdbwd_peak_mib": b_mem}


def bench_synthesis(res: int, batch: int, device: torch.device, impls: list[str], repeats: int, warmup: int,
                    fp16_split: bool) -> dict:
    """Median ms and peak MiB of G.synthesis per impl, forward and forward + backward; ratios ref / impl."""
    from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config

    torch.manual_seed(0)
    extra = FP16_SPLIT if fp16_split else {}
    G = StyleGAN2(StyleGAN2Config(resolution=res, **extra)).to(device).eval()
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device)
    out: dict[str, dict] = {"resolution": res, "batch": batch, "precision": "fp16 split" if fp16_split else "fp32",
                            "config": extra, "impls": {}}
    for impl in impls:
        G.set_impl(impl)
        w_leaf = ws.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                return G.synthesis(ws)

        def fwd_bwd():
            img = G.synthesis(w_leaf)
            img.float().square().mean().backward()

        f_ms, f_mem = measure(fwd, device, repeats, warmup)
        b_ms, b_mem = measure(fwd_bwd, device, repeats, warmup)
        out["impls"][impl] = {"fwd_ms": f_ms, "fwd_peak_mib": f_mem, "fwdbwd_ms": b_ms, "fwdbwd_peak_mib": b_mem}
    ref = out["impls"]["ref"]
    for impl in impls:
        if impl != "ref":
            for key in ("fwd", "fwdbwd"):
                out[f"{key}_speedup_{impl}"] = ratio(ref[f"{key}_ms"], out["impls"][impl][f"{key}_ms"])
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def fmt(v: float | None, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:.3f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def bandwidth_fields(prefix: str, ms: float | None, nbytes: int, copy_ms: float) -> dict[str, float | None]:
    """GB/s and the fraction of the same-bytes copy's speed (copy time / op time) of one measured time."""
    return {f"{prefix}_gbps": None if ms is None else nbytes / (ms * 1e-3) / 1e9,
            f"{prefix}_copy_frac": ratio(copy_ms, ms)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=4, help="images per batch of the op rows")
    parser.add_argument("--max-res", type=int, default=1024, help="largest block resolution benchmarked (0: no op rows)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="op rows' dtype")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--synthesis-res", type=int, default=None, help="generator resolution (default --max-res; 0 skips)")
    parser.add_argument("--synthesis-batch", default="4,16", help="comma-separated batches of the synthesis runs")
    parser.add_argument("--synthesis-repeats", type=int, default=None, help="timed synthesis calls (default max(3, repeats // 4))")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_ops_<device>[_<dtype>].json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from stylerig_au.devices import resolve_device

    try:
        device = torch.device(resolve_device(args.device))
        batches = [int(b) for b in args.synthesis_batch.split(",") if b.strip()]
    except (StylerigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    impls = ["ref"]
    cuda_note = "CUDA ops not measured: no CUDA device"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
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
    copies = CopyTimer(device, args.repeats, args.warmup)

    rows = []
    header = (f"{'op':<18} {'shape':<18} {'pass':<8} {'MB':>8} {'copy ms':>8} {'ref ms':>8} {'ref frac':>8} "
              f"{'cuda ms':>8} {'cuda GB/s':>9} {'cuda frac':>9} {'speedup':>8} {'auto':>5} {'auto x':>7}")
    print(header)
    print("-" * len(header))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jit.OpsFallbackWarning)
        for case in op_cases(args.max_res, args.batch, dtype, device):
            res = {impl: timed_pair(case, impl, device, args.repeats, args.warmup) for impl in impls}
            for key, label, nbytes in (("fwd", "fwd", case.fwd_bytes), ("fwdbwd", "fwd+bwd", case.fwdbwd_bytes)):
                ref, cuda = res["ref"], res.get("cuda", {})
                copy_ms = copies.ms(nbytes)
                row = {
                    "op": case.op, "shape": case.shape, "pass": label, "bytes": nbytes, "copy_ms": copy_ms,
                    "copy_gbps": nbytes / (copy_ms * 1e-3) / 1e9,
                    "ref_ms": ref[f"{key}_ms"], "cuda_ms": cuda.get(f"{key}_ms"),
                    "ref_peak_mib": ref[f"{key}_peak_mib"], "cuda_peak_mib": cuda.get(f"{key}_peak_mib"),
                    **bandwidth_fields("ref", ref[f"{key}_ms"], nbytes, copy_ms),
                    **bandwidth_fields("cuda", cuda.get(f"{key}_ms"), nbytes, copy_ms),
                }
                row["speedup"] = ratio(row["ref_ms"], row["cuda_ms"])
                row["auto"] = "cuda" if case.auto_uses_kernel and "cuda" in impls else "ref"
                row["auto_ms"] = row[f"{row['auto']}_ms"]
                row["auto_speedup"] = ratio(row["ref_ms"], row["auto_ms"])
                rows.append(row)
                print(f"{case.op:<18} {'x'.join(map(str, case.shape)):<18} {label:<8} {nbytes / 1e6:>8.2f} {fmt(copy_ms):>8} "
                      f"{fmt(row['ref_ms']):>8} {fmt(row['ref_copy_frac']):>8} {fmt(row['cuda_ms']):>8} "
                      f"{fmt(row['cuda_gbps']):>9} {fmt(row['cuda_copy_frac']):>9} {fmt(row['speedup'], 'x'):>8} "
                      f"{row['auto']:>5} {fmt(row['auto_speedup'], 'x'):>7}", flush=True)

        synthesis = []
        syn_res = args.max_res if args.synthesis_res is None else args.synthesis_res
        if syn_res:
            syn_impls = impls + (["auto"] if "cuda" in impls else [])
            repeats = args.synthesis_repeats or max(3, args.repeats // 4)
            print(f"\nStyleGAN2 synthesis {syn_res}², random weights (speedup = ref time / time):")
            for fp16_split in (False, True):
                if fp16_split and device.type != "cuda":
                    print("  fp16 split: not measured (the network runs its fp16 layers on CUDA only)")
                    continue
                for batch in batches:
                    run = bench_synthesis(syn_res, batch, device, syn_impls, repeats, args.warmup, fp16_split)
                    synthesis.append(run)
                    for key, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
                        times = ", ".join(f"{impl} {fmt(run['impls'][impl][f'{key}_ms'])} ms" for impl in syn_impls)
                        ups = ", ".join(f"{impl} {fmt(run.get(f'{key}_speedup_{impl}'), 'x')}" for impl in syn_impls if impl != "ref")
                        print(f"  {run['precision']:<10} batch {batch:<3} {label:<8} {times}" + (f"; speedup {ups}" if ups else ""),
                              flush=True)

    kernel = [r["speedup"] for r in rows if r["speedup"] is not None]
    auto = [r["auto_speedup"] for r in rows if r["auto_speedup"] is not None and "cuda" in impls]
    fracs = [r["cuda_copy_frac"] for r in rows if r["cuda_copy_frac"] is not None and r["shape"][-1] >= 129]
    summary = {
        "kernel_min_speedup": min(kernel) if kernel else None,
        "kernel_median_speedup": statistics.median(kernel) if kernel else None,
        "kernel_rows_slower_than_ref": sum(1 for s in kernel if s < 1),
        "auto_min_speedup": min(auto) if auto else None,
        "auto_rows_slower_than_ref": sum(1 for s in auto if s < 1),
        "rows_below_2x": sum(1 for s in kernel if s < 2),
        "cuda_min_copy_frac_from_129": min(fracs) if fracs else None,
        "cuda_median_copy_frac_from_129": statistics.median(fracs) if fracs else None,
    }
    if kernel:
        print(f"\nkernels: speedup min {summary['kernel_min_speedup']:.2f}x, median {summary['kernel_median_speedup']:.2f}x, "
              f"{summary['kernel_rows_slower_than_ref']} of {len(kernel)} rows slower than ref; with auto's dispatch "
              f"{summary['auto_rows_slower_than_ref']} slower (min {summary['auto_min_speedup']:.2f}x)")
    if fracs:
        print(f"kernels on shapes >= 129²: min {summary['cuda_min_copy_frac_from_129']:.0%}, median "
              f"{summary['cuda_median_copy_frac_from_129']:.0%} of the same-bytes copy's speed")
    report = {
        "device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dtype": args.dtype, "batch": args.batch, "max_res": args.max_res, "repeats": args.repeats,
        "impls": impls, "note": cuda_note or None, "bytes_model": __doc__.split("\n\n")[2].replace("\n", " "),
        "copies_ms": {str(2 * k): v for k, v in sorted(copies.cache.items())},
        "rows": rows, "synthesis": synthesis, "summary": summary,
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
    }
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = args.out or RESULTS / f"bench_ops_{slug(name)}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
