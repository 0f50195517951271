"""MobileStyleGAN FFHQ-1024 (Belousov 2021, arXiv 2104.04767) as a native, differentiable PyTorch module.

The weights come from the OpenVINO IR in the ``random-face`` wheel, converted by
:mod:`stylerig_au.models.mobilestylegan_ir`. The mapping network is StyleGAN2-FFHQ's (8 × 512 MLP);
the synthesis network is MobileStyleGAN's: a constant 4×4 input, a modulated 3×3 conv, then seven
blocks that each upsample with an inverse Haar wavelet (after a per-channel style scale), and run two
modulated depthwise-separable convs; a modulated 1×1 conv makes 12 wavelet channels that a last inverse
wavelet turns into the 1024² RGB image. There is no weight demodulation, and the noise is baked in.

W+ layout (23 slots, as MobileStyleGAN's own code slices its style tensor):

* slot 0: the first 3×3 conv (4²);
* block i (0..6, output 2^(i+3)): slot 1+3i drives the wavelet upsample and conv1, slot 2+3i conv2;
* slot 21: the final to-image conv; slots 3, 6, 9, 12, 15, 18 (the intermediate to-image layers,
  dropped from the IR) and 22 are unused.

With every slot equal to one w the output matches the IR run by OpenVINO.

On a CPU the synthesis works channels-last, with each depthwise-separable conv's style folded into
per-image 1×1 weights (one batched matmul) and the inverse wavelet as a small matmul + reshape; without
autograd the noise, bias and activation are applied in place. Same maths as the NCHW path used on CUDA,
~3× faster forward on a 2-core CPU (``experiments/bench_generator.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot, group_for_resolution

NAME = "mobilestylegan-ffhq-1024"
FORMAT = "stylerig_au-mobilestylegan-v1"
NOISE_MODES = ("const", "random", "none")
IMPLS = ("auto", "cuda", "ref")


class _Impl:
    impl: str = "auto"


class MappingNetwork(_Impl, nn.Module):
    """z [N, z_dim] -> w [N, w_dim]: pixel norm, then ``len(layers)`` × (linear + bias, leaky ReLU, gain)."""

    def __init__(self, meta: dict) -> None:
        super().__init__()
        self.z_dim, self.w_dim = int(meta["z_dim"]), int(meta["w_dim"])
        self.eps = float(meta["pixel_norm_eps"])
        self.acts = [(float(m["slope"]), float(m["gain"])) for m in meta["layers"]]
        dims = [self.z_dim] + [self.w_dim] * len(self.acts)
        for i in range(len(self.acts)):
            self.register_parameter(f"weight{i}", nn.Parameter(torch.zeros(dims[i + 1], dims[i])))
            self.register_parameter(f"bias{i}", nn.Parameter(torch.zeros(dims[i + 1])))
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """Map z [N, z_dim] (float, standard normal) to w [N, w_dim] float32, truncated: w_avg + psi (w - w_avg)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise StylerigError(f"mapping expects z of shape [N, {self.z_dim}], got {list(z.shape)}")
        x = z.to(torch.float32)
        x = x * (x.square().mean(dim=1, keepdim=True) + self.eps).rsqrt()
        for i, (slope, gain) in enumerate(self.acts):
            x = F.linear(x, getattr(self, f"weight{i}"))
            x = ops.bias_act(x, getattr(self, f"bias{i}"), act="lrelu", alpha=slope, gain=gain, impl=self.impl)
        if psi != 1.0:
            x = self.w_avg.lerp(x, psi)
        return x


