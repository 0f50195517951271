"""StyleGAN2 (Karras et al. 2020, the NVIDIA "skip" generator, config-f and smaller channel settings).

The module tree and parameter names follow NVIDIA stylegan2-ada-pytorch (``mapping.fc0.weight``,
``synthesis.b64.conv1.affine.bias``, ...), so an NVIDIA ``G_ema`` state dict loads as is; rosinality
checkpoints are renamed onto it by :mod:`stylerig_au.models.checkpoints`.

Every blur / resample goes through :func:`stylerig_au.ops.upfirdn2d` and every biased activation
through :func:`stylerig_au.ops.bias_act`, with the generator's ``impl`` ('auto' | 'cuda' | 'ref').

``G.mapping(z, psi)`` and ``G.synthesis(ws)`` are the submodules themselves, so the
:class:`~stylerig_au.models.protocol.Generator` protocol and the NVIDIA names coincide.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stylerig_au import ops
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot, group_for_resolution

NOISE_MODES = ("const", "random", "none")
LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class StyleGAN2Config:
    """Architecture hyper-parameters (NVIDIA's names in brackets).

    Channels at resolution r are ``min(channel_base // r, channel_max)``: config-f is
    ``channel_base=32768, channel_max=512``; rosinality's ``channel_multiplier=m`` is ``channel_base=16384*m``.
    """

    z_dim: int = 512
    w_dim: int = 512
    resolution: int = 1024  # [img_resolution], a power of two >= 4
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mapping_layers: int = 8  # [mapping_kwargs.num_layers]
    mapping_lr_multiplier: float = 0.01  # [mapping_kwargs.lr_multiplier]; scales stored mapping weights
    num_fp16_res: int = 0  # the N highest resolutions run in fp16 on CUDA
    conv_clamp: float | None = None  # clamp conv outputs to +-X (NVIDIA uses 256 with fp16)
    resample_filter: tuple[int, ...] = field(default=(1, 3, 3, 1))
    use_noise: bool = True

    def __post_init__(self) -> None:
        res = self.resolution
        if res < 4 or res & (res - 1):
            raise StylerigError(f"StyleGAN2 resolution must be a power of two >= 4, got {res}")
        for name in ("z_dim", "w_dim", "img_channels", "channel_base", "channel_max", "mapping_layers"):
            if int(getattr(self, name)) < 1:
                raise StylerigError(f"StyleGAN2 {name} must be >= 1, got {getattr(self, name)}")
        if self.channel_base // res < 1:
            raise StylerigError(f"StyleGAN2 channel_base {self.channel_base} leaves no channels at {res}²; "
                                f"expected channel_base >= resolution")
        object.__setattr__(self, "resample_filter", tuple(int(v) for v in self.resample_filter))

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return {**asdict(self), "resample_filter": list(self.resample_filter)}


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class _ImplMixin:
    """Holds the op implementation ('auto' | 'cuda' | 'ref'); :meth:`StyleGAN2.set_impl` sets it everywhere."""

    impl: str = "auto"


class FullyConnectedLayer(_ImplMixin, nn.Module):
    """Equalised-learning-rate linear layer: ``act(x @ (W * lr/sqrt(in)).T + b * lr)``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation, impl=self.impl)


class MappingNetwork(_ImplMixin, nn.Module):
    """z [N, z_dim] -> w [N, w_dim]: 2nd-moment normalisation, then ``num_layers`` lrelu FC layers.

    Buffer ``w_avg`` [w_dim] is the truncation centre.
    """

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_layers = cfg.z_dim, cfg.w_dim, cfg.mapping_layers
        features = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for idx in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=cfg.mapping_lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """Map z [N, z_dim] (standard normal) to w [N, w_dim] float32, truncated towards w_avg by psi."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise StylerigError(f"mapping expects z of shape [N, {self.z_dim}], got {list(z.shape)}")
        x = _normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if psi != 1:
            x = self.w_avg.lerp(x, psi)
        return x


def _modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                      noise: torch.Tensor | None = None, up: int = 1, padding: int = 0,
                      resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                      fused: bool = True, impl: str = "auto") -> torch.Tensor:
    """Modulated (and demodulated) conv of x [N, I, H, W] with weight [O, I, k, k] and styles [N, I].

    ``up=2`` is a stride-2 transposed conv followed by the low-pass ``resample_filter`` (NVIDIA's
    conv2d_resample for a 3x3 kernel). Returns [N, O, H*up, W*up] in x's dtype.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # keep fp16 products in range; demodulation undoes the scale
        weight = weight * (1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if fused:
        if demodulate:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)
        x = _conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, in_ch, kh, kw).to(x.dtype),
                             resample_filter, up=up, padding=padding, groups=n, impl=impl)
        x = x.reshape(n, -1, *x.shape[2:])
        return x if noise is None else x + noise.to(x.dtype)
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = _conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding, groups=1, impl=impl)
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    return x if noise is None else x + noise.to(x.dtype)


