"""Fit OpenFace's 3-D point distribution model (PDM) to 2-D landmarks, batched.

The model: 3-D shape ``X(p) = mean + basis @ p`` (68 points, 34 local modes, millimetres) seen
through a weak-perspective camera ``x = s · R[:2] @ X + t``. :func:`fit_pdm` finds the global
parameters (s, R, t) and the local parameters p that minimise
``|landmarks - x|² + Σ p_k² / eigen_k`` with the same damped Gauss-Newton steps and stopping rule
OpenFace 2.2 uses (``PDM::CalcParams``), so the resulting ``p`` (the AU geometry features) and
``t`` (the alignment centre) match it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_STEP = 0.75
_MAX_ITERS = 1000
_PATIENCE = 3


@dataclass
class PDMFit:
    """Result of :func:`fit_pdm` for a batch of B faces (all float64).

    Attributes:
        scale: [B] pixels per model millimetre.
        rotation: [B, 3, 3] rotation matrices.
        translation: [B, 2] image position (pixels) of the model origin.
        local: [B, 34] local (shape/expression) parameters.
        iterations: [B] Gauss-Newton steps taken.
    """

    scale: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    local: torch.Tensor
    iterations: torch.Tensor

    def euler(self) -> torch.Tensor:
        """[B, 3] Euler angles (rx, ry, rz) in radians, R = Rx · Ry · Rz as in OpenFace."""
        r = self.rotation
        ry = torch.asin(r[:, 0, 2].clamp(-1, 1))
        rx = torch.atan2(-r[:, 1, 2], r[:, 2, 2])
        rz = torch.atan2(-r[:, 0, 1], r[:, 0, 0])
        return torch.stack([rx, ry, rz], dim=1)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [..., 3, 3] cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2)


def _orthonormalise(m: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(m)
    return u @ vh


def _project(mean: torch.Tensor, basis: torch.Tensor, s: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D shapes [B, N, 3] and their 2-D projections [B, N, 2]."""
    shape3d = mean + torch.einsum("nck,bk->bnc", basis, p)
    proj = s[:, None, None] * torch.einsum("bij,bnj->bni", rot[:, :2], shape3d) + t[:, None]
    return shape3d, proj


