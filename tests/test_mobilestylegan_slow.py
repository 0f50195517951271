"""MobileStyleGAN with the real weights: parity with the OpenVINO runtime, W+ behaviour, gradients.

The raw IR comes from ``$STYLERIG_AU_RANDOM_FACE_IR`` (a folder with the four IR files) or from the
random-face wheel the registry downloads; OpenVINO (PyPI ``openvino``) is the reference. Tests skip
with the reason when either is unavailable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stylerig_au.errors import StylerigError
from stylerig_au.models.mobilestylegan import MobileStyleGAN, load_mobilestylegan
from stylerig_au.models.mobilestylegan_ir import ENV_IR_DIR, convert, find_ir_dir, ir_members
from tests.helpers import require_asset, skip_or_fail

pytestmark = pytest.mark.slow
NAME = "mobilestylegan-ffhq-1024"
PARITY_ATOL = 1e-3


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        found = find_ir_dir(tmp_path_factory.mktemp("ir"))
    except StylerigError as exc:
        skip_or_fail(f"random-face IR not available: {exc}")
    if found is None:
        skip_or_fail(f"random-face IR not available: set {ENV_IR_DIR} or allow the registry to fetch the wheel")
    return found


@pytest.fixture(scope="module")
def G(ir_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> MobileStyleGAN:
    """A fresh conversion of ``$STYLERIG_AU_RANDOM_FACE_IR`` when it is set (w_avg from fewer samples, for
    speed), else the registry's converted file (fetched and converted on first use)."""

    if os.environ.get(ENV_IR_DIR):
        path = tmp_path_factory.mktemp("msg") / "mobilestylegan.pt"
        convert(ir_members(ir_dir), path, w_avg_samples=5000)
    else:
        path = require_asset(NAME)
    return load_mobilestylegan(path)


@pytest.fixture(scope="module")
def openvino_ref(ir_dir: Path):
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    mapping = core.compile_model(core.read_model(ir_dir / "MappingNetwork.xml"), "CPU", cfg)
    synthesis = core.compile_model(core.read_model(ir_dir / "SynthesisNetwork.xml"), "CPU", cfg)
    return (lambda z: mapping(z)[0]), (lambda w: synthesis(w)[0])


def test_matches_openvino_on_several_seeds(G: MobileStyleGAN, openvino_ref) -> None:
    ov_mapping, ov_synthesis = openvino_ref
    errors = []
    for seed, psi in [(0, 1.0), (1, 0.7), (2, 0.5)]:
        z = np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32)
        w_ov = ov_mapping(z)
        with torch.no_grad():
            w_pt = G.mapping(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(w_pt, w_ov, atol=1e-4, rtol=0)
        w = (G.w_avg.numpy() + psi * (w_ov - G.w_avg.numpy())).astype(np.float32)
        img_ov = ov_synthesis(w)
        with torch.no_grad():
            img_pt = G.synthesis(torch.from_numpy(w)[:, None].repeat(1, G.num_ws, 1)).numpy()
        assert img_pt.shape == img_ov.shape == (1, 3, 1024, 1024)
        errors.append(float(np.abs(np.clip(img_pt, -1, 1) - np.clip(img_ov, -1, 1)).max()))
    print(f"MobileStyleGAN vs OpenVINO f32, max abs error on the [-1, 1] image per seed: {errors}")
    assert max(errors) <= PARITY_ATOL, errors


def test_distinct_slots_change_the_image_and_unused_slots_do_not(G: MobileStyleGAN) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = G.mapping(torch.randn(2, 512, generator=gen), psi=0.7)
        ws = w[:1, None].repeat(1, G.num_ws, 1)
        base = G.synthesis(ws)
        middle = ws.clone()
        middle[:, 7] = w[1]  # block 2 conv1 (32²)
        changed = (G.synthesis(middle) - base).abs().amax().item()
        unused = ws.clone()
        unused[:, [s.index for s in G.slots if not s.used]] = w[1]
        same = (G.synthesis(unused) - base).abs().amax().item()
    assert changed > 0.05, changed
    assert same == 0.0, same


def test_gradient_flows_to_ws(G: MobileStyleGAN) -> None:
    with torch.no_grad():
        w = G.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)), psi=0.7)
    ws = w[:, None].repeat(1, G.num_ws, 1).requires_grad_(True)
    img = G.synthesis(ws)
    torch.nn.functional.avg_pool2d(img, 4).square().mean().backward()
    norms = ws.grad[0].norm(dim=1)
    assert torch.isfinite(norms).all()
    for slot in G.slots:
        assert (norms[slot.index].item() > 0) == slot.used, (slot, norms[slot.index].item())