def _conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, *, up: int, padding: int,
                     groups: int, impl: str) -> torch.Tensor:
    """Correlation with w [O, I/groups, k, k]; for ``up=2``: transposed conv, then filter f (gain up**2)."""
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if f is None:
        raise ValueError("upsampling conv needs a resample filter")
    out_ch, in_per_group, kh, kw = w.shape
    # conv_transpose2d wants [I, O/groups, k, k]
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    fw = f.shape[-1]
    # padding of the upsampled signal, minus what the transposed conv already grew (k-1 on the left, k-up on the right)
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    pre = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, w, stride=up, padding=pre, groups=groups)
    return ops.upfirdn2d(x, f, padding=[p0 + pre, p1 + pre, p0 + pre, p1 + pre], gain=up**2, impl=impl)


class SynthesisLayer(_ImplMixin, nn.Module):
    """3x3 modulated conv (optionally 2x up), + per-pixel noise, + bias, lrelu (gain sqrt 2, optional clamp)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1,
                 cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, cfg.use_noise, cfg.conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(list(cfg.resample_filter)), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        if cfg.use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = _modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1,
                              resample_filter=self.resample_filter, fused=fused, impl=self.impl)
        return ops.bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=LRELU_GAIN, clamp=self.conv_clamp,
                            impl=self.impl)


class ToRGBLayer(_ImplMixin, nn.Module):
    """1x1 modulated conv without demodulation, + bias (optional clamp): features -> RGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = _modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused, impl=self.impl)
        return ops.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.impl)


