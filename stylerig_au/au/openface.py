"""Our own implementation of OpenFace 2.2's static AU intensity estimator, in batched PyTorch.

Pipeline per face (as OpenFace's ``FaceAnalyser::PredictStaticAUsAndComputeFeatures``):

1. fit the 3-D PDM to the 68 landmarks (:mod:`stylerig_au.au.pdm`) -> pose and local parameters;
2. similarity-align the photo to the PDM mean shape × 0.7 on 24 rigid landmarks, centred on the
   fitted model origin, 112×112, bilinear, rounded to 8-bit;
3. mask it with the landmark triangulation (eyebrow points raised 30 px to keep the forehead);
4. FHOG (cell 8 -> 12×12×31 = 4464, :mod:`stylerig_au.au.fhog`) ++ 238 geometry features;
5. 17 linear SVRs: ``clip((x - means) @ w + b, 0, 5)``.

Everything after the landmark fit is differentiable with respect to the image (the rounding in
step 2 passes gradients straight through; the mask and orientation bins are constants).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylerig_au.au import openface_model
from stylerig_au.au.fhog import fhog
from stylerig_au.au.pdm import PDMFit, fit_pdm, geometry_features
from stylerig_au.errors import StylerigError

ALIGN_SIZE = 112
ALIGN_SCALE = 0.7
RIGID_POINTS = (1, 2, 3, 4, 12, 13, 14, 15, 27, 28, 29, 31, 32, 33, 34, 35, 36, 39, 40, 41, 42, 45, 46, 47)
BROW_POINTS = (0, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26)
BROW_RAISE_PX = 30.0


def similarity_to_reference(landmarks: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """OpenFace's scale-rotation [B, 2, 2] taking landmarks towards the reference shape.

    Both point sets are centred; the scale is the ratio of their RMS radii and the rotation is the
    reflection-free Kabsch solution (not the least-squares scale), as in OpenFace.

    Args:
        landmarks: [B, P, 2]; reference: [P, 2] (same points).
    """
    src = landmarks - landmarks.mean(1, keepdim=True)
    dst = (reference - reference.mean(0, keepdim=True)).expand_as(src)
    s_src = src.pow(2).sum((1, 2)).div(src.shape[1]).sqrt()
    s_dst = dst.pow(2).sum((1, 2)).div(dst.shape[1]).sqrt()
    u, _, vh = torch.linalg.svd((src / s_src[:, None, None]).transpose(1, 2) @ (dst / s_dst[:, None, None]))
    v, ut = vh.transpose(1, 2), u.transpose(1, 2)
    sign = torch.sign(torch.linalg.det(v @ ut))
    corr = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.where(sign == 0, torch.ones_like(sign), sign)], 1))
    rot = v @ corr @ ut
    return (s_dst / s_src)[:, None, None] * rot


def triangle_mask(points: torch.Tensor, triangles: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size, size] float64 0/1: pixel centres (integer coordinates) inside any triangle (edges included).

    Along a pixel row each barycentric coordinate is affine in x, so every triangle covers one run
    of columns per row; runs are marked with +1/-1 in a difference image and summed along x.
    """
    points = points.to(torch.float64)
    b, dev = points.shape[0], points.device
    tri = points[:, triangles]  # [B, T, 3, 2]
    (x0, y0), (x1, y1), (x2, y2) = (tri[:, :, k].unbind(-1) for k in range(3))
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
    ok = denom.abs() > 1e-10
    safe = torch.where(ok, denom, torch.ones_like(denom))
    # barycentric coordinate k = A_k·x + B_k·y + C_k (the third is 1 - a - c)
    a = torch.stack([y1 - y2, x2 - x1, -(y1 - y2) * x2 - (x2 - x1) * y2], -1) / safe[..., None]
    c = torch.stack([y2 - y0, x0 - x2, -(y2 - y0) * x2 - (x0 - x2) * y2], -1) / safe[..., None]
    third = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=dev) - a - c
    coef = torch.stack([a, c, third], 2)  # [B, T, 3 coords, (A, B, C)]
    ys = torch.arange(size, dtype=torch.float64, device=dev)
    slope = coef[..., 0, None]  # [B, T, 3, 1]
    rest = coef[..., 1, None] * ys + coef[..., 2, None] + 1e-9  # [B, T, 3, Y]; >= 0 test gets a small tolerance
    bound = -rest / torch.where(slope == 0, torch.ones_like(slope), slope)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
    lo = torch.where(slope > 0, bound, -inf).amax(2).clamp_min(0)  # [B, T, Y]
    hi = torch.where(slope < 0, bound, inf).amin(2).clamp_max(size - 1)
    flat_ok = torch.where(slope == 0, rest >= 0, torch.ones_like(rest, dtype=torch.bool)).all(2)
    start, stop = torch.ceil(lo), torch.floor(hi)
    valid = flat_ok & ok[..., None] & (start <= stop)
    start = torch.where(valid, start, torch.zeros_like(start)).long()
    stop = torch.where(valid, stop + 1, torch.zeros_like(stop)).long()
    runs = torch.zeros(b, size, size + 1, dtype=torch.float64, device=dev)
    row = torch.arange(size, device=dev).expand_as(start)
    weight = valid.to(torch.float64)
    runs.view(b, -1).scatter_add_(1, (row * (size + 1) + start).flatten(1), weight.flatten(1))
    runs.view(b, -1).scatter_add_(1, (row * (size + 1) + stop).flatten(1), -weight.flatten(1))
    return (runs.cumsum(2)[..., :size] > 0.5).to(torch.float64)


