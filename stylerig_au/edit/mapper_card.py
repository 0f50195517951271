"""The model card of a trained AU mapper: what it is, how it was trained, and its training losses."""

from __future__ import annotations

import os
from pathlib import Path

from stylerig_au.edit.mapper import MapperConfig
from stylerig_au.edit.mapper_train import LOSS_NAMES, SEED_STRIDE, TRAIN_SEED_START

# what each MapperTrainSettings.identity_net optimised (settings saved before the option: 'lpips')
_IDENTITY_TERMS = {"lpips": "LPIPS-VGG feature proxy", "sface": "SFace cosine distance", "dlib": "dlib descriptor distance"}


def write_mapper_card(mapper_file: str | os.PathLike, generator: str, meta: dict, config: MapperConfig) -> Path:
    """Write ``<mapper stem>.md`` beside the mapper file; returns its path."""
    from stylerig_au.fileio import atomic_write_text

    mapper_file = Path(mapper_file)
    s = meta.get("settings", {})
    first, last = meta.get("losses_first", {}), meta.get("losses_last", {})
    lines = [
        f"# AU-conditioned mapper for `{generator}`",
        "",
        f"- File: `{mapper_file.name}` (format `stylerig-au/au-mapper`, read with `stylerig_au.edit.mapper.load_mapper`).",
        f"- Made by: `{meta.get('command', 'stylerig-au train-mapper')}` on {meta.get('device')} "
        f"({meta.get('world', 1)} process(es)); this run: {meta.get('steps_this_run')} steps in {meta.get('seconds', 0) / 60:.1f} min.",
        *([_init_line(meta["init"])] if meta.get("init") else []),
        f"- Architecture: Δw+ = Σ ΔAU_k · L_k + R(w, ΔAU) − R(w, 0) on {len(config.slots)} editable W+ slots "
        f"({', '.join(map(str, config.slots))}); L starts as the linear directions (created {meta.get('directions_created')}), "
        f"R is an MLP (w and ΔAU/{config.delta_scale} through separate input layers, {config.depth} x {config.hidden}, bottleneck {config.bottleneck}) whose output layer starts at zero.",
        f"- Data: {s.get('steps')} steps x {s.get('batch')} faces x {meta.get('world', 1)} process(es) of generator latents "
        f"(truncation psi {s.get('psi')}, seeds from {TRAIN_SEED_START + int(s.get('seed') or 0) * SEED_STRIDE:,}, per-slot jitter {s.get('jitter')}), each with 1-{s.get('max_aus')} "
        f"AU changes of {s.get('delta_min')}-{s.get('delta_max')} ({s.get('negative', 0):.0%} negative), scored at {s.get('image_size')}².",
        f"- Supervision: the student AU detector ({meta.get('student')}); weights target {s.get('w_target')}, keep {s.get('w_keep')}, "
        f"outside-LPIPS {s.get('w_outside')}, identity ({_IDENTITY_TERMS.get(s.get('identity_net', 'lpips'), s.get('identity_net'))}) {s.get('w_identity')}, residual size {s.get('w_size')}"
        + (f", geometry (OpenFace's geometry term through the landmark net {s.get('landmark_net') or 'bundled'}, at least each AU's natural share) "
           f"{s['w_geometry']}" if s.get("w_geometry") else "")
        + (f", distil (Δw+ of the refined edits in `{s.get('distil')}`) {s.get('w_distil')}" if s.get("w_distil") else "")
        + (f", distil-image (LPIPS + MSE to the images of the refined edits in `{s.get('distil')}`) {s.get('w_distil_image')}"
           if s.get("w_distil_image") else "")
        + (f", colour (pooled colour inside the edited region) {s['w_colour']}" if s.get("w_colour") else "") + ".",
        *([f"- Rendered as the editor shows an edit by default: each training edit blended into its face inside the edited "
           f"AUs' regions (local render), regions and identity crops from the "
           f"{'bundled landmark net' if s.get('landmarks') == 'net' else 'dlib landmarks'} of the unedited face."]
          if s.get("local") else []),
        "- Licence: Apache-2.0 like stylerig_au; the student was distilled from OpenFace 2.2 AU models, whose licence is "
        "academic / non-commercial.",
        "",
        f"Training losses (means over the first and the last {meta.get('losses_span', 20)} steps of the run; each step",
        "draws new faces and AU changes, so single steps are noisy):",
        "",
        "| loss | first steps | last steps |",
        "| --- | --- | --- |",
    ]
    for k in (*LOSS_NAMES, "total"):
        if k in first and k in last:
            lines.append(f"| {k} | {first[k]:.4f} | {last[k]:.4f} |")
    lines += calibration_lines(meta.get("calibration"))
    lines += ["", "Held-out measurements with the OpenFace estimator: `python experiments/eval_edits.py --method mapper`.", ""]
    path = mapper_file.with_suffix(".md")
    atomic_write_text(path, "\n".join(lines))
    return path


def _init_line(init: dict) -> str:
    """The card line on the mapper a fine-tuning started from (``meta["init"]``), calibrated or not."""
    made = f"`{Path(init['file']).name}` (created {init.get('created')}; made by `{init.get('command')}`"
    if init.get("calibration_command"):
        return (f"- Started from: {made}, calibrated by `{init['calibration_command']}`), a fine-tuning with its input gains "
                "kept: ΔAU is in the units the calibration set.")
    return f"- Started from: {made}; not calibrated), a fine-tuning."


def calibration_lines(calibration: dict | None) -> list[str]:
    """The card's section on the input-gain calibration (``meta["calibration"]``, measured with OpenFace or the
    student detector); none when uncalibrated."""
    if not calibration:
        return []
    per_au = calibration.get("per_au", {})
    rounds = max((len(r.get("gains", [])) for r in per_au.values()), default=0)
    step = calibration.get("step", 2.0)
    low, high = calibration.get("clamp", [0.5, 2.5])
    student = calibration.get("detector") == "student"
    judge = ("the student detector (the mapper's training supervisor; OpenFace stays independent of this mapper)"
             if student else "the OpenFace estimator")
    after = ("The network is unchanged." if student
             else "The network is unchanged; OpenFace is then no longer independent of this mapper's scale.")
    lines = [
        "", f"## Calibration with {'the student detector' if student else 'OpenFace'}", "",
        f"Made by `{calibration.get('command', 'stylerig-au calibrate-mapper')}`: +{step:g} edits"
        f"{' rendered locally (each kept to its AU face region, as `edit` renders by default)' if calibration.get('local') else ''} of "
        f"{calibration.get('probes')} probe faces (seeds from {calibration.get('probe_seed_start', 0):,}, truncation psi "
        f"{calibration.get('psi')}; not the held-out faces of the evaluations) were measured with {judge} "
        f"and each AU's input gain set so that they measure +{step:g} (gains kept within {low}-{high}). " + after,
        "",
        "| AU | " + " | ".join(f"round {r + 1}: gain → achieved (drift)" for r in range(rounds)) + " | gain |",
        "| --- | " + " | ".join("---" for _ in range(rounds)) + " | --- |",
    ]
    for au, r in sorted(per_au.items(), key=lambda kv: int(kv[0])):
        cells = [f"x{g:.2f} → {a:+.2f} ({d:.2f})" for g, a, d in zip(r["gains"], r["achieved"], r["drift"])]
        cells += [""] * (rounds - len(cells))
        lines.append(f"| AU{au} | " + " | ".join(cells) + f" | **{r['gain']:.2f}**{' (limit)' if r.get('clamped') else ''} |")
    return lines