def fit_pdm(landmarks: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, eigen: torch.Tensor) -> PDMFit:
    """Fit the PDM to landmarks.

    Args:
        landmarks: [B, N, 2] pixel coordinates (x, y), N = 68.
        mean: [N, 3] PDM mean shape; basis: [N, 3, K] modes; eigen: [K] mode variances.

    Returns:
        A :class:`PDMFit` (float64, on the landmarks' device).
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (mean.shape[0], 2):
        raise ValueError(f"landmarks must be [B, {mean.shape[0]}, 2], got {tuple(landmarks.shape)}")
    dev = landmarks.device
    lm = landmarks.to(torch.float64)
    mean, basis, eigen = (x.to(dev, torch.float64) for x in (mean, basis, eigen))
    b, n, k = lm.shape[0], mean.shape[0], basis.shape[-1]

    # initial guess: no rotation, scale and centre from the bounding boxes (as OpenFace)
    lo, hi = lm.min(1).values, lm.max(1).values
    m_lo, m_hi = mean[:, :2].min(0).values, mean[:, :2].max(0).values
    size, m_size = hi - lo, m_hi - m_lo
    s = ((size[:, 0] / m_size[0]) + (size[:, 1] / m_size[1])) / 2
    t = (lo + hi) / 2
    rot = torch.eye(3, dtype=torch.float64, device=dev).expand(b, 3, 3).clone()
    p = torch.zeros(b, k, dtype=torch.float64, device=dev)

    reg = torch.cat([torch.zeros(6, dtype=torch.float64, device=dev), 1.0 / eigen])
    target = torch.cat([lm[..., 0], lm[..., 1]], dim=1)  # [B, 2N]: x block then y block

    def residual(s_, rot_, t_, p_):
        shape3d_, proj_ = _project(mean, basis, s_, rot_, t_, p_)
        return shape3d_, target - torch.cat([proj_[..., 0], proj_[..., 1]], dim=1)

    shape3d, res = residual(s, rot, t, p)
    error = res.norm(dim=1)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    stale = torch.zeros(b, dtype=torch.long, device=dev)
    iters = torch.zeros(b, dtype=torch.long, device=dev)
    for _ in range(_MAX_ITERS):
        if not active.any():
            break
        r2 = rot[:, :2]  # [B, 2, 3]
        d_scale = torch.einsum("bij,bnj->bni", r2, shape3d)  # [B, N, 2]
        d_rot = -s[:, None, None, None] * torch.einsum("bij,bnjk->bnik", r2, _skew(shape3d))  # [B, N, 2, 3]
        d_t = torch.eye(2, dtype=torch.float64, device=dev).expand(b, n, 2, 2)
        d_p = s[:, None, None, None] * torch.einsum("bij,njk->bnik", r2, basis)  # [B, N, 2, K]
        jac = torch.cat([d_scale[..., None], d_rot, d_t, d_p], dim=-1)  # [B, N, 2, 6+K]
        jac = torch.cat([jac[:, :, 0], jac[:, :, 1]], dim=1)  # [B, 2N, 6+K]
        grad = jac.transpose(1, 2) @ res[..., None]
        grad[:, 6:, 0] -= reg[6:] * p
        hess = jac.transpose(1, 2) @ jac + torch.diag(reg)
        delta = _STEP * torch.linalg.solve(hess, grad)[..., 0]
        delta = delta * active[:, None]

        s = s + delta[:, 0]
        rot = rot @ _orthonormalise(torch.eye(3, dtype=torch.float64, device=dev) + _skew(delta[:, 1:4]))
        t = t + delta[:, 4:6]
        p = p + delta[:, 6:]
        iters = iters + active.long()

        shape3d, res = residual(s, rot, t, p)
        new_error = res.norm(dim=1)
        worse = 0.999 * error < new_error
        stale = torch.where(worse, stale + 1, torch.zeros_like(stale))
        active = active & (stale < _PATIENCE)
        error = new_error
    return PDMFit(scale=s, rotation=rot, translation=t, local=p, iterations=iters)


def refit_local(landmarks: torch.Tensor, fit: PDMFit, mean: torch.Tensor, basis: torch.Tensor, eigen: torch.Tensor) -> torch.Tensor:
    """The local parameters [B, K] of ``landmarks`` [B, N, 2] with the fit's scale and rotation held.

    With the pose fixed the projection is linear in the translation and the local parameters, so one
    regularised least-squares solve (the normal equations :func:`fit_pdm` iterates on) gives them, and
    its gradient with respect to the landmarks is well behaved. :func:`fit_pdm`'s own gradient goes
    through its rotation updates, whose SVD has no finite gradient at a near-identity step. At the
    landmarks ``fit`` was made from this returns ``fit.local`` up to the fit's convergence.
    """
    lm = landmarks.to(torch.float64)
    mean, basis, eigen = (x.to(lm.device, torch.float64) for x in (mean, basis, eigen))
    s, r2 = fit.scale.detach(), fit.rotation.detach()[:, :2]
    n, k = mean.shape[0], basis.shape[-1]
    fixed = s[:, None, None] * torch.einsum("bij,nj->bni", r2, mean)  # [B, N, 2]
    d_p = s[:, None, None, None] * torch.einsum("bij,njk->bnik", r2, basis)  # [B, N, 2, K]
    d_t = torch.eye(2, dtype=torch.float64, device=lm.device).expand(lm.shape[0], n, 2, 2)
    jac = torch.cat([d_t, d_p], dim=-1).flatten(1, 2)  # [B, 2N, 2+K]
    rhs = (lm - fixed).flatten(1)[..., None]  # [B, 2N, 1], interleaved x, y like jac's rows
    reg = torch.diag(torch.cat([torch.zeros(2, dtype=torch.float64, device=lm.device), 1.0 / eigen]))
    solution = torch.linalg.solve(jac.transpose(1, 2) @ jac + reg, jac.transpose(1, 2) @ rhs)[..., 0]
    return solution[:, 2:2 + k]


def geometry_features(local: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """OpenFace's 238 geometry features: ``basis @ p`` as [x0..x67, y0..y67, z0..z67] ++ p.

    Args:
        local: [B, 34] local parameters; basis: [68, 3, 34].

    Returns:
        [B, 238] in ``local``'s dtype.
    """
    offsets = torch.einsum("nck,bk->bcn", basis.to(local), local).flatten(1)
    return torch.cat([offsets, local], dim=1)


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """Head pose (pitch, yaw, roll) in radians, [B, 3], of PDM rotations [B, 3, 3] (R = Rx·Ry·Rz, as OpenFace)."""
    r = rotation.to(torch.float64)
    pitch = torch.atan2(-r[:, 1, 2], r[:, 2, 2])
    yaw = torch.asin(r[:, 0, 2].clamp(-1.0, 1.0))
    roll = torch.atan2(-r[:, 0, 1], r[:, 0, 0])
    return torch.stack([pitch, yaw, roll], dim=1)
