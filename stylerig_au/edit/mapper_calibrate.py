"""Calibrating the AU mapper's input gains with the OpenFace estimator (behind ``stylerig-au calibrate-mapper``).

A trained mapper stops short of the asked change: its keep, outside and identity losses pull
against the target loss. On held-out faces both the student it was trained with and OpenFace read
the bundled mapper's +2 edits as about +1.2 to +1.4 on average, from +0.3 to +2.3 depending on the AU
(``experiments/student_vs_openface_edits.py``). The linear directions were rescaled the same way when
they were learned (:mod:`stylerig_au.edit.learn`).

For each AU, :func:`calibrate_mapper` renders ``+step`` edits of a few probe latents, measures them,
and sets the AU's gain g (the mapper then sees ``g · ΔAU``) so that the change measures ``step``:
``g ← g · step / achieved``, repeated for a few rounds because the response is not quite linear,
and kept within ``clamp`` (a weak AU is pushed at most that far past what the mapper was trained
for, instead of breaking the face). Only the 17 gains change; the network stays as trained.

Gains fix reach, not drift: an edit of one AU also moves the AUs the face moves with it (AU6 raises
AU7 and AU12, AU1 raises AU2, AU17 closes the lips against AU25). :func:`decouple_mapper` measures
that coupling (the response of every AU to each AU's request) and sets the mapper's request mix so
that asking for one AU also asks for a bounded opposite change of the AUs it drags along
(:func:`mix_for_response`, a ridge solve). The network and the gains stay as they are.
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

from stylerig_au.edit.learn import nan_mean
from stylerig_au.edit.mapper import AUMapper
from stylerig_au.errors import StylerigError

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
            columns in ``measured_aus`` order (:func:`stylerig_au.edit.learn.openface_measure`).
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
    stored = json.loads(cache_path.read_text()) if cache_path is not None and cache_path.is_file() else {}
    done: dict[str, dict] = stored.get(key, {}) if isinstance(stored.get(key), dict) else {}
    if mapper.has_input_mix():  # the mix was measured with the old gains
        mapper.set_input_mix(None)
        if log:
            log("the mapper's decoupling (input mix) is reset: decouple again after the gains")
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
            change = measure(edited) - base
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


# ----------------------------------------------------------------------------- decoupling

DECOUPLE_STRENGTH = 1.0  # ridge weight λ: 0 inverts the measured coupling exactly, larger stays nearer the plain request
MIX_LIMIT = 1.0  # largest |off-diagonal| input_mix entry: at most this much of an opposite request per unit asked
MIX_DIAGONAL = (0.5, 1.5)


def mix_for_response(response: np.ndarray, strength: float = DECOUPLE_STRENGTH, limit: float = MIX_LIMIT,
                     diagonal: tuple[float, float] = MIX_DIAGONAL) -> np.ndarray:
    """The request mix D [A, A] that makes a mapper with measured ``response`` J edit one AU at a time.

    ``response`` [A, A]: column k is the mean measured change of every AU (rows) per unit request of
    AU k with the identity mix (about 1 on the diagonal after gain calibration; the off-diagonal
    entries are the drift). Column k of D is the request v that minimises
    ``|J v − e_k|² + strength · |v − e_k|²`` (reach AU k alone, without asking for much else):
    ``D = (JᵀJ + λI)⁻¹ (Jᵀ + λI)``. Entries are then kept within ``limit`` off the diagonal and
    ``diagonal`` on it, so a pair of AUs the generator cannot separate gets a bounded opposite request
    instead of a runaway one. Returns float64 [A, A].
    """
    J = np.asarray(response, dtype=np.float64)
    if J.ndim != 2 or J.shape[0] != J.shape[1] or not np.isfinite(J).all():
        raise StylerigError(f"the measured AU response must be a finite square matrix, got shape {list(J.shape)}")
    if strength < 0 or limit < 0:
        raise StylerigError(f"need strength >= 0 and limit >= 0; got {strength}, {limit}")
    eye = np.eye(len(J))
    mix = np.linalg.solve(J.T @ J + strength * eye, J.T + strength * eye)
    off = np.clip(mix, -limit, limit) * (1 - eye)
    return off + np.diag(np.clip(np.diag(mix), *diagonal))


@dataclass
class DecoupleRound:
    """One measurement of every AU's ``+step`` edit with the mix of that round (JSON-friendly).

    ``response[j][k]``: mean measured change of mapper AU j per unit request of AU k; ``achieved`` /
    ``drift``: per AU (mapper order), the edited AU's mean change and the mean |change| of all other
    measured AUs."""

    mix: list[list[float]]
    response: list[list[float]] = field(default_factory=list)
    achieved: list[float] = field(default_factory=list)
    drift: list[float] = field(default_factory=list)


def measure_response(mapper: AUMapper, measure: Callable[[torch.Tensor], np.ndarray], probe_ws: torch.Tensor, base: np.ndarray, *,
                     measured_aus: list[int], step: float = STEP, done: dict | None = None, save: Callable[[dict], None] | None = None,
                     progress: bool = True) -> DecoupleRound:
    """Measure the ``+step`` edit of each mapper AU on ``probe_ws`` with the mapper's current mix and gains.

    ``base``: ``measure(probe_ws)`` [P, K]. ``done``: columns already measured ({AU: [change per
    measured AU]}), reused; ``save(done)`` is called after each new AU (resume). Returns the round.
    """
    from tqdm import tqdm

    done = dict(done or {})
    cols = [measured_aus.index(a) for a in mapper.aus]
    a = len(mapper.aus)
    response = np.zeros((a, a))
    rnd = DecoupleRound(mix=mapper.input_mix.cpu().tolist())
    for k, au in enumerate(tqdm(mapper.aus, desc="measure AU coupling", unit="AU", disable=not progress)):
        if str(au) not in done:
            delta = torch.zeros(len(probe_ws), a, device=probe_ws.device)
            delta[:, k] = step
            with torch.no_grad():
                edited = probe_ws + mapper(probe_ws, delta).to(probe_ws.dtype)
            change = measure(edited) - base
            done[str(au)] = [nan_mean(change[:, c]) for c in range(change.shape[1])]
            if save is not None:
                save(done)
        mean_change = np.asarray(done[str(au)], dtype=np.float64)
        response[:, k] = mean_change[cols] / step
        rnd.achieved.append(float(mean_change[cols[k]]))
        rnd.drift.append(float(np.abs(np.delete(mean_change, cols[k])).mean()))
    rnd.response = response.tolist()
    return rnd


def decouple_mapper(mapper: AUMapper, measure: Callable[[torch.Tensor], np.ndarray], probe_ws: torch.Tensor, *,
                    measured_aus: list[int], step: float = STEP, rounds: int = 1, strength: float = DECOUPLE_STRENGTH,
                    limit: float = MIX_LIMIT, cache: str | os.PathLike | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> list[DecoupleRound]:
    """Set the mapper's request mix (in place) so that a one-AU edit moves the other AUs less.

    Each round measures every AU's ``+step`` edit on ``probe_ws`` with the current mix (17 × P
    renders, read by ``measure``), turns that into the response per unit of plain request
    (``J = M · D⁻¹``) and sets the mix to :func:`mix_for_response` of it. Gains stay as they are:
    calibrate them first. The last mix is not measured here (evaluate on held-out faces).

    Args:
        measure, probe_ws, measured_aus: as for :func:`calibrate_mapper`.
        cache: a JSON file of finished measurements; a rerun with the same mapper and settings reuses them.
    Returns:
        The measured rounds, in order.
    Raises:
        StylerigError: a mapper AU that ``measure`` does not report, or rounds < 1.
    """
    missing = [a for a in mapper.aus if a not in measured_aus]
    if missing:
        raise StylerigError(f"the AU measure does not report AU {', '.join(map(str, missing))}, which the mapper edits")
    if rounds < 1:
        raise StylerigError(f"need rounds >= 1, got {rounds}")
    cache_path = Path(cache) if cache is not None else None
    stored = json.loads(cache_path.read_text()) if cache_path is not None and cache_path.is_file() else {}
    base = None
    out = []
    for r in range(rounds):
        mix_now = mapper.input_mix.cpu().numpy().astype(np.float64)
        key = (f"{getattr(mapper, 'generator', '?')}|{getattr(mapper, 'created', None)}|probes={len(probe_ws)}|step={step}"
               f"|gains=" + ",".join(f"{g:.4f}" for g in mapper.input_gains().values())
               + "|mix=" + ",".join(f"{v:.4f}" for v in mix_now.flatten()))

        def save(done: dict, key: str = key) -> None:
            if cache_path is not None:
                from stylerig_au.fileio import atomic_write_text

                stored[key] = done
                atomic_write_text(cache_path, json.dumps(stored))

        done = stored.get(key) if isinstance(stored.get(key), dict) else {}
        if base is None and len(done) < len(mapper.aus):
            base = measure(probe_ws)
        rnd = measure_response(mapper, measure, probe_ws, base, measured_aus=measured_aus, step=step, done=done,
                               save=save, progress=progress)
        out.append(rnd)
        plain = np.asarray(rnd.response) @ np.linalg.inv(mix_now)  # response per unit of plain (unmixed) request
        mapper.set_input_mix(torch.tensor(mix_for_response(plain, strength, limit), dtype=torch.float32))
        if log:
            log(f"decouple round {r + 1}: mean measured +{step:g} edit {np.mean(rnd.achieved):+.2f}, "
                f"mean drift {np.mean(rnd.drift):.3f}; mix set (largest off-diagonal "
                f"{np.abs(mapper.input_mix.cpu().numpy() - np.diag(np.diag(mapper.input_mix.cpu().numpy()))).max():.2f})")
    return out


def decouple_meta(measured: list[DecoupleRound], **settings) -> dict:
    """The ``meta["decoupling"]`` record of a decoupled mapper file: settings plus what each round measured (``measured``)."""
    return {**settings, "measured": [{"achieved": r.achieved, "drift": r.drift, "response": r.response} for r in measured]}
