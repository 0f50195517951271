"""The batched PDM fit: recovers known poses and shapes, and batches consistently."""

from __future__ import annotations

import math

import torch

from stylerig_au.au.pdm import fit_pdm, geometry_features
from tests.test_openface_model import fake_mean_shape


def _rot(rx: float, ry: float, rz: float) -> torch.Tensor:
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rot_z = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return rot_x @ rot_y @ rot_z


def _model(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.from_numpy(fake_mean_shape())
    basis = torch.linalg.qr(torch.randn(204, 34, generator=g, dtype=torch.float64))[0].reshape(3, 68, 34).permute(1, 0, 2).contiguous()
    eigen = torch.linspace(400, 5, 34, dtype=torch.float64)
    return mean, basis, eigen


def _render(mean, basis, s, rot, t, p):
    shape = mean + torch.einsum("nck,k->nc", basis, p)
    return s * shape @ rot[:2].T + t


def test_recovers_a_known_pose_and_shape():
    mean, basis, eigen = _model()
    p = torch.zeros(34, dtype=torch.float64)
    p[:5] = torch.tensor([15.0, -10.0, 8.0, 5.0, -3.0])
    rot = _rot(0.1, -0.25, 0.15)
    t = torch.tensor([300.0, 240.0], dtype=torch.float64)
    lm = _render(mean, basis, 2.5, rot, t, p)[None]
    fit = fit_pdm(lm, mean, basis, eigen)
    recon = _render(mean, basis, fit.scale[0], fit.rotation[0], fit.translation[0], fit.local[0])
    assert (recon - lm[0]).norm(dim=1).max() < 0.5  # pixels, against a ~350 px wide face
    assert abs(fit.scale[0].item() - 2.5) < 0.05
    assert torch.allclose(fit.euler()[0], torch.tensor([0.1, -0.25, 0.15], dtype=torch.float64), atol=0.03)
    assert torch.allclose(fit.local[0, :5], p[:5], atol=1.5)
    assert fit.iterations[0] > 0


def test_rotation_stays_orthonormal():
    mean, basis, eigen = _model()
    lm = _render(mean, basis, 1.3, _rot(0.3, 0.4, -0.2), torch.tensor([100.0, 90.0], dtype=torch.float64), torch.zeros(34, dtype=torch.float64))
    fit = fit_pdm(lm[None], mean, basis, eigen)
    r = fit.rotation[0]
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-9)
    assert torch.linalg.det(r) > 0


def test_batch_equals_single_fits():
    mean, basis, eigen = _model()
    g = torch.Generator().manual_seed(1)
    lms = torch.stack([
        _render(mean, basis, 1.0 + k, _rot(0.05 * k, -0.1 * k, 0.02), torch.tensor([200.0 + 10 * k, 150.0], dtype=torch.float64), torch.randn(34, generator=g, dtype=torch.float64) * 3)
        + torch.randn(68, 2, generator=g, dtype=torch.float64)
        for k in range(3)
    ])
    batched = fit_pdm(lms, mean, basis, eigen)
    for k in range(3):
        single = fit_pdm(lms[k : k + 1], mean, basis, eigen)
        assert torch.allclose(batched.local[k], single.local[0], atol=1e-8)
        assert torch.allclose(batched.translation[k], single.translation[0], atol=1e-8)
        assert batched.iterations[k] == single.iterations[0]


def test_geometry_features_layout():
    _, basis, _ = _model()
    p = torch.zeros(2, 34, dtype=torch.float64)
    p[1, 3] = 2.0
    g = geometry_features(p, basis)
    assert g.shape == (2, 238)
    assert torch.equal(g[0], torch.zeros(238, dtype=torch.float64))
    assert torch.allclose(g[1, :68], 2.0 * basis[:, 0, 3])  # all x offsets first
    assert torch.allclose(g[1, 136:204], 2.0 * basis[:, 2, 3])  # then y, then z
    assert torch.equal(g[1, 204:], p[1])


def test_refit_with_the_pose_held_gives_the_fit_and_finite_gradients():
    from stylerig_au.au.pdm import refit_local

    mean, basis, eigen = _model()
    p = torch.zeros(34, dtype=torch.float64)
    p[:3] = torch.tensor([12.0, -6.0, 4.0])
    lm = torch.stack([_render(mean, basis, 2.5, _rot(0.05, -0.2, 0.1), torch.tensor([300.0, 240.0], dtype=torch.float64), p),
                      _render(mean, basis, 3.0, _rot(0.0, 0.1, -0.05), torch.tensor([280.0, 260.0], dtype=torch.float64), -p)])
    fit = fit_pdm(lm, mean, basis, eigen)
    marks = lm.clone().requires_grad_(True)
    local = refit_local(marks, fit, mean, basis, eigen)
    torch.testing.assert_close(local, fit.local, atol=0.05, rtol=0.01)
    local[:, 0].sum().backward()
    assert torch.isfinite(marks.grad).all() and marks.grad.abs().sum() > 0
    # moving the landmarks along a shape mode moves that parameter, with the pose held
    shifted = refit_local(lm + 2.5 * torch.einsum("bij,nj->bni", fit.rotation[:, :2], basis[..., 1]), fit, mean, basis, eigen)
    assert (shifted[:, 1] - fit.local[:, 1]).abs().min() > 0.5
