"""Calibrating the AU mapper's input gains with an AU estimator (behind ``stylerig-au calibrate-mapper``).

The estimator is OpenFace by default, or the student detector the mapper was trained with
(``--estimator student``, :func:`stylerig_au.edit.learn.student_measure`), which leaves OpenFace an
independent judge of the calibrated mapper.

A trained mapper stops short of the asked change: its keep, outside and identity losses pull
against the target loss. On held-out faces both the student it was trained with and OpenFace read
the bundled mapper's +2 edits as about +1.2 to +1.4 on average, from +0.3 to +2.3 depending on the AU
(measured in commit 1ded5f5, ``experiments/RESULTS.md``). The linear directions were rescaled the same way when
they were learned (:mod:`stylerig_au.edit.learn`).

For each AU, :func:`calibrate_mapper` renders ``+step`` edits of a few probe latents, measures them,
and sets the AU's gain g (the mapper then sees ``g · ΔAU``) so that the change measures ``step``:
``g ← g · step / achieved``, repeated for a few rounds because the response is not quite linear,
and kept within ``clamp`` (a weak AU is pushed at most that far past what the mapper was trained
for, instead of breaking the face). Only the 17 gains change; the network stays as trained.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from stylerig_au.edit.learn import measure_edit, nan_mean
from stylerig_au.edit.mapper import AUMapper
from stylerig_au.errors import StylerigError
from stylerig_au.fileio import read_json

STEP = 2.0  # AU units of the measured test edits
GAIN_CLAMP = (0.5, 2.5)
NOT_MOVED = 0.05  # a measured change below this counts as "did not move": the gain goes to the clamp's top


@dataclass
class AUCalibration:
    """What was measured for one AU (JSON-friendly). Round r edited with ``gains[r]`` and measured
    ``achieved[r]`` on the AU and ``drift[r]`` (mean |change| of the other AUs); ``gain`` is the final one."""

    au: int
    gains: list[float] = field(default_factory=list)
    achieved: list[float] = field(default_factory=list)
    drift: list[float] = field(default_factory=list)
    gain: float = 1.0
    clamped: bool = False


def next_gain(gain: float, achieved: float, step: float = STEP, clamp: tuple[float, float] = GAIN_CLAMP) -> tuple[float, bool]:
    """The gain that would turn a measured change ``achieved`` (at ``gain``) into ``step``, assuming the
    change is proportional to the gain; returns (gain within ``clamp``, whether the clamp limited it)."""
    wanted = gain * step / achieved if math.isfinite(achieved) and achieved > NOT_MOVED else math.inf
    new = min(max(wanted, clamp[0]), clamp[1])
    return float(new), bool(new != wanted)


def calibrate_mapper(mapper: AUMapper, measure: Callable[[torch.Tensor], np.ndarray], probe_ws: torch.Tensor, *,
                     measured_aus: list[int], step: float = STEP, rounds: int = 2,
                     clamp: tuple[float, float] = GAIN_CLAMP, cache: str | os.PathLike | None = None,
                     progress: bool = True, log: Callable[[str], None] | None = None) -> list[AUCalibration]:
    """Measure the mapper's ``+step`` edits on ``probe_ws`` and set its input gains (in place).

    Args:
        mapper: the AU mapper; each AU starts from its current gain (1 for a mapper never calibrated).
        measure: ws [P, num_ws, w_dim] -> AU intensities [P, K] (NaN rows where no face is found),
            columns in ``measured_aus`` order (:func:`stylerig_au.edit.learn.openface_measure`; a
            :class:`~stylerig_au.edit.learn.LocalMeasure` of ``probe_ws`` measures local edits).
        probe_ws: W+ latents [P, num_ws, w_dim] on the mapper's device, none of them held out for evaluation.
        rounds: measurements per AU (each one renders P edits).
        cache: a JSON file of finished AUs; a rerun with the same mapper and settings skips them (resume).
    Returns:
        One :class:`AUCalibration` per mapper AU, in ``mapper.aus`` order.
    Raises:
        StylerigError: a mapper AU that ``measure`` does not report, or bad ``rounds`` / ``clamp`` / ``step``.
    """
    from tqdm import tqdm

    missing = [a for a in mapper.aus if a not in measured_aus]
    if missing:
        raise StylerigError(f"the AU measure does not report AU {', '.join(map(str, missing))}, which the mapper edits")
    if rounds < 1 or not 0 < clamp[0] <= 1 <= clamp[1] or not step > 0:
        raise StylerigError(f"need rounds >= 1, 0 < clamp low <= 1 <= clamp high and step > 0; got {rounds}, {clamp}, {step}")
    cache_path = Path(cache) if cache is not None else None
    key = (f"{getattr(mapper, 'generator', '?')}|{getattr(mapper, 'created', None)}|probes={len(probe_ws)}"
           f"|step={step}|rounds={rounds}|clamp={clamp[0]},{clamp[1]}")
    start_gains = list(mapper.input_gains().values())
    key += "|start=" + ",".join(f"{g:.4f}" for g in start_gains)
    stored = read_json(cache_path, "calibration cache") if cache_path is not None and cache_path.is_file() else {}
    stored = stored if isinstance(stored, dict) else {}
    done: dict[str, dict] = stored.get(key, {}) if isinstance(stored.get(key), dict) else {}
    mapper.set_input_gain(torch.ones(len(mapper.aus)))  # measuring passes the gain explicitly
    device = probe_ws.device
    base = measure(probe_ws) if any(str(a) not in done for a in mapper.aus) else None
    results = []
    for i, au in enumerate(tqdm(mapper.aus, desc="calibrate AU mapper", unit="AU", disable=not progress)):
        if str(au) in done:
            results.append(AUCalibration(**done[str(au)]))
            continue
        col = measured_aus.index(au)
        res = AUCalibration(au=au)
        gain = min(max(start_gains[i], clamp[0]), clamp[1])
        for _ in range(rounds):
            delta = torch.zeros(len(probe_ws), len(mapper.aus), device=device)
            delta[:, i] = step * gain
            with torch.no_grad():
                edited = probe_ws + mapper(probe_ws, delta).to(probe_ws.dtype)
            change = measure_edit(measure, edited, au) - base
            res.gains.append(gain)
            res.achieved.append(nan_mean(change[:, col]))
            res.drift.append(nan_mean(np.abs(np.delete(change, col, axis=1))))
            new, res.clamped = next_gain(gain, res.achieved[-1], step, clamp)
            if new == gain:  # held at the clamp: measuring again would repeat the same edit
                break
            gain = new
        res.gain = gain
        results.append(res)
        done[str(au)] = asdict(res)
        if cache_path is not None:
            from stylerig_au.fileio import atomic_write_text

            atomic_write_text(cache_path, json.dumps({key: done}, indent=1))
        if log:
            steps = ", ".join(f"x{g:.2f} -> {a:+.2f}" for g, a in zip(res.gains, res.achieved))
            log(f"AU{au:02d}: +{step:g} measured {steps}; gain {res.gain:.2f}{' (clamped)' if res.clamped else ''}")
    mapper.set_input_gain(torch.tensor([r.gain for r in results], dtype=torch.float32))
    return results


def calibration_meta(results: list[AUCalibration], **settings) -> dict:
    """The ``meta["calibration"]`` record of a calibrated mapper file: settings plus per-AU measurements."""
    return {**settings, "per_au": {str(r.au): {k: v for k, v in asdict(r).items() if k != "au"} for r in results}}
