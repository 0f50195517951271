"""Decoupling the AU mapper: the request mix that cancels measured AU coupling (``calibrate-mapper --decouple``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.au.vocab import AU_NUMBERS
from stylerig_au.edit import AU
from stylerig_au.edit.mapper import apply_mapper, load_mapper, new_mapper, save_mapper
from stylerig_au.edit.mapper_calibrate import calibrate_mapper, decouple_mapper, mix_for_response
from stylerig_au.errors import StylerigError
from tests.test_mapper import make_dirs, sample_ws


def coupled_measure(G, mapper, coupling: np.ndarray):
    """A synthetic 'OpenFace' for an untrained (linear) mapper: recovers the per-AU coordinates u of
    Δw+ = Σ u_k L_k exactly (least squares on the mapper's linear part) and reads AU j as
    1 + Σ_k coupling[j, k] · u_k. Columns of the result are in AU_NUMBERS order; others read 1."""
    aus = list(AU_NUMBERS)
    basis = mapper.linear.detach().flatten(1).double()  # [A, E*d]
    slots = mapper.slot_index
    ref = sample_ws(G, 1)[0]
    calls = []

    def measure(ws: torch.Tensor) -> np.ndarray:
        calls.append(len(ws))
        d = (ws - ref)[:, slots].flatten(1).double()  # [P, E*d]
        coords = torch.linalg.lstsq(basis.T, d.T).solution.T.numpy()  # [P, A]
        out = np.ones((len(ws), len(aus)))
        for j, au in enumerate(mapper.aus):
            out[:, aus.index(au)] += coords @ coupling[j]
        return out

    return measure, calls


def test_mix_for_response_inverts_the_coupling_and_stays_bounded():
    J = np.array([[1.0, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(J @ mix_for_response(J, strength=0.0), np.eye(2), atol=1e-12)
    ridge = mix_for_response(J, strength=1.0)
    assert -0.5 < ridge[0, 1] < 0 and np.allclose(ridge[1, 0], 0, atol=0.1)  # a partial opposite request
    assert np.abs(J @ ridge - np.eye(2))[0, 1] < 0.5  # less drift than the plain request (0.5)
    strong = np.array([[1.0, 3.0], [0.0, 1.0]])  # a coupling the limit must bound
    assert mix_for_response(strong, strength=0.0, limit=1.0)[0, 1] == -1.0
    np.testing.assert_allclose(mix_for_response(np.eye(3)), np.eye(3))  # nothing to cancel: the plain request
    with pytest.raises(StylerigError, match="finite square"):
        mix_for_response(np.ones((2, 3)))


def test_decoupling_cancels_measured_drift_resumes_and_is_saved(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    plain = save_mapper(new_mapper(G, make_dirs(G), num_samples=256), tmp_path / "plain.pt", G.name)
    mapper = load_mapper(plain, G)  # untrained: edits are exactly linear in ΔAU
    a = mapper.aus
    coupling = np.eye(len(a))
    coupling[a.index(6), a.index(12)] = 0.5  # an AU12 edit also raises AU6 by half as much
    coupling[a.index(4), a.index(6)] = -0.3  # an AU6 edit lowers AU4
    measure, calls = coupled_measure(G, mapper, coupling)
    probes = sample_ws(G, 4)
    cols = [list(AU_NUMBERS).index(x) for x in a]

    def change(m, au):
        return (measure(apply_mapper(m, probes, AU(au, 2.0), G.slots)) - measure(probes))[:, cols].mean(axis=0)

    assert change(mapper, 12)[a.index(6)] == pytest.approx(1.0, abs=1e-4)  # the drift before
    cache = tmp_path / "dec.json"
    rounds = decouple_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), strength=0.0, cache=cache, progress=False)
    assert len(rounds) == 1 and rounds[0].achieved[a.index(12)] == pytest.approx(2.0, abs=1e-4)
    np.testing.assert_allclose(np.asarray(rounds[0].response), coupling, atol=1e-4)
    assert mapper.has_input_mix()
    for au in (12, 6, 4):  # each edit now moves its AU alone
        np.testing.assert_allclose(change(mapper, au), 2.0 * np.eye(len(a))[a.index(au)], atol=1e-3)
    assert torch.equal(apply_mapper(mapper, probes, AU(12, 0.0), G.slots), probes)  # zero is still a no-op
    # the mix lives in the file
    back = load_mapper(save_mapper(mapper, tmp_path / "m.pt", G.name), G)
    torch.testing.assert_close(back.input_mix, mapper.input_mix)
    # decoupling the same file again reads its measurements from the cache
    again = load_mapper(plain, G)
    n = len(calls)
    decouple_mapper(again, measure, probes, measured_aus=list(AU_NUMBERS), strength=0.0, cache=cache, progress=False)
    assert len(calls) == n
    torch.testing.assert_close(again.input_mix, mapper.input_mix)
    # recalibrating the gains drops a mix that was measured with the old ones
    calibrate_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=1, progress=False)
    assert not mapper.has_input_mix()
    with pytest.raises(StylerigError, match="4x4 input mix|3x3 input mix"):
        mapper.set_input_mix(torch.eye(len(a) + 1))
    with pytest.raises(StylerigError, match="positive diagonal"):
        mapper.set_input_mix(torch.zeros(len(a), len(a)))
    with pytest.raises(StylerigError, match="rounds >= 1"):
        decouple_mapper(mapper, measure, probes, measured_aus=list(AU_NUMBERS), rounds=0, progress=False)


def test_old_mapper_files_load_with_the_identity_mix(tiny_stylegan2, tmp_path):
    G = tiny_stylegan2
    mapper = new_mapper(G, make_dirs(G), num_samples=256)
    path = save_mapper(mapper, tmp_path / "m.pt", G.name)
    assert "input_mix" not in torch.load(path, weights_only=True)  # the identity is not written
    assert not load_mapper(path, G).has_input_mix()


def test_calibrate_mapper_decouple_command_and_card(tiny_stylegan2, tmp_path, capsys, monkeypatch):
    from stylerig_au.au import detect
    from stylerig_au.cli import main
    from stylerig_au.edit import learn
    from stylerig_au.models.checkpoints import save_stylegan2

    G = tiny_stylegan2
    mapper = new_mapper(G, make_dirs(G), num_samples=256)
    a = mapper.aus
    coupling = np.eye(len(a))
    coupling[a.index(6), a.index(12)] = 0.5
    measure, calls = coupled_measure(G, mapper, coupling)
    monkeypatch.setattr(detect, "make_detector", lambda *args, **kw: torch.nn.Identity())  # the synthetic measure stands in
    monkeypatch.setattr(learn, "openface_measure", lambda *args, **kw: measure)
    args = ["--generator", str(save_stylegan2(G, tmp_path / "tiny.pt")),
            "--mapper", str(save_mapper(mapper, tmp_path / "m.pt", G.name, {"command": "stylerig-au train-mapper"})),
            "--probes", "3", "--psi", "1.0"]
    out = tmp_path / "dec.pt"
    assert main(["calibrate-mapper", "--out", str(out), "--rounds", "0", "--decouple", "1", "--decouple-strength", "0", *args]) == 0
    assert "decoupling mix" in capsys.readouterr().out
    dec = load_mapper(out, G)
    assert dec.has_input_mix() and "calibration" not in dec.meta  # gains untouched: --rounds 0
    assert float(dec.input_mix[a.index(6), a.index(12)]) == pytest.approx(-0.5, abs=1e-3)
    assert dec.meta["decoupling"]["strength"] == 0 and len(dec.meta["decoupling"]["measured"]) == 1
    card = (tmp_path / "dec.md").read_text()
    assert "## Decoupling with OpenFace" in card and "| AU12 | +2.00 (" in card and "AU6 -0.50" in card
    assert main(["calibrate-mapper", "--out", str(tmp_path / "x.pt"), "--rounds", "0", *args]) != 0
    assert "give --decouple N" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