def _bilinear_zero_border(img: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [C, P] of img [C, H, W] at src [P, 2] (x, y) pixel positions; outside pixels are 0."""
    c, h, w = img.shape
    # only the window the samples touch is padded (photos can be large)
    left = int(min(max(torch.floor(src[:, 0].min()).item(), 0), w - 1))
    top = int(min(max(torch.floor(src[:, 1].min()).item(), 0), h - 1))
    right = int(max(min(torch.floor(src[:, 0].max()).item() + 2, w), left + 1))
    bottom = int(max(min(torch.floor(src[:, 1].max()).item() + 2, h), top + 1))
    img = img[:, top:bottom, left:right]
    if not img.is_floating_point():
        img = img.float()
    src = src - src.new_tensor([left, top])
    c, h, w = img.shape
    padded = F.pad(img, (1, 1, 1, 1))
    x0f, y0f = torch.floor(src[:, 0]), torch.floor(src[:, 1])
    fx, fy = (src[:, 0] - x0f).to(img), (src[:, 1] - y0f).to(img)
    x0 = x0f.long().clamp(-1, w) + 1
    y0 = y0f.long().clamp(-1, h) + 1
    x1 = (x0f.long() + 1).clamp(-1, w) + 1
    y1 = (y0f.long() + 1).clamp(-1, h) + 1
    flat = padded.reshape(c, -1)
    wp = w + 2

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[:, yy * wp + xx]

    upper = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    lower = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return upper * (1 - fy) + lower * fy


class OpenFaceAU(torch.nn.Module):
    """OpenFace 2.2 static AU intensities (17 AUs, 0–5) from photos and their 68 landmarks.

    Args:
        model: a converted model dict, its path, or None for the asset registry's
            ``openface-2.2-au`` (non-commercial licence).
    """

    def __init__(self, model: dict[str, Any] | str | os.PathLike | None = None) -> None:
        super().__init__()
        blob = model if isinstance(model, dict) else openface_model.load(model)
        self.aus: list[int] = list(blob["aus"])
        w = blob["weights"].to(torch.float64)
        self.register_buffer("weights", w.T.contiguous().float())  # [4702, 17]
        # (x - means) @ w + b == x @ w + (b - means @ w); folded in float64
        self.register_buffer("offset", (blob["bias"].to(torch.float64) - (blob["means"].to(torch.float64) * w).sum(1)).float())
        self.register_buffer("pdm_mean", blob["pdm_mean"].to(torch.float64))
        self.register_buffer("pdm_basis", blob["pdm_basis"].to(torch.float64))
        self.register_buffer("pdm_eigen", blob["pdm_eigen"].to(torch.float64))
        self.register_buffer("triangles", blob["triangles"].long())
        ref = blob["pdm_mean"][:, :2].to(torch.float64) * ALIGN_SCALE
        self.register_buffer("reference", ref)

    # ------------------------------------------------------------------ steps

    def fit(self, landmarks: torch.Tensor) -> PDMFit:
        """PDM fit of [B, 68, 2] landmarks (see :func:`stylerig_au.au.pdm.fit_pdm`)."""
        return fit_pdm(landmarks.to(self.pdm_mean.device), self.pdm_mean, self.pdm_basis, self.pdm_eigen)

    def warp_matrices(self, landmarks: torch.Tensor, fit: PDMFit) -> torch.Tensor:
        """[B, 2, 3] float64 affine maps from photo pixels to aligned-face pixels."""
        lm = landmarks.to(self.reference)
        idx = list(RIGID_POINTS)
        a = similarity_to_reference(lm[:, idx], self.reference[idx])
        shift = ALIGN_SIZE / 2 - (a @ fit.translation[..., None])[..., 0]
        return torch.cat([a, shift[..., None]], dim=2)

    def mask(self, landmarks: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
        """[B, 112, 112] face mask from the warped landmarks (brows raised), as OpenFace."""
        pts = torch.einsum("bij,bnj->bni", warp[:, :, :2], landmarks.to(warp)) + warp[:, None, :, 2]
        pts = pts.clone()
        pts[:, list(BROW_POINTS), 1] -= BROW_RAISE_PX * ALIGN_SCALE / 0.7
        return triangle_mask(pts, self.triangles, ALIGN_SIZE)

    def align(self, images: torch.Tensor | Sequence[torch.Tensor], landmarks: torch.Tensor, fit: PDMFit | None = None) -> tuple[torch.Tensor, PDMFit]:
        """Aligned, masked 112×112 faces.

        Args:
            images: [B, 3, H, W] RGB on 0–255 (float, or uint8), or a list of B [3, H_i, W_i] tensors.
            landmarks: [B, 68, 2] pixel coordinates in those images.
            fit: a precomputed PDM fit (else computed here).

        Returns:
            (faces [B, 3, 112, 112] on 0–255 in the images' float dtype (float32 for uint8), fit).
        """
        if fit is None:
            fit = self.fit(landmarks)
        warp = self.warp_matrices(landmarks, fit)
        a_inv = torch.linalg.inv(warp[:, :, :2])
        coords = torch.arange(ALIGN_SIZE, dtype=torch.float64, device=warp.device)
        gy, gx = torch.meshgrid(coords, coords, indexing="ij")
        dst = torch.stack([gx, gy], -1).reshape(1, -1, 2) - warp[:, None, :, 2]
        src = torch.einsum("bij,bpj->bpi", a_inv, dst)  # [B, P, 2] photo pixel coordinates
        # OpenCV's warpAffine samples at source positions snapped to 1/32 pixel
        src = torch.round(src * 32) / 32
        faces = []
        for i in range(len(landmarks)):
            img = images[i]
            if img.ndim != 3 or img.shape[0] != 3:
                raise StylerigError(f"expected RGB images [3, H, W], got {tuple(img.shape)}")
            faces.append(_bilinear_zero_border(img, src[i]).reshape(3, ALIGN_SIZE, ALIGN_SIZE))
        face = torch.stack(faces)
        face = face + (torch.floor(face + 0.5) - face).detach()  # 8-bit result, rounded half up like OpenCV
        mask = self.mask(landmarks, warp).to(face)
        return face * mask[:, None], fit

    def features(self, images: torch.Tensor | Sequence[torch.Tensor], landmarks: torch.Tensor) -> torch.Tensor:
        """[B, 4702] OpenFace feature vectors (FHOG ++ geometry) in the images' dtype."""
        faces, fit = self.align(images, landmarks)
        hog = fhog(faces).flatten(1)
        geom = geometry_features(fit.local, self.pdm_basis).to(hog)
        return torch.cat([hog, geom], dim=1)

    def geometry_part(self, landmarks: torch.Tensor) -> torch.Tensor:
        """The part of the unclipped intensities that comes from the face's shape, not its texture.

        Each static SVR is linear in (FHOG ++ PDM geometry); this is its geometry term alone: the 3D
        shape fit of the landmarks times the SVR's geometry weights. A beard or glasses change the FHOG
        term; only moved landmarks change this one.

        Args:
            landmarks: [B, 68, 2] pixel coordinates (any image size: the fit removes scale).
        Returns:
            [B, 17] float64 (order ``self.aus``), without the SVR's offset.
        """
        fit = self.fit(landmarks.to(torch.float64))
        geom = geometry_features(fit.local, self.pdm_basis)
        return geom @ self.weights[-geom.shape[1]:].to(geom)

    def texture_part(self, images: torch.Tensor | Sequence[torch.Tensor], landmarks: torch.Tensor) -> torch.Tensor:
        """The FHOG (texture) term of the unclipped intensities, float64 [B, 17]: the reading minus
        :meth:`geometry_part` and the SVR offset. Args as :meth:`forward`."""
        x = self.features(images, landmarks)
        n_geo = self.pdm_basis.shape[0] * self.pdm_basis.shape[1] + self.pdm_basis.shape[2]  # 68·3 offsets ++ 34 params
        return x[:, :-n_geo].to(torch.float64) @ self.weights[:-n_geo].to(torch.float64)

    def predict_features(self, x: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """[B, 17] intensities from [B, 4702] features (clipped to 0–5 unless ``clip=False``)."""
        y = x.to(self.weights) @ self.weights + self.offset
        return y.clamp(0.0, 5.0) if clip else y

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor], landmarks: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """AU intensities [B, 17] (order ``self.aus``) of RGB images (0–255) with their landmarks [B, 68, 2]."""
        return self.predict_features(self.features(images, landmarks), clip=clip)

    @torch.no_grad()
    def predict_photos(self, photos: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Intensities float32 [N, 17] for uint8 RGB photos [H, W, 3] and their [68, 2] landmarks."""
        if len(photos) != len(landmarks):
            raise StylerigError(f"{len(photos)} photos but {len(landmarks)} landmark sets")
        device = self.weights.device
        out = []
        for start in range(0, len(photos), batch_size):
            imgs = [torch.from_numpy(np.array(p[..., :3])).to(device).permute(2, 0, 1) for p in photos[start : start + batch_size]]
            lms = torch.from_numpy(np.stack(landmarks[start : start + batch_size])).to(device, torch.float64)
            out.append(self(imgs, lms).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.aus)), np.float32)
