"""Close-ups of the same +2 edits rendered three ways: the local generator edit, and motion transfer.

The eval grids show 4 faces × 17 AUs at 128 px a tile, too small to see a moustache or the rim of a pair
of glasses. This script renders a few held-out faces and AUs at full resolution, crops the face and
writes one labelled grid: the face, its edit rendered locally inside the generator (the default), and
the same edit shown by motion transfer (``stylerig_au.edit.motion``).

    python experiments/motion_closeup.py                      # seeds 2,000,001-2,000,002, AU4/10/15/17

Writes ``experiments/results/motion_closeup.jpg``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[2_000_001, 2_000_002])
    ap.add_argument("--aus", type=int, nargs="+", default=[4, 10, 15, 17])
    ap.add_argument("--amount", type=float, default=2.0)
    ap.add_argument("--method", choices=("linear", "mapper"), default="mapper")
    ap.add_argument("--psi", type=float, default=0.8)
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "motion_closeup.jpg")
    args = ap.parse_args(argv)

    import torch

    from stylerig_au.edit.directions import load_default_directions
    from stylerig_au.edit.local import MASK_SIDE, find_face, region_mask, render_local
    from stylerig_au.edit.media import labelled_grid
    from stylerig_au.edit.motion import marks_in_box, transfer_motion
    from stylerig_au.edit.spec import AU
    from stylerig_au.evaluate import make_editor
    from stylerig_au.imageio import batch_to_uint8, save_image
    from stylerig_au.models import load_generator, seed_ws

    G = load_generator()
    if args.method == "mapper":
        from stylerig_au.edit.mapper import load_default_mapper

        editor = make_editor(G, load_default_mapper(G))
    else:
        editor = make_editor(G, load_default_directions(G))
    r = G.resolution
    top, bottom, left, right = int(0.29 * r), int(0.88 * r), int(0.21 * r), int(0.79 * r)  # brows to chin
    rows, labels = [], []
    with torch.no_grad():
        for seed in args.seeds:
            ws = seed_ws(G, seed, 1, args.psi, "cpu")
            base = G.synthesis(ws).clamp(-1, 1)
            face = find_face(batch_to_uint8(base)[0])
            if face is None:
                print(f"seed {seed}: no face found; skipped", file=sys.stderr)
                continue
            for au in args.aus:
                edited_ws = editor.edit(ws, AU(au, args.amount))
                whole = G.synthesis(edited_ws).clamp(-1, 1)
                mask = torch.from_numpy(region_mask(face.landmarks, [au], MASK_SIDE, r))[None, None]
                shown = [base, render_local(G, ws, edited_ws, mask).clamp(-1, 1)]
                moved = marks_in_box(batch_to_uint8(whole)[0], face)
                shown.append(transfer_motion(base, whole, face.landmarks, moved, [au]).clamp(-1, 1))
                rows.append([batch_to_uint8(x)[0][top:bottom, left:right] for x in shown])
                labels.append(f"seed {seed}\nAU{au} {args.amount:+g}")
    if not rows:
        print("error: no face found in any seed", file=sys.stderr)
        return 1
    columns = ["face", f"local edit ({args.method})", "motion transfer"]
    save_image(args.out, labelled_grid(rows, row_labels=labels, col_labels=columns, cell=256), value_range=(0, 255))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
