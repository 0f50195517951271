"""SFace, our PyTorch conversion, on the development photos: parity with OpenCV, distances, speed.

For each photo of ``--faces`` (area-resized to 512², as the evaluations read identity), dlib's 68
landmarks give the 5 ArcFace points, and

- parity: OpenCV's ``FaceRecognizerSF`` (``alignCrop`` + ``feature``) against our module on the same
  OpenCV crop (``same crop``), and against our whole differentiable pipeline (our crop from the
  landmarks, :func:`stylerig_au.identity_net.warp_crops`): cosine difference of the features;
- distances: SFace cosine distance (our pipeline) and dlib's descriptor distance between each photo
  and perturbed copies of it (mirror, JPEG quality 60, Gaussian blur radius 2, ±12 grey-level noise;
  landmarks found again on each copy), and between every pair of different people; plus the rank
  correlation of the two networks' distances over all those pairs and over the different people alone;
- speed: seconds per face on this device for our module's forward pass on a 112² crop (batch 1),
  OpenCV's ``feature``, and the training loss's crop + forward + backward from a 256² image.

    python experiments/eval_sface.py                  # writes experiments/results/eval_sface_cpu.json
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from stylerig_au.diagnostics import device_label

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces")) / "celebahq-dev"
SIDE = 512


def perturbations(img: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 [H, W, 3] -> {name: perturbed copy}."""
    from PIL import Image, ImageFilter

    pil = Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=60)
    noise = np.random.default_rng(0).integers(-12, 13, img.shape)
    return {
        "mirror": np.ascontiguousarray(img[:, ::-1]),
        "jpeg60": np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")),
        "blur2": np.asarray(pil.filter(ImageFilter.GaussianBlur(2))),
        "noise12": np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8),
    }


