"""Compare stylerig_au's PyTorch MobileStyleGAN with the random-face OpenVINO IR (f32) on the same w.

Prints the per-seed max abs error of w (mapping) and of the image (raw, and clamped to [-1, 1]), and
writes ``experiments/results/mobilestylegan_parity.json``. OpenVINO is only the reference here
(``pip install openvino``); the toolkit never needs it.

    python experiments/check_mobilestylegan_parity.py --seeds 0,1,2,3 [--ir-dir DIR] [--model FILE.pt]
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from stylerig_au.models.mobilestylegan import load_mobilestylegan
from stylerig_au.models.mobilestylegan_ir import convert, find_ir_dir, ir_members

RESULTS = Path(__file__).resolve().parent / "results"


def openvino_reference(ir_dir: Path):
    """(mapping, synthesis) callables running the IR in OpenVINO at f32 precision, batch 1."""
    import openvino as ov

    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    m = core.compile_model(core.read_model(ir_dir / "MappingNetwork.xml"), "CPU", cfg)
    s = core.compile_model(core.read_model(ir_dir / "SynthesisNetwork.xml"), "CPU", cfg)
    return (lambda z: m(z.astype(np.float32))[0]), (lambda w: s(w.astype(np.float32))[0])


@click.command()
@click.option("--seeds", default="0,1,2,3", show_default=True, help="Comma-separated z seeds (numpy default_rng).")
@click.option("--psi", default=1.0, show_default=True, help="Truncation psi applied to w (same w to both).")
@click.option("--ir-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder with the four IR files; default $STYLERIG_AU_RANDOM_FACE_IR or the registry's wheel.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Converted .pt; default: convert the IR found above into a temp file.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=RESULTS / "mobilestylegan_parity.json", show_default=True, help="JSON result file.")
def main(seeds: str, psi: float, ir_dir: Path | None, model: Path | None, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ir_dir = ir_dir or find_ir_dir(Path(tmp))
        if ir_dir is None:
            raise click.ClickException("random-face IR not found; pass --ir-dir or set STYLERIG_AU_RANDOM_FACE_IR")
        if model is None:
            model = Path(tmp) / "mobilestylegan.pt"
            convert(ir_members(ir_dir), model, w_avg_samples=10_000)
        G = load_mobilestylegan(model)
        ov_map, ov_syn = openvino_reference(ir_dir)
        rows = []
        click.echo(f"{'seed':>4} {'w err':>10} {'img err':>10} {'clamped':>10} {'ov s':>6} {'torch s':>7}")
        for seed in [int(s) for s in seeds.split(",") if s.strip()]:
            z = np.random.default_rng(seed).standard_normal((1, G.z_dim)).astype(np.float32)
            w_ov = ov_map(z)
            with torch.no_grad():
                w_pt = G.mapping(torch.from_numpy(z)).numpy()
            w = G.w_avg.numpy() + psi * (w_ov - G.w_avg.numpy())
            t0 = time.perf_counter()
            img_ov = ov_syn(w)
            t1 = time.perf_counter()
            with torch.no_grad():
                img_pt = G.synthesis(torch.from_numpy(w)[:, None].repeat(1, G.num_ws, 1)).numpy()
            t2 = time.perf_counter()
            row = {
                "seed": seed,
                "w_max_abs_err": float(np.abs(w_pt - w_ov).max()),
                "img_max_abs_err": float(np.abs(img_pt - img_ov).max()),
                "img_max_abs_err_clamped": float(np.abs(np.clip(img_pt, -1, 1) - np.clip(img_ov, -1, 1)).max()),
                "openvino_s": t1 - t0, "torch_s": t2 - t1,
            }
            rows.append(row)
            click.echo(f"{seed:>4} {row['w_max_abs_err']:10.2e} {row['img_max_abs_err']:10.2e} "
                       f"{row['img_max_abs_err_clamped']:10.2e} {row['openvino_s']:6.2f} {row['torch_s']:7.2f}")
    worst = max(r["img_max_abs_err"] for r in rows)
    click.echo(f"worst image max abs error: {worst:.2e} (threshold 1e-3)")
    result = {"device": f"cpu ({platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()})",
              "torch": torch.__version__, "psi": psi, "threshold": 1e-3, "worst_img_max_abs_err": worst,
              "seeds": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(out)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
