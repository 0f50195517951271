"""How far can the student's loss take one edit? Per-face optimisation of Δw+, scored by OpenFace.

The mapper is amortised: one small network serves every face and every AU change, trained for a few
hundred CPU steps. Its OpenFace-measured drift grows by ~0.2 per unit of achieved change
(``RESULTS.md`` §2a), and meeting the reach and drift targets together needs ≤ 0.15. This script asks
whether that limit is the amortisation or the training objective itself: for each face and AU it
starts from the mapper's ``+amount`` edit and optimises that face's Δw+ alone, for ``--steps`` Adam
steps, against the mapper's own training terms measured by the student detector
(:mod:`stylerig_au.edit.mapper_train`). This is :mod:`stylerig_au.edit.refine`, what
``stylerig-au edit --refine STEPS`` does to an edit:

* target: (student AU of the edit − clamp(student AU of the face + amount, 0, 5))²;
* keep: mean (student change of the other AUs)², weighted by ``--keep``;
* outside: LPIPS between face and edit with the edited AU's face region blacked out
  (``mapper_train.region_mask``), weighted by ``--outside``, so hair, background and colours stay;
* identity: the distance between face and edit of the face network ``--identity-net``
  (``identity_net.identity_loss``; SFace by default; runs before this option refined against dlib's
  descriptor, the network the identity column below is read with), weighted by ``--identity``;
* size: mean ((Δw+ − the mapper's Δw+) / w's spread)², weighted by ``--size``.

OpenFace never enters the optimisation; it reads the face, the mapper's edit and the optimised edit,
and the summary gives error, AUs within ±0.5, drift (mean |change| of the other AUs) and dlib
identity distance per variant, as ``eval_edits.py`` does. The student's own readings of the same
images are kept too. If the optimised edits meet the targets, a mapper can in principle (given more
capacity and training); if they do not, the student-driven objective is the limit.

    python experiments/edit_ceiling.py --mapper scal.pt --faces 3 --steps 20

``--also-at 10 30`` also reads the edit after 10 and 30 steps of the same run (variants
``optimised_10``, ``optimised_30``; ``--steps`` is then the run's length only if it is the largest),
so one run shows how reach, drift and identity move with the number of steps.

``--local`` refines and reads each edit as a local edit (kept to its AU's face region inside the
generator, as ``stylerig-au edit`` renders by default; :mod:`stylerig_au.edit.local`), the mapper's
start too; identity is then measured on those renders.

A face's results are saved as soon as it is done; rerun with ``--resume`` to continue after an
interruption. Writes ``experiments/results/edit_ceiling_<device>.json`` and a PNG grid (for the first
two faces run in this invocation: a row of mapper edits, then a row of optimised edits).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eval_edits import add_face_set_arguments, au_columns_grid, describe_mapper  # experiments/ is on sys.path when a script runs from it
from stylerig_au.au.geometry import MOVED_IOD
from stylerig_au.edit.refine import RefineSettings
from stylerig_au.identity_net import IDENTITY_NETS

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("mapper", "optimised")


def summarise(changes: np.ndarray, ident: np.ndarray, aus: list[int], measured: list[int], amount: float,
              motion: np.ndarray | None = None) -> dict:
    """changes [face, edited AU (``aus``), measured AU (``measured``)], ident [face, edited AU] -> error,
    AUs within ±0.5, drift (mean |change| of all the other measured AUs), identity; with ``motion`` [face,
    edited AU] (dlib's landmark motion of each AU's feature, IOD units) its mean per AU and the AUs whose
    feature moved the AU's way by more than ``MOVED_IOD`` on average (the geometric judge)."""
    cols = [measured.index(a) for a in aus]
    achieved = np.array([np.nanmean(changes[:, i, c]) for i, c in enumerate(cols)])
    drift = np.array([np.nanmean(np.abs(np.delete(changes[:, i], c, axis=1))) for i, c in enumerate(cols)])
    return {"mean_achieved": float(achieved.mean()), "mean_abs_error": float(np.mean(np.abs(achieved - amount))),
            "within_0.5": int(np.sum(np.abs(achieved - amount) <= 0.5)), "mean_drift": float(drift.mean()),
            "drift_per_unit": float(drift.mean() / max(achieved.mean(), 1e-6)), "mean_identity": float(np.nanmean(ident)),
            "per_au": {str(a): {"achieved": float(achieved[i]), "drift": float(drift[i]),
                                "identity": float(np.nanmean(ident[:, i])),
                                **({"geometry_motion": float(np.nanmean(motion[:, i]))} if motion is not None else {})}
                       for i, a in enumerate(aus)},
            **({"geometry_moved": int(np.sum(np.nanmean(motion, axis=0) > MOVED_IOD))} if motion is not None else {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapper", default=None, help="mapper file to start from (default: the bundled one)")
    ap.add_argument("--aus", type=int, nargs="+", default=None, help="AUs to edit (default: all the mapper's)")
    ap.add_argument("--student", default=None, help="student detector the refinement runs against, and the 'student' reader (default: the bundled one)")
    d = RefineSettings()
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--lr", type=float, default=d.lr, help="Adam step size, in units of w's spread")
    ap.add_argument("--keep", type=float, default=d.keep)
    ap.add_argument("--outside", type=float, default=d.outside)
    ap.add_argument("--identity", type=float, default=d.identity)
    ap.add_argument("--identity-net", choices=list(IDENTITY_NETS), default=d.identity_net,
                    help="face network of the identity term (the identity column is read with dlib)")
    ap.add_argument("--size", type=float, default=d.size)
    ap.add_argument("--colour", type=float, default=d.colour)
    ap.add_argument("--geometry", type=float, default=d.geometry,
                    help="weight of the geometry term: OpenFace's geometry term of the asked AU, read through the "
                         "landmark net, must move by its natural share of the change (stylerig_au.edit.refine)")
    ap.add_argument("--landmark-net", default=None, help="landmark net of the geometry term (default: the bundled one)")
    ap.add_argument("--batch", type=int, default=6, help="edits optimised together")
    ap.add_argument("--also-at", type=int, nargs="+", default=[],
                    help="also read the edit after these step counts of the same run (variants optimised_K)")
    ap.add_argument("--resume", action="store_true", help="keep the faces already in the output's partial file")
    ap.add_argument("--colour-twin", action="store_true",
                    help="the colour term compares each edit with its motion transfer (the start edit's geometry on "
                         "the face's own skin, stylerig_au.edit.motion) instead of the unedited face")
    ap.add_argument("--local", action="store_true", help="refine and read local edits (each kept to its AU's face region)")
    add_face_set_arguments(ap)
    args = ap.parse_args(argv)
    extra = sorted(set(args.also_at) - {args.steps})
    if any(k < 0 for k in extra):  # checked before the models load
        print("error: --also-at step counts must be 0 or more", file=sys.stderr)
        return 2

    from stylerig_au.au.detect import make_detector
    from stylerig_au.au.geometry import au_motion
    from stylerig_au.au.student import load_student
    from stylerig_au.diagnostics import device_label
    from stylerig_au.edit.mapper import load_default_mapper
    from stylerig_au.edit.mapper_train import to_side
    from stylerig_au.edit.local import MASK_SIDE, face_landmarks, find_face, region_mask, render_local
    from stylerig_au.edit.motion import marks_in_box, transfer_motion
    from stylerig_au.edit.refine import EditRefiner
    from stylerig_au.fileio import atomic_write_text
    from stylerig_au.identity_net import load_identity_net
    from stylerig_au.imageio import batch_to_uint8, save_image
    from stylerig_au.metrics import identity_distance
    from stylerig_au.models import load_generator, seed_ws
    from stylerig_au.perceptual import load_lpips
    from stylerig_au.samples import label_images

    device = args.device
    G = load_generator(device=device)
    mapper = load_default_mapper(G, args.mapper, device=device)
    student = load_student(args.student, device=device).net.eval()
    openface = make_detector("openface").to(device)
    aus = args.aus or list(mapper.aus)
    unknown = [a for a in aus if a not in mapper.aus]
    if unknown:
        print(f"error: the mapper does not edit AU {', '.join(map(str, unknown))}; choose from {mapper.aus}", file=sys.stderr)
        return 2
    variants = (*VARIANTS, *(f"optimised_{k}" for k in extra))
    measured = list(mapper.aus)  # every AU is read, so drift is over all the others, edited or not
    m_cols = [measured.index(a) for a in aus]
    s_cols = torch.tensor([list(student.aus).index(a) for a in measured], device=device)
    of_cols = [list(openface.aus).index(a) for a in measured]
    settings = RefineSettings(steps=args.steps, lr=args.lr, keep=args.keep, outside=args.outside,
                              identity=args.identity, size=args.size, colour=args.colour, geometry=args.geometry,
                              identity_net=args.identity_net)
    reader = None
    if args.geometry > 0:
        from stylerig_au.au.landmark_net import load_geometry_reader

        reader = load_geometry_reader(args.landmark_net, device=device, openface=openface)
    refiner = EditRefiner(G, student, mapper.w_std, settings, lpips=load_lpips(device=device),
                          face_net=load_identity_net(args.identity_net, device=device), geometry_reader=reader)
    out = args.out or REPO / "experiments" / "results" / f"edit_ceiling_{'cuda' if device.startswith('cuda') else 'cpu'}.json"
    partial = out.with_suffix(".partial.json")
    kept = json.loads(partial.read_text()) if args.resume and partial.exists() else {"faces": {}}
    done: dict[str, dict] = kept["faces"]
    if done and kept.get("local", False) != args.local:
        print(f"error: {partial} was made {'without' if args.local else 'with'} --local; rerun the same way or without --resume",
              file=sys.stderr)
        return 2

    def student_read(images: torch.Tensor) -> torch.Tensor:
        return student(to_side(images, 256))[:, s_cols]

    ws_all = seed_ws(G, args.seed_start, args.faces, args.psi, device)
    tiles: list[np.ndarray] = []
    shown: list[int] = []  # the seeds whose rows are in the grid
    bar = tqdm(total=args.faces * len(aus), desc="optimise edits", unit="edit")
    for f in range(args.faces):
        seed = args.seed_start + f
        ws = ws_all[f:f + 1]
        if str(seed) in done:
            bar.update(len(aus))
            continue
        with torch.no_grad():
            base = G.synthesis(ws).clamp(-1, 1)
            base_student = student_read(base)[0]
        base_u8 = batch_to_uint8(base)
        base_labels = label_images(base_u8, openface)
        base_of, base_marks = base_labels["aus"][0][of_cols], base_labels["landmarks"][:1]
        if not np.isfinite(base_of).all():
            print(f"seed {seed}: no face found by dlib; skipped", file=sys.stderr)
            bar.update(len(aus))
            continue
        base_small = F.interpolate(base, size=512, mode="area")
        marks = face_landmarks(base_u8[0]) if args.local else None
        twin_face = find_face(base_u8[0]) if args.colour_twin else None
        if args.colour_twin and twin_face is None:
            print(f"seed {seed}: no face found by dlib for the motion twins; skipped", file=sys.stderr)
            bar.update(len(aus))
            continue
        if args.local and marks is None:
            print(f"seed {seed}: no face found by dlib for the local regions; skipped", file=sys.stderr)
            bar.update(len(aus))
            continue
        record = {v: {"openface": [], "student": [], "identity": [], "geometry_motion": []} for v in variants}
        record["losses"] = []
        row_tiles = {v: [base_u8[0]] for v in variants}
        for start in range(0, len(aus), args.batch):
            idx = list(range(start, min(start + args.batch, len(aus))))
            n = len(idx)
            cols = torch.tensor([m_cols[i] for i in idx], device=device)
            delta = torch.zeros(n, len(measured), device=device)
            delta[torch.arange(n), cols] = args.amount
            wsn = ws.repeat(n, 1, 1)
            with torch.no_grad():
                start_step = mapper(wsn, delta)
            change = torch.zeros(n, len(refiner.aus), device=device)
            change[torch.arange(n), torch.tensor([refiner.aus.index(aus[i]) for i in idx])] = args.amount
            masks = None if marks is None else torch.from_numpy(np.stack(
                [region_mask(marks, [aus[i]], MASK_SIDE, G.resolution) for i in idx]))[:, None].to(device)

            def show(step: torch.Tensor) -> torch.Tensor:
                return (G.synthesis(wsn + step) if masks is None else render_local(G, wsn, wsn + step, masks)).clamp(-1, 1)

            def on_step(_: int, losses: dict[str, float]) -> None:
                record["losses"].append(losses)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k != "size"})
            twins = None
            if twin_face is not None:
                with torch.no_grad():
                    start_img = G.synthesis(wsn + start_step).clamp(-1, 1)
                twins = torch.cat([transfer_motion(base, start_img[k:k + 1], twin_face.landmarks,
                                                   marks_in_box(batch_to_uint8(start_img[k:k + 1])[0], twin_face), [aus[i]])
                                   for k, i in enumerate(idx)]).clamp(-1, 1)
            path = refiner.refine_path(wsn, start_step, change, [args.steps, *extra], on_step=on_step, masks=masks,
                                       colour_reference=twins)
            steps_of = {"mapper": start_step, "optimised": path[args.steps], **{f"optimised_{k}": path[k] for k in extra}}
            for v, step in steps_of.items():
                with torch.no_grad():
                    img = show(step)
                    record[v]["student"].extend((student_read(img) - base_student[None]).cpu().tolist())
                img_u8 = batch_to_uint8(img)
                labels = label_images(img_u8, openface)
                record[v]["openface"].extend((labels["aus"][:, of_cols] - base_of[None]).tolist())
                record[v]["geometry_motion"].extend(
                    float(au_motion(base_marks, labels["landmarks"][k:k + 1], aus[i])[0]) for k, i in enumerate(idx))
                record[v]["identity"].extend(identity_distance(base_small.expand(n, -1, -1, -1),
                                                               F.interpolate(img, size=512, mode="area")).tolist())
                row_tiles[v].extend(img_u8)
            bar.update(n)
        done[str(seed)] = record
        atomic_write_text(partial, json.dumps({"faces": done, "local": args.local}) + "\n")
        if len(tiles) < 2 * len(VARIANTS) * (len(aus) + 1):  # the grid shows the first 2 faces run this time
            shown.append(seed)
            for v in VARIANTS:  # the grid keeps two rows per face: the mapper's and the --steps edits
                tiles.extend(row_tiles[v])
    bar.close()

    faces = sorted(done)
    summary = {}
    print(f"{'variant':<12} {'reader':<9} {'achieved':>8} {'error':>6} {'within':>7} {'drift':>6} {'per unit':>8} {'identity':>9}")
    for v in (v for v in variants if all(v in done[s] for s in faces)):
        ident = np.array([done[s][v]["identity"] for s in faces], dtype=float)
        summary[v] = {}
        for reader in ("openface", "student"):
            ch = np.array([done[s][v][reader] for s in faces], dtype=float)
            motion = (np.array([done[s][v]["geometry_motion"] for s in faces], dtype=float)
                      if all("geometry_motion" in done[s][v] for s in faces) else None)
            s = summary[v][reader] = summarise(ch, ident, aus, measured, args.amount, motion)
            print(f"{v:<12} {reader:<9} {s['mean_achieved']:8.2f} {s['mean_abs_error']:6.2f} {s['within_0.5']:>4d}/{len(aus)} "
                  f"{s['mean_drift']:6.2f} {s['drift_per_unit']:8.3f} {s['mean_identity']:9.2f}")
    grid = out.with_suffix(".png")
    if tiles:
        names = [f"{s}\n{v}" for s in shown for v in VARIANTS]  # seed, then which edit
        save_image(grid, au_columns_grid(tiles, aus, args.amount, row_labels=names), value_range=(0, 255))
    result = {"device": device_label(device), "torch": torch.__version__, "generator": G.name,
              **describe_mapper(mapper), "student": args.student or "bundled student-au-detector",
              "landmark_net": (args.landmark_net or "bundled landmark-net") if args.geometry > 0 else None,
              "amount": args.amount, "psi": args.psi, "local": args.local, "colour_twin": args.colour_twin, "seeds": [int(s) for s in faces], "aus": aus, "measured": measured,
              "optimisation": {**asdict(settings), "batch": args.batch, "also_at": extra},
              "summary": summary, "faces": done,
              "command": " ".join(["python", "experiments/" + Path(sys.argv[0]).name, *sys.argv[1:]])}
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"-> {out}, {grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