def seconds_per_call(fn, repeat: int) -> float:
    fn()  # warm-up
    tick = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - tick) / repeat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="folder of photos (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="torch device of our module")
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per speed figure")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: experiments/results/eval_sface_<device>.json)")
    args = ap.parse_args(argv)

    import cv2
    from scipy.stats import spearmanr

    from stylerig_au import metrics, pretrained, sface
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.identity_net import SFaceIdentity
    from stylerig_au.imageio import list_images, load_image, resize, to_tensor

    device = args.device
    net = SFaceIdentity(sface.load_sface(device=device))
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(pretrained.source_archive("sface")) as zf:
        onnx = Path(tmp) / "sface.onnx"
        onnx.write_bytes(zf.read(sface.MEMBER))
        reference = cv2.FaceRecognizerSF.create(str(onnx), "")

    def feature(img: np.ndarray, pts: np.ndarray) -> torch.Tensor:
        aff = torch.as_tensor(net.crop_affine(pts), dtype=torch.float32, device=device)[None]
        with torch.no_grad():
            return net.embed(to_tensor(img).to(device), aff)

    photos = list_images([args.faces])
    faces, names, parity = [], [], []
    for path in photos:
        img = resize(load_image(path), (SIDE, SIDE))
        pts = landmarks_68(img)
        if pts is None:
            print(f"{path.name}: no face found; skipped", file=sys.stderr)
            continue
        row = np.zeros((1, 15), np.float32)
        row[0, 2:4], row[0, 4:14] = 1, sface.five_points(pts).reshape(-1)
        crop = reference.alignCrop(np.ascontiguousarray(img[..., ::-1]), row)
        expected = reference.feature(crop).reshape(-1).astype(np.float64)
        with torch.no_grad():
            same = net.net(torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1)[None].float().to(device))
        own = feature(img, pts)
        cos = [float(1 - np.dot(f.double().cpu().numpy()[0], expected) / (f.norm().item() * np.linalg.norm(expected)))
               for f in (same, own)]
        parity.append({"image": path.name, "same_crop": abs(cos[0]), "own_crop": cos[1]})
        faces.append((img, pts, own))
        names.append(path.name)

    same_rows = []
    for name, (img, pts, own) in zip(names, faces):
        for kind, copy in perturbations(img).items():
            cpts = landmarks_68(copy)
            if cpts is None:
                print(f"{name} {kind}: no face found; skipped", file=sys.stderr)
                continue
            same_rows.append({"image": name, "perturbation": kind,
                              "sface": float(net.distance(feature(copy, cpts), own)),
                              "dlib": float(metrics.identity_distance(img, copy)[0])})
    diff_rows = [{"a": names[i], "b": names[j], "sface": float(net.distance(faces[i][2], faces[j][2])),
                  "dlib": float(metrics.identity_distance(faces[i][0], faces[j][0])[0])}
                 for i, j in itertools.combinations(range(len(faces)), 2)]
    everything = same_rows + diff_rows
    rho = {name: float(spearmanr([r["sface"] for r in rows], [r["dlib"] for r in rows]).statistic)
           for name, rows in (("all_pairs", everything), ("different_people", diff_rows))}

    img, pts, _ = faces[0]
    crop = torch.rand(1, 3, sface.CROP_SIZE, sface.CROP_SIZE, device=device) * 255
    small = resize(img, (256, 256))
    aff256 = torch.as_tensor(net.crop_affine(pts * 256 / SIDE), dtype=torch.float32, device=device)[None]

    def forward() -> None:
        with torch.no_grad():
            net.net(crop)

    def loss_step() -> None:
        x = to_tensor(small).to(device).requires_grad_(True)
        net.embed(x, aff256).square().sum().backward()

    bgr = np.ascontiguousarray(np.full((112, 112, 3), 128, np.uint8))
    speed = {"forward_112": seconds_per_call(forward, args.repeat),
             "opencv_feature": seconds_per_call(lambda: reference.feature(bgr), args.repeat),
             "crop_forward_backward_256": seconds_per_call(loss_step, args.repeat)}

    print(f"parity on {len(parity)} faces: max |cos diff| same crop {max(p['same_crop'] for p in parity):.2e}, "
          f"own differentiable crop {max(p['own_crop'] for p in parity):.2e}")
    print(f"\n{'pairs':<28}{'n':>4}{'SFace min':>11}{'max':>7}{'mean':>7}{'dlib min':>10}{'max':>7}{'mean':>7}")
    groups = {f"same photo, {k}": [r for r in same_rows if r["perturbation"] == k] for k in ("mirror", "jpeg60", "blur2", "noise12")}
    groups["different people"] = diff_rows
    summary = {}
    for label, rows in groups.items():
        s, d = np.array([r["sface"] for r in rows]), np.array([r["dlib"] for r in rows])
        summary[label] = {"n": len(rows), "sface": [float(s.min()), float(s.max()), float(s.mean())],
                          "dlib": [float(d.min()), float(d.max()), float(d.mean())]}
        print(f"{label:<28}{len(rows):>4}{s.min():>11.3f}{s.max():>7.3f}{s.mean():>7.3f}{d.min():>10.3f}{d.max():>7.3f}{d.mean():>7.3f}")
    print(f"\nSpearman rank correlation SFace vs dlib: {rho['all_pairs']:.2f} over all {len(everything)} pairs, "
          f"{rho['different_people']:.2f} over the {len(diff_rows)} pairs of different people")
    print("seconds per face: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in speed.items())
          + f" (torch threads {torch.get_num_threads()})")

    report = {"device": device_label(device), "torch": torch.__version__, "opencv": cv2.__version__,
              "threads": torch.get_num_threads(), "side": SIDE, "parity": parity, "same_photo": same_rows,
              "different_people": diff_rows, "summary": summary, "spearman_sface_dlib": rho, "seconds_per_face": speed}
    tag = "cuda" if device.startswith("cuda") else "cpu"
    out = args.out or REPO / "experiments" / "results" / f"eval_sface_{tag}.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
