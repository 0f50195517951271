"""The student AU detector against OpenFace 2.2 (its teacher): agreement on held-out faces, and speed.

* Held-out generator samples: every sample of the dataset whose seed is at or above the first
  held-out seed recorded in the student file (never trained on), OpenFace labels from the dataset.
* Real photos (optional): the aligned CelebA-HQ development faces and the astronaut; both detectors
  get the same dlib landmarks (OpenFace fits them; the student aligns the face from them).
* Speed: faces/s of the student on aligned 256² float faces, at batch 1 and 64, per thread count
  (and on the GPU when there is one).

Prints a table and writes ``experiments/results/eval_detector.json``.

    python experiments/eval_detector.py --data /work/data/au-samples-msg [--student FILE] [--threads 1 2] [--heldout-from SEED]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from stylerig_au.au.student import load_student
from stylerig_au.au.student_train import agreement
from stylerig_au.fileio import atomic_write_text
from stylerig_au.samples import load_samples

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FACES = Path(os.environ.get("STYLERIG_AU_FACES", REPO.parent / "shared" / "faces"))


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess), with the number of CPUs."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()} ({os.cpu_count()} cpus)"


def faces_per_second(student, batch: int, device: str, seconds: float = 3.0) -> float:
    """Aligned float [batch, 3, 256, 256] faces scored per second (best of repeated timed runs)."""
    x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    student.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        for _ in range(3):
            student(x)
        sync()
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            student(x)
            sync()
            best = min(best, time.perf_counter() - t)
    student.to("cpu")
    return batch / best


def real_faces(student, faces: Path) -> dict:
    """OpenFace and the student on the celebahq-dev faces and the astronaut (same dlib landmarks)."""
    from skimage import data

    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.landmarks import landmarks_68
    from stylerig_au.imageio import list_images, load_image

    files = list_images([faces / "celebahq-dev"]) if (faces / "celebahq-dev").is_dir() else []
    photos = [(p.name, load_image(p)) for p in files] + [("astronaut", data.astronaut())]
    named, images, marks = [], [], []
    for name, image in photos:
        lm = landmarks_68(image)
        if lm is not None:
            named.append(name)
            images.append(image)
            marks.append(lm)
    openface = make_detector("openface")
    teacher = openface.predict_photos(images, marks)
    pred = student.predict_photos(images, marks)
    res = agreement(pred, teacher, student.aus)
    res["faces"] = named
    res["per_face"] = {n: {f"AU{a:02d}": [round(float(t), 3), round(float(p), 3)] for a, t, p in zip(student.aus, trow, prow)}
                       for n, trow, prow in zip(named, teacher, pred)}
    return res


def table(title: str, res: dict) -> str:
    lines = [f"{title}: {res['n']} faces; mean r {res['mean_r']:.3f} over {len(res['varying_aus'])} AUs with label std > 0.1; "
             f"mean MAE {res['mean_mae']:.3f}", f"{'AU':>5} {'r':>7} {'MAE':>6} {'std':>6} {'mean':>6}"]
    for au, v in res["per_au"].items():
        lines.append(f"{au:>5} {v['r']:7.3f} {v['mae']:6.3f} {v['label_std']:6.3f} {v['label_mean']:6.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the AU sample dataset the student was trained on")
    ap.add_argument("--student", type=Path, default=None, help="student file (default: the registry's)")
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="development photos (celebahq-dev/); '' to skip")
    ap.add_argument("--heldout-from", type=int, default=None,
                    help="score the samples from this seed on (default: the first held-out seed in the student file); "
                         "for a student fine-tuned on other data, e.g. 5440, the first student's held-out faces")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "eval_detector.json")
    args = ap.parse_args()

    student = load_student(args.student)
    first_held = int(student.info["heldout_seeds"][0]) if args.heldout_from is None else args.heldout_from
    samples = load_samples(args.data, with_images=True).valid()
    held = samples.seeds >= first_held
    if not held.any():
        raise SystemExit(f"{args.data}: no samples with seed >= {first_held} (the held-out seeds)")
    pred = student.predict_aligned(samples.images[held])
    synthetic = agreement(pred, samples.aus[held].numpy(), student.aus)
    synthetic["seeds"] = [int(samples.seeds[held].min()), int(samples.seeds[held].max())]
    print(table(f"held-out generator samples (seeds {synthetic['seeds'][0]}-{synthetic['seeds'][1]})", synthetic))

    real = None
    if str(args.faces) and args.faces.is_dir():
        real = real_faces(student, args.faces)
        print(table("real photos (celebahq-dev + astronaut), student vs OpenFace", real))
        astro = real["per_face"].get("astronaut")
        if astro:
            print("astronaut [OpenFace, student]: " + ", ".join(f"{k} {v}" for k, v in astro.items() if k in ("AU06", "AU12", "AU25")))

    speed = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in (1, 64):
            fps = faces_per_second(student, batch, "cpu")
            speed.append({"device": "cpu", "threads": threads, "batch": batch, "faces_per_s": round(fps, 1)})
            print(f"cpu, {threads} thread(s), batch {batch:2d}: {fps:8.1f} faces/s")
    if torch.cuda.is_available():
        for batch in (1, 64):
            fps = faces_per_second(student, batch, "cuda")
            speed.append({"device": torch.cuda.get_device_name(), "batch": batch, "faces_per_s": round(fps, 1)})
            print(f"{torch.cuda.get_device_name()}, batch {batch:2d}: {fps:8.1f} faces/s")

    result = {
        "what": "student AU detector vs OpenFace 2.2 (stylerig_au estimator): agreement and speed",
        "student": str(args.student or "registry: student-au-detector"),
        "student_params": sum(p.numel() for p in student.net.parameters()),
        "device": cpu_name() + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heldout_generator_samples": synthetic,
        "real_photos": real,
        "speed": speed,
        "speed_input": "aligned float faces [N, 3, 256, 256] in [-1, 1] (crop + resize to the student's input included)",
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