class StyleAffine(nn.Module):
    """w [N, w_dim] -> per-channel style [N, C, 1, 1] = (w Wᵀ + b) · scale."""

    def __init__(self, w_dim: int, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = float(scale)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = F.linear(w, self.weight, self.bias)
        if self.scale != 1.0:
            s = s * self.scale
        return s[:, :, None, None]


def _depthwise_separable_cpu(x: torch.Tensor, style: torch.Tensor, weight_dw: torch.Tensor, weight: torch.Tensor,
                             padding: int) -> torch.Tensor:
    """``conv1x1(depthwise(x · style))`` computed the CPU-friendly way: [N, C_in, H, W] -> channels-last [N, C_out, H, W].

    A depthwise conv commutes with a per-channel scale, so the style [N, C_in, 1, 1] is folded into
    per-image 1×1 weights and the 1×1 conv runs as one batched matmul over channels-last pixels. That
    saves a full-resolution multiply and the layout changes of NCHW convs: with the channels-last
    inverse wavelet, synthesis runs ~1.7× faster forward (~1.4× with the backward pass) on a CPU.
    """
    x = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight_dw, padding=padding, groups=x.shape[1])
    n, c, h, w = x.shape
    pixels = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, h * w, c)
    per_image = (weight[:, :, 0, 0][None] * style[:, None, :, 0, 0]).transpose(1, 2)  # [N, C_in, C_out]
    return torch.bmm(pixels, per_image).reshape(n, h, w, -1).permute(0, 3, 1, 2)