class SynthesisBlock(_ImplMixin, nn.Module):
    """One resolution: (const | 2x-up conv0), conv1, to-RGB added to the upsampled running image."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", ops.setup_filter(list(cfg.resample_filter)), persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, cfg.w_dim, resolution, up=2, cfg=cfg)
        self.conv1 = SynthesisLayer(out_channels, out_channels, cfg.w_dim, resolution, cfg=cfg)
        self.torgb = ToRGBLayer(out_channels, cfg.img_channels, cfg.w_dim, cfg.conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *, dtype: torch.dtype,
                noise_mode: str, fused: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
        if fused is None:
            fused = not self.training and (dtype == torch.float32 or ws.shape[0] == 1)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), noise_mode, fused)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode, fused)
            x = self.conv1(x, next(w_iter), noise_mode, fused)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter, impl=self.impl)
        y = self.torgb(x, next(w_iter), fused).to(torch.float32)
        return x, (y if img is None else img + y)


class SynthesisNetwork(_ImplMixin, nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, img_channels, resolution, resolution] (float32, nominally [-1, 1]).

    Slot layout (NVIDIA): block r uses ``num_conv`` slots for its convs, and its to-RGB shares the
    next block's first slot; ``num_ws = 2 * log2(resolution) - 2`` (18 at 1024²).
    """

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.w_dim, self.resolution = cfg.w_dim, cfg.resolution
        self.block_resolutions = cfg.block_resolutions
        self.num_fp16_res = cfg.num_fp16_res
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, cfg.channels(res), res, cfg))
        self.num_ws = 2 * len(self.block_resolutions)

    def fp16_resolution(self) -> int:
        """Blocks at this resolution and above run in fp16 on CUDA (per ``num_fp16_res``)."""
        log2 = len(self.block_resolutions) + 1
        return max(2 ** (log2 + 1 - self.num_fp16_res), 8) if self.num_fp16_res > 0 else 2**31

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False,
                fused_modconv: bool | None = None) -> torch.Tensor:
        """Render ws [N, num_ws, w_dim]; ``noise_mode``: 'const' (fixed buffers), 'random' or 'none'."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise StylerigError(f"synthesis expects ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise_mode not in NOISE_MODES:
            raise StylerigError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        fp16_from = self.fp16_resolution() if ws.is_cuda and not force_fp32 else 2**31
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            dtype = torch.float16 if res >= fp16_from else torch.float32
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + 1), dtype=dtype, noise_mode=noise_mode,
                           fused=fused_modconv)
            w_idx += block.num_conv
        return img


class StyleGAN2(nn.Module):
    """The StyleGAN2 generator behind the :class:`~stylerig_au.models.protocol.Generator` protocol.

    ``G.mapping(z, psi)`` -> w [N, w_dim]; ``G.synthesis(ws, noise_mode='const')`` -> image
    [N, 3, resolution, resolution] float32, nominally in [-1, 1] (not clamped, so gradients flow).
    """

    def __init__(self, config: StyleGAN2Config | None = None, *, name: str = "stylegan2", impl: str = "auto") -> None:
        super().__init__()
        self.config = config or StyleGAN2Config()
        self.name = name
        self.z_dim, self.w_dim = self.config.z_dim, self.config.w_dim
        self.resolution = self.config.resolution
        self.synthesis = SynthesisNetwork(self.config)
        self.mapping = MappingNetwork(self.config)
        self.num_ws = self.synthesis.num_ws
        self.slots = tuple(
            StyleSlot(i, r, group_for_resolution(r)) for i, r in enumerate(self.slot_resolutions())
        )
        self.set_impl(impl)

    def feature_layers(self) -> list[tuple[nn.Module, int]]:
        """[(block, resolution)] for each synthesis block; a block's output (features, running image) is the
        whole synthesis state after its resolution (for hooks such as :mod:`stylerig_au.edit.local`)."""
        return [(getattr(self.synthesis, f"b{r}"), r) for r in self.synthesis.block_resolutions]

    @property
    def w_avg(self) -> torch.Tensor:
        """The mean w, float32 [w_dim] (the ``mapping.w_avg`` buffer)."""
        return self.mapping.w_avg

    @property
    def impl(self) -> str:
        return self.mapping.impl

    def set_impl(self, impl: str) -> StyleGAN2:
        """Use op implementation ``impl`` ('auto' | 'cuda' | 'ref') in every layer; returns self."""
        if impl not in ("auto", "cuda", "ref"):
            raise StylerigError(f"impl must be 'auto', 'cuda' or 'ref', got {impl!r}")
        for module in self.modules():
            if isinstance(module, _ImplMixin):
                module.impl = impl
        return self

    def slot_resolutions(self) -> list[int]:
        """Feature resolution each W+ slot modulates: slot i drives ``4 * 2**((i + 1) // 2)`` (capped)."""
        return [min(4 * 2 ** ((i + 1) // 2), self.resolution) for i in range(self.num_ws)]

    def forward(self, z: torch.Tensor, psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        """z [N, z_dim] -> image [N, 3, R, R]."""
        w = self.mapping(z, psi=psi)
        return self.synthesis(w.unsqueeze(1).repeat(1, self.num_ws, 1), noise_mode=noise_mode)

    @torch.no_grad()
    def compute_w_avg(self, num_samples: int = 10000, seed: int = 0, batch: int = 1000) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``num_samples`` mapped z (for checkpoints that lack it); returns it."""
        gen = torch.Generator().manual_seed(seed)
        total = torch.zeros(self.w_dim, dtype=torch.float64, device=self.w_avg.device)
        done = 0
        while done < num_samples:
            n = min(batch, num_samples - done)
            z = torch.randn(n, self.z_dim, generator=gen).to(self.w_avg.device)
            total += self.mapping(z).sum(0).double()
            done += n
        self.mapping.w_avg.copy_((total / num_samples).float())
        return self.w_avg
