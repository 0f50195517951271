"""Shared fixtures: small random generators that any area can use (inversion, editing, CLI tests)."""

from __future__ import annotations

import pytest
import torch

from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config


def make_tiny_stylegan2(resolution: int = 32, dim: int = 32, seed: int = 0, **config: object) -> StyleGAN2:
    """A randomly initialised StyleGAN2 (eval, no grad, CPU) whose every weight matters.

    z_dim = w_dim = ``dim``, 2 mapping layers, at most ``dim`` channels; noise strengths and biases
    are random (NVIDIA's init leaves them 0) and ``w_avg`` is the mean of 2000 mapped samples.
    """
    cfg = StyleGAN2Config(z_dim=dim, w_dim=dim, resolution=resolution, channel_base=dim * 16, channel_max=dim,
                          mapping_layers=2, **config)
    torch.manual_seed(seed)
    G = StyleGAN2(cfg, name=f"tiny-stylegan2-{resolution}")
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("noise_strength", ".bias")) and "mapping" not in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "affine" in name else 0.0))
        G.compute_w_avg(num_samples=2000)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def _tiny_stylegan2_master() -> StyleGAN2:
    return make_tiny_stylegan2()


@pytest.fixture
def tiny_stylegan2(_tiny_stylegan2_master: StyleGAN2) -> StyleGAN2:
    """A 32² StyleGAN2 with z/w of size 32 and num_ws = 8 (fresh copy per test; builds in milliseconds)."""
    G = StyleGAN2(_tiny_stylegan2_master.config, name=_tiny_stylegan2_master.name)
    G.load_state_dict(_tiny_stylegan2_master.state_dict())
    return G.eval().requires_grad_(False)


@pytest.fixture
def no_tf32():
    """Full float32 convolutions and matmuls on CUDA for the test (cuDNN defaults to TF32, a 10-bit mantissa,
    which misses float32 tolerances of 1e-3 on a few elements)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