class StyledConv(_Impl, nn.Module):
    """Modulate input channels by style, conv (3×3 dense, or 3×3 depthwise then 1×1), add baked noise
    and bias, leaky ReLU (no gain). [N, C_in, H, W] -> [N, C_out, H, W]."""

    def __init__(self, w_dim: int, c_in: int, c_out: int, resolution: int, meta: dict) -> None:
        super().__init__()
        self.depthwise = bool(meta["depthwise"])
        self.padding = int(meta["padding"])
        self.slope = float(meta["slope"])
        self.mod = StyleAffine(w_dim, c_in, meta["mod_scale"])
        if self.depthwise:
            self.weight_dw = nn.Parameter(torch.zeros(c_in, 1, 3, 3))
            self.weight = nn.Parameter(torch.zeros(c_out, c_in, 1, 1))
        else:
            self.weight = nn.Parameter(torch.zeros(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if self.depthwise and x.device.type == "cpu":
            x = _depthwise_separable_cpu(x, self.mod(w), self.weight_dw, self.weight, self.padding)
        elif self.depthwise:
            x = F.conv2d(x * self.mod(w), self.weight_dw, padding=self.padding, groups=x.shape[1])
            x = F.conv2d(x, self.weight)
        else:
            x = F.conv2d(x * self.mod(w), self.weight, padding=self.padding)
        noise = None
        if noise_mode == "const":
            noise = self.noise
        elif noise_mode == "random":  # the baked map is strength × N(0, 1): redraw it at its RMS
            rms = self.noise.square().mean().sqrt()
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) * rms
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            # Inference on a CPU is memory-bound: work in place rather than fill three new full-size buffers
            # (~1.4× faster). With autograd on, the in-place backward is slower, so the usual ops are kept.
            if noise is not None:
                x.add_(noise)
            return F.leaky_relu_(x.add_(self.bias[:, None, None]), self.slope)
        if noise is not None:
            x = x + noise
        return ops.bias_act(x, self.bias, act="lrelu", alpha=self.slope, gain=1.0, impl=self.impl)


def _haar_bands(x: torch.Tensor) -> list[torch.Tensor]:
    n, c4, h, w = x.shape
    if c4 % 4:
        raise StylerigError(f"inverse Haar needs a multiple of 4 channels, got {c4}")
    c = c4 // 4
    return [x[:, :c]] + list(x[:, c:].reshape(n, c, 3, h, w).unbind(2))


def inverse_haar_upfirdn(x: torch.Tensor, kernels: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """:func:`inverse_haar` as four ``upfirdn2d`` calls (zero insertion by 2, then the band's 2×2 filter)."""
    out = None
    for band, k in zip(_haar_bands(x), kernels.unbind(0)):
        # A stride-2 transposed conv is zero insertion then a true convolution, padded 1 before.
        y = ops.upfirdn2d(band, k, up=2, padding=(1, 0, 1, 0), impl=impl)
        out = y if out is None else out + y
    return out


def inverse_haar(x: torch.Tensor, kernels: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Inverse 2-D Haar wavelet: [N, 4C, H, W] (C low channels, then C × 3 high bands, band-minor)
    -> [N, C, 2H, 2W].

    ``kernels`` [4, 2, 2] are the synthesis filters of the low and the three high bands; each band is
    upsampled by 2 with its filter and the results summed (the IR's stride-2 transposed convs). On CUDA
    (unless ``impl='ref'``) this runs as ``upfirdn2d`` calls (the fused kernel); on a CPU as a
    channels-last matmul and reshape (returned channels-last); elsewhere as one grouped transposed conv.
    All three are the same maths.
    """
    if x.is_cuda and impl != "ref":
        return inverse_haar_upfirdn(x, kernels, impl=impl)
    if x.device.type == "cpu":
        return _inverse_haar_channels_last(x, kernels)
    return inverse_haar_grouped_conv(x, kernels)


def inverse_haar_grouped_conv(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """:func:`inverse_haar` as one grouped stride-2 transposed conv (NCHW; any device)."""
    bands = torch.stack(_haar_bands(x), dim=2)  # [N, C, 4, H, W]
    n, c, _, h, w = bands.shape
    y = F.conv_transpose2d(bands.reshape(n * c, 4, h, w), kernels.to(x.dtype)[:, None], stride=2)
    return y.reshape(n, c, 2 * h, 2 * w)


def _inverse_haar_channels_last(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """:func:`inverse_haar` for CPU tensors: [N, 4C, H, W] -> channels-last [N, C, 2H, 2W].

    Each output pixel (dy, dx) of a 2×2 cell is a fixed mix of the cell's four band values, so one small
    matmul over channels-last pixels gives all four, and a reshape interleaves them.
    """
    n, c4, h, w = x.shape
    if c4 % 4:
        raise StylerigError(f"inverse Haar needs a multiple of 4 channels, got {c4}")
    c = c4 // 4
    pixels = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # [N, H, W, 4C]
    bands = torch.cat([pixels[..., :c, None], pixels[..., c:].reshape(n, h, w, c, 3)], dim=-1)  # [N, H, W, C, 4]
    cells = bands @ kernels.to(x.dtype).reshape(4, 4)  # [N, H, W, C, (dy, dx)]
    out = cells.reshape(n, h, w, c, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c)
    return out.permute(0, 3, 1, 2)


class WaveletUp(_Impl, nn.Module):
    """Per-channel style scale, then inverse Haar: [N, C, H, W] -> [N, C/4, 2H, 2W]."""

    def __init__(self, w_dim: int, channels: int, meta: dict) -> None:
        super().__init__()
        self.mod = StyleAffine(w_dim, channels, meta["mod_scale"])

    def forward(self, x: torch.Tensor, w: torch.Tensor, haar: torch.Tensor) -> torch.Tensor:
        return inverse_haar(x * self.mod(w), haar, impl=self.impl)


class ToImage(_Impl, nn.Module):
    """Modulated 1×1 conv to 12 wavelet channels + bias, then inverse Haar: -> RGB [N, 3, 2H, 2W]."""

    def __init__(self, w_dim: int, channels: int, meta: dict) -> None:
        super().__init__()
        self.mod = StyleAffine(w_dim, channels, meta["mod_scale"])
        self.weight = nn.Parameter(torch.zeros(12, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(12))

    def forward(self, x: torch.Tensor, w: torch.Tensor, haar: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x * self.mod(w), self.weight)
        x = ops.bias_act(x, self.bias, impl=self.impl)
        return inverse_haar(x, haar, impl=self.impl)


class Block(nn.Module):
    """One synthesis block: wavelet upsample ×2, then two depthwise-separable styled convs."""

    def __init__(self, w_dim: int, c_in: int, c_out: int, resolution: int, meta: dict, i: int) -> None:
        super().__init__()
        self.up = WaveletUp(w_dim, c_in, meta["ups"][f"blocks.{i}.up"])
        self.conv1 = StyledConv(w_dim, c_in // 4, c_out, resolution, meta["convs"][f"blocks.{i}.conv1"])
        self.conv2 = StyledConv(w_dim, c_out, c_out, resolution, meta["convs"][f"blocks.{i}.conv2"])


class SynthesisNetwork(nn.Module):
    """W+ [N, 23, w_dim] -> RGB [N, 3, 1024, 1024] float32, nominally in [-1, 1] (not clamped)."""

    def __init__(self, meta: dict) -> None:
        super().__init__()
        self.w_dim = int(meta["w_dim"])
        ch = [int(c) for c in meta["channels"]]
        self.input = nn.Parameter(torch.zeros(1, ch[0], 4, 4))
        self.conv1 = StyledConv(self.w_dim, ch[0], ch[0], 4, meta["convs"]["conv1"])
        self.blocks = nn.ModuleList(
            Block(self.w_dim, ch[i], ch[i + 1], 2 ** (i + 3), meta, i) for i in range(len(ch) - 1))
        self.to_img = ToImage(self.w_dim, ch[-1], meta["to_img"])
        self.register_buffer("haar", torch.zeros(4, 2, 2))
        self.resolution = 2 ** (len(ch) + 2)
        self.num_ws = 3 * len(self.blocks) + 2

    def slot_of(self) -> dict[str, int]:
        """Which W+ slot each styled layer reads."""
        slots = {"conv1": 0}
        for i in range(len(self.blocks)):
            slots[f"blocks.{i}.up"] = slots[f"blocks.{i}.conv1"] = 1 + 3 * i
            slots[f"blocks.{i}.conv2"] = 2 + 3 * i
        slots["to_img"] = 3 * len(self.blocks)
        return slots

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Render ws [N, num_ws, w_dim]; ``noise_mode``: 'const' (the baked noise), 'random' (fresh noise at
        each layer's baked RMS) or 'none'."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise StylerigError(f"synthesis expects ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise StylerigError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x = self.input.expand(ws.shape[0], -1, -1, -1)
        if x.device.type == "cpu":  # the CPU paths of the layers work channels-last (StyledConv, inverse_haar)
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, ws[:, 0], noise_mode)
        for i, block in enumerate(self.blocks):
            x = block.up(x, ws[:, 1 + 3 * i], self.haar)
            x = block.conv1(x, ws[:, 1 + 3 * i], noise_mode)
            x = block.conv2(x, ws[:, 2 + 3 * i], noise_mode)
        return self.to_img(x, ws[:, 3 * len(self.blocks)], self.haar).contiguous()


class MobileStyleGAN(nn.Module):
    """MobileStyleGAN behind the :class:`~stylerig_au.models.protocol.Generator` protocol.

    ``G.mapping(z, psi)`` -> w [N, 512]; ``G.synthesis(ws)`` with ws [N, 23, 512] -> RGB image
    [N, 3, 1024, 1024] float32, nominally in [-1, 1] (not clamped, so gradients flow).
    """

    def __init__(self, meta: dict, impl: str = "auto") -> None:
        super().__init__()
        self.meta = meta
        self.name = str(meta.get("name", NAME))
        self.mapping = MappingNetwork(meta["mapping"])
        self.synthesis = SynthesisNetwork(meta["synthesis"])
        self.z_dim, self.w_dim = self.mapping.z_dim, self.mapping.w_dim
        self.num_ws, self.resolution = self.synthesis.num_ws, self.synthesis.resolution
        self.slots = self._slots()
        self.set_impl(impl)

    def _slots(self) -> tuple[StyleSlot, ...]:
        used: dict[int, int] = {}
        for layer, slot in self.synthesis.slot_of().items():
            if layer == "conv1":
                res = 4
            elif layer == "to_img":
                res = self.resolution
            else:
                res = 2 ** (int(layer.split(".")[1]) + 3)
            used[slot] = max(used.get(slot, 0), res)
        slots = []
        for i in range(self.num_ws):
            if i in used:
                slots.append(StyleSlot(i, used[i], group_for_resolution(used[i])))
            else:  # group of the nearest earlier used slot, so layer ranges stay contiguous
                near = max((s for s in used if s < i), default=0)
                slots.append(StyleSlot(i, 0, group_for_resolution(used.get(near, 4)), used=False))
        return tuple(slots)

    def feature_layers(self) -> list[tuple[nn.Module, int]]:
        """[(module, resolution)] whose output is the whole synthesis state after that resolution (the first
        conv at 4², each block's second conv, then the image itself), for hooks such as
        :mod:`stylerig_au.edit.local`."""
        s = self.synthesis
        blocks = [(block.conv2, 2 ** (i + 3)) for i, block in enumerate(s.blocks)]
        return [(s.conv1, 4), *blocks, (s.to_img, self.resolution)]

    @property
    def w_avg(self) -> torch.Tensor:
        """The mean w, float32 [w_dim] (estimated by the converter; see ``meta['w_avg']``)."""
        return self.mapping.w_avg

    @property
    def impl(self) -> str:
        return self.mapping.impl

    def set_impl(self, impl: str) -> MobileStyleGAN:
        """Use op implementation ``impl`` ('auto' | 'cuda' | 'ref') in every layer; returns self."""
        if impl not in IMPLS:
            raise StylerigError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        for module in self.modules():
            if isinstance(module, _Impl):
                module.impl = impl
        return self

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        """z [N, z_dim] -> image [N, 3, 1024, 1024]."""
        w = self.mapping(z, psi=psi)
        return self.synthesis(w.unsqueeze(1).repeat(1, self.num_ws, 1), noise_mode=noise_mode)


def build_mobilestylegan(ckpt: dict, impl: str = "auto", source: str = "checkpoint") -> MobileStyleGAN:
    """Build the module from a converted dict ``{'format', 'state_dict', 'meta'}`` (see the converter)."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt or "meta" not in ckpt:
        raise StylerigError(f"{source} is not a converted MobileStyleGAN file (format {FORMAT}); "
                            "re-create it with `stylerig-au pretrained fetch mobilestylegan-ffhq-1024`")
    fix = f"convert it again (`stylerig-au pretrained fetch --force {NAME}`)"
    try:
        G = MobileStyleGAN(ckpt["meta"], impl=impl)
        state = ckpt["state_dict"]
        expected = G.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise StylerigError(f"{source} does not match this MobileStyleGAN module ({len(missing)} missing, "
                                f"{len(unexpected)} unexpected weights, e.g. {example!r}); it may come from an "
                                f"older converter: {fix}")
        G.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StylerigError(f"{source} does not hold a usable MobileStyleGAN ({first[:200]}); {fix}") from exc
    return G.eval().requires_grad_(False)


def load_mobilestylegan(path: Path | str | None = None, device: str | torch.device = "cpu",
                        impl: str = "auto") -> MobileStyleGAN:
    """Load the converted MobileStyleGAN FFHQ-1024 (eval mode, parameters frozen) on ``device``.

    Args:
        path: a converted ``.pt``; None -> ``stylerig_au.pretrained.path('mobilestylegan-ffhq-1024')``
            (fetched from PyPI and converted on first use).
        device: torch device.
        impl: fused-op implementation, 'auto' | 'cuda' | 'ref'.

    Raises:
        StylerigError: missing, corrupt or wrong file (one line).
    """
    if path is None:
        from stylerig_au import pretrained

        path = pretrained.path(NAME)
    path = Path(path).expanduser()
    if not path.is_file():
        raise StylerigError(f"MobileStyleGAN file not found: {path}; pass a converted .pt or omit the path to fetch it")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        from stylerig_au.fileio import load_error_reason

        raise StylerigError(f"cannot read MobileStyleGAN file {path} ({load_error_reason(exc)}); convert it again "
                            f"(`stylerig-au pretrained fetch --force {NAME}`)") from None
    return build_mobilestylegan(ckpt, impl=impl, source=str(path)).to(device)
