"""StyleGAN2 checkpoint loaders: NVIDIA ``.pkl``, rosinality ``.pt`` and our own ``.pt``.

All three end in one :class:`~stylerig_au.models.stylegan2.StyleGAN2` whose state dict uses
NVIDIA's names. No loader executes code from the file: NVIDIA pickles go through
:func:`~stylerig_au.models.safe_pickle.load_restricted`, ``.pt`` files through
``torch.load(weights_only=True)``. A checkpoint whose keys or shapes differ from what the
architecture expects fails with a :class:`~stylerig_au.errors.StylerigError` naming the difference.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stylerig_au.errors import StylerigError
from stylerig_au.models.safe_pickle import PersistentObject, Stub, Unreadable, load_restricted
from stylerig_au.models.stylegan2 import StyleGAN2, StyleGAN2Config

OUR_FORMAT = "stylerig_au.stylegan2"
OUR_VERSION = 1


# ----------------------------------------------------------------------------------------------
# shared: config inference and strict state-dict loading


def _resolution_channels(sd: Mapping[str, torch.Tensor]) -> dict[int, int]:
    """``{res: out_channels}`` from ``synthesis.b{res}.conv1.weight`` shapes."""
    channels = {}
    for key, value in sd.items():
        m = re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", key)
        if m:
            channels[int(m.group(1))] = int(value.shape[0])
    return channels


def infer_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> StyleGAN2Config:
    """Architecture from an NVIDIA-named state dict's shapes; ``overrides`` fix what shapes cannot tell
    (``mapping_lr_multiplier``, ``conv_clamp``, ``num_fp16_res``, ``resample_filter``)."""
    where = "NVIDIA-named StyleGAN2 state dict"
    if "mapping.fc0.weight" not in sd or "synthesis.b4.const" not in sd:
        raise StylerigError(f"not a StyleGAN2 generator: expected keys 'mapping.fc0.weight' and "
                            f"'synthesis.b4.const' in the {where}")
    mapping_layers = 0
    while f"mapping.fc{mapping_layers}.weight" in sd:
        mapping_layers += 1
    w_dim, z_dim = (int(v) for v in sd["mapping.fc0.weight"].shape)
    channels = _resolution_channels(sd)
    resolution = max(channels)
    expected = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    if sorted(channels) != expected:
        raise StylerigError(f"StyleGAN2 blocks must cover resolutions {expected}, the checkpoint has {sorted(channels)}")
    channel_max = max(channels.values())
    below = [r for r in expected if channels[r] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * resolution
    cfg_channels = {r: min(channel_base // r, channel_max) for r in expected}
    if cfg_channels != channels:
        raise StylerigError(f"unsupported channel layout {channels}: expected min(channel_base // res, channel_max) "
                            "per resolution, as in StyleGAN2 config-f")
    img_channels = int(sd[f"synthesis.b{resolution}.torgb.weight"].shape[0]) \
        if f"synthesis.b{resolution}.torgb.weight" in sd else 3
    kwargs = dict(z_dim=z_dim, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                  channel_base=channel_base, channel_max=channel_max, mapping_layers=mapping_layers,
                  use_noise="synthesis.b4.conv1.noise_strength" in sd)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return StyleGAN2Config(**kwargs)


def _describe_mismatch(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> str | None:
    not_tensors = [k for k, v in got.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"{what}: entry '{not_tensors[0]}' is a {type(got[not_tensors[0]]).__name__}, expected a tensor"
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} expected key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    for k in shapes[:3]:
        parts.append(f"'{k}' has shape {list(got[k].shape)}, expected {list(expected[k].shape)}")
    if len(shapes) > 3:
        parts.append(f"(+{len(shapes) - 3} more shape mismatches)")
    return f"{what} does not match the StyleGAN2 architecture it describes: " + "; ".join(parts)


def build_from_state_dict(sd: Mapping[str, torch.Tensor], config: StyleGAN2Config, *, what: str,
                          device: str | torch.device = "cpu", impl: str = "auto", name: str = "stylegan2") -> StyleGAN2:
    """A StyleGAN2 with ``config`` holding exactly ``sd`` (NVIDIA names); strict about keys and shapes."""
    G = StyleGAN2(config, name=name, impl=impl)
    expected = G.state_dict()
    problem = _describe_mismatch(sd, expected, what)
    if problem:
        raise StylerigError(problem)
    G.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    return G.eval().requires_grad_(False).to(device)


# ----------------------------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch pickles


def _module_state(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    state = obj.state
    for group in ("_parameters", "_buffers"):
        for key, value in (state.get(group) or {}).items():
            if value is not None:
                out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentObject):
            _module_state(child, f"{prefix}{key}.", out)


def _child(obj: PersistentObject, name: str) -> PersistentObject | None:
    child = (obj.state.get("_modules") or {}).get(name)
    return child if isinstance(child, PersistentObject) else None


def _nvidia_overrides(G: PersistentObject, sd: Mapping[str, Any]) -> dict[str, Any]:
    """What shapes cannot tell, from the pickled init kwargs (and the modules' own attributes)."""
    kwargs = G.state.get("_init_kwargs") or {}
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    mapping_kw = kwargs.get("mapping_kwargs") or {}
    synthesis_kw = kwargs.get("synthesis_kwargs") or {}
    if int(kwargs.get("c_dim", G.state.get("c_dim", 0)) or 0) != 0:
        raise StylerigError(f"conditional StyleGAN2 (c_dim={kwargs.get('c_dim', G.state.get('c_dim'))}) is not "
                            "supported; expected an unconditional generator (c_dim=0)")
    arch = synthesis_kw.get("architecture", "skip")
    if arch != "skip":
        raise StylerigError(f"StyleGAN2 synthesis architecture {arch!r} is not supported; expected 'skip' (config-e/f)")
    for kw, value in (("mapping activation", mapping_kw.get("activation", "lrelu")),
                      ("synthesis activation", synthesis_kw.get("activation", "lrelu"))):
        if value != "lrelu":
            raise StylerigError(f"{kw} {value!r} is not supported; expected 'lrelu'")
    layer_features = mapping_kw.get("layer_features")
    if layer_features is not None and "mapping.fc0.weight" in sd and layer_features != sd["mapping.fc0.weight"].shape[0]:
        raise StylerigError("mapping layer_features different from w_dim is not supported")
    synthesis = _child(G, "synthesis")
    b4 = _child(synthesis, "b4") if synthesis else None
    layer = _child(b4, "conv1") if b4 else None
    conv_clamp = synthesis_kw.get("conv_clamp", layer.state.get("conv_clamp") if layer else None)
    num_fp16_res = synthesis_kw.get("num_fp16_res")
    if num_fp16_res is None and synthesis is not None:
        num_fp16_res = sum(bool(c.state.get("use_fp16")) for c in (synthesis.state.get("_modules") or {}).values()
                           if isinstance(c, PersistentObject))
    lr = mapping_kw.get("lr_multiplier")
    fc0 = _child(_child(G, "mapping"), "fc0") if _child(G, "mapping") else None
    if lr is None and fc0 is not None and isinstance(fc0.state.get("bias_gain"), (int, float)):
        lr = fc0.state["bias_gain"]
    rf = synthesis_kw.get("resample_filter")
    return dict(mapping_lr_multiplier=None if lr is None else float(lr),
                conv_clamp=None if conv_clamp is None else float(conv_clamp),
                num_fp16_res=None if num_fp16_res is None else int(num_fp16_res),
                resample_filter=None if rf is None else tuple(int(v) for v in rf))


def load_nvidia_pickle(path: str | Path, *, device: str | torch.device = "cpu", impl: str = "auto",
                       key: str = "G_ema") -> StyleGAN2:
    """Load the generator ``key`` ('G_ema', else 'G') of an NVIDIA stylegan2-ada-pytorch ``.pkl``.

    The pickle is read with :func:`~stylerig_au.models.safe_pickle.load_restricted`: the module source
    embedded in it is never imported or executed.
    """
    path = Path(path)
    data = load_restricted(path)
    if isinstance(data, dict):
        G = data.get(key) if key in data else data.get("G")
        if G is None:
            raise StylerigError(f"{path.name}: no {key!r} or 'G' entry; expected an NVIDIA stylegan2-ada-pytorch "
                                f"snapshot (keys found: {', '.join(map(str, list(data)[:8]))})")
    else:
        G = data
    if isinstance(G, Stub) and "tflib" in G._qualname:
        raise StylerigError(f"{path.name} is a TensorFlow StyleGAN2 pickle; expected a stylegan2-ada-pytorch "
                            "pickle (convert it with NVIDIA's legacy.py first)")
    if not isinstance(G, PersistentObject) or not _child(G, "synthesis") or not _child(G, "mapping"):
        raise StylerigError(f"{path.name}: the generator is not a stylegan2-ada-pytorch module with 'mapping' and "
                            "'synthesis' submodules")
    if _child(_child(G, "synthesis"), "input") is not None:
        raise StylerigError(f"{path.name} holds a StyleGAN3 generator; expected StyleGAN2 (stylegan2-ada-pytorch)")
    sd: dict[str, Any] = {}
    _module_state(G, "", sd)
    bad = [k for k, v in sd.items() if isinstance(v, Unreadable) or not isinstance(v, torch.Tensor)]
    if bad:
        reason = sd[bad[0]].error if isinstance(sd[bad[0]], Unreadable) else "not a tensor"
        raise StylerigError(f"{path.name}: tensor '{bad[0]}' could not be read ({reason})")
    filters = {k: sd.pop(k) for k in [k for k in sd if k.endswith("resample_filter")]}
    overrides = _nvidia_overrides(G, sd)
    config = infer_config(sd, **overrides)
    model = build_from_state_dict(sd, config, what=f"{path.name} ({key})", device=device, impl=impl,
                                  name=f"stylegan2:{path.stem}")
    for k, f in filters.items():  # the filter buffers are derived from config.resample_filter; check they agree
        ours = model.get_buffer(k) if _has_buffer(model, k) else None
        if ours is None or tuple(ours.shape) != tuple(f.shape) or not torch.allclose(ours.cpu(), f.float(), atol=1e-6):
            raise StylerigError(f"{path.name}: buffer '{k}' differs from the filter {list(config.resample_filter)} "
                                "its init arguments describe")
    return model


def _has_buffer(model: torch.nn.Module, key: str) -> bool:
    try:
        model.get_buffer(key)
        return True
    except AttributeError:
        return False


def nvidia_init_kwargs(config: StyleGAN2Config) -> dict[str, Any]:
    """The stylegan2-ada-pytorch ``Generator(**kwargs)`` arguments that describe ``config``."""
    return dict(
        z_dim=config.z_dim, c_dim=0, w_dim=config.w_dim, img_resolution=config.resolution,
        img_channels=config.img_channels,
        mapping_kwargs=dict(num_layers=config.mapping_layers, lr_multiplier=config.mapping_lr_multiplier),
        synthesis_kwargs=dict(channel_base=config.channel_base, channel_max=config.channel_max,
                              num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp,
                              resample_filter=list(config.resample_filter), use_noise=config.use_noise),
    )


# ----------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch checkpoints


def _rosinality_noise_target(i: int) -> str:
    res = 2 ** ((i + 5) // 2)
    conv = "conv1" if i == 0 or i % 2 == 0 else "conv0"
    return f"synthesis.b{res}.{conv}.noise_const"


def rosinality_to_nvidia(g_ema: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a rosinality ``g_ema`` state dict to NVIDIA names (and NVIDIA shapes).

    Buffers rosinality derives from the blur kernel (``*.kernel``) are dropped; an unknown key raises.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    num_rgbs = sum(1 for k in g_ema if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    res_of = {i: 2 ** (i + 3) for i in range(num_rgbs)}

    def put_conv(dst: str, rest: str, value: torch.Tensor) -> bool:
        table = {"conv.weight": ("weight", lambda t: t.squeeze(0)),
                 "conv.modulation.weight": ("affine.weight", None), "conv.modulation.bias": ("affine.bias", None),
                 "noise.weight": ("noise_strength", lambda t: t.reshape([])),
                 "activate.bias": ("bias", None)}
        if rest not in table:
            return rest.endswith("kernel")
        name, fn = table[rest]
        out[f"{dst}.{name}"] = fn(value) if fn else value
        return True

    def put_rgb(dst: str, rest: str, value: torch.Tensor) -> bool:
        table = {"conv.weight": ("weight", lambda t: t.squeeze(0)),
                 "conv.modulation.weight": ("affine.weight", None), "conv.modulation.bias": ("affine.bias", None),
                 "bias": ("bias", lambda t: t.reshape(-1))}
        if rest not in table:
            return rest.endswith("kernel")
        name, fn = table[rest]
        out[f"{dst}.{name}"] = fn(value) if fn else value
        return True

    for key, value in g_ema.items():
        ok = True
        if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
            out[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = value
        elif key == "input.input":
            out["synthesis.b4.const"] = value.squeeze(0)
        elif m := re.fullmatch(r"conv1\.(.+)", key):
            ok = put_conv("synthesis.b4.conv1", m.group(1), value)
        elif m := re.fullmatch(r"to_rgb1\.(.+)", key):
            ok = put_rgb("synthesis.b4.torgb", m.group(1), value)
        elif m := re.fullmatch(r"convs\.(\d+)\.(.+)", key):
            i = int(m.group(1))
            ok = put_conv(f"synthesis.b{2 ** (i // 2 + 3)}.conv{i % 2}", m.group(2), value)
        elif m := re.fullmatch(r"to_rgbs\.(\d+)\.(.+)", key):
            ok = put_rgb(f"synthesis.b{res_of.get(int(m.group(1)), 0)}.torgb", m.group(2), value)
        elif m := re.fullmatch(r"noises\.noise_(\d+)", key):
            out[_rosinality_noise_target(int(m.group(1)))] = value.reshape(value.shape[-2:])
        else:
            ok = False
        if not ok:
            unknown.append(key)
    if unknown:
        raise StylerigError(f"rosinality checkpoint has unexpected key(s) {', '.join(unknown[:3])}"
                            f"{' ...' if len(unknown) > 3 else ''}; expected only style.*, input.input, conv1.*, "
                            "to_rgb1.*, convs.*, to_rgbs.*, noises.*")
    return out


def nvidia_to_rosinality(sd: Mapping[str, torch.Tensor], config: StyleGAN2Config) -> dict[str, torch.Tensor]:
    """The inverse of :func:`rosinality_to_nvidia` (without the blur-kernel buffers)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)

    def conv(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]

    def rgb(src: str, dst: str) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"].unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)

    conv("synthesis.b4.conv1", "conv1")
    rgb("synthesis.b4.torgb", "to_rgb1")
    noise = 0
    out[f"noises.noise_{noise}"] = sd["synthesis.b4.conv1.noise_const"].reshape(1, 1, 4, 4)
    for i, res in enumerate(config.block_resolutions[1:]):
        for c in (0, 1):
            conv(f"synthesis.b{res}.conv{c}", f"convs.{2 * i + c}")
            noise += 1
            out[f"noises.noise_{noise}"] = sd[f"synthesis.b{res}.conv{c}.noise_const"].reshape(1, 1, res, res)
        rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{i}")
    return out


def load_rosinality(ckpt: Mapping[str, Any], *, name: str, device: str | torch.device = "cpu",
                    impl: str = "auto") -> StyleGAN2:
    """A StyleGAN2 from a loaded rosinality checkpoint dict (``g_ema`` [+ ``latent_avg``, ``args``]).

    Without ``latent_avg``, ``w_avg`` is estimated from 10k mapped samples.
    """
    g_ema = ckpt["g_ema"]
    if not isinstance(g_ema, Mapping):
        raise StylerigError(f"{name}: 'g_ema' is not a state dict")
    sd = rosinality_to_nvidia(g_ema)
    args = ckpt.get("args")
    lr_mlp = getattr(args, "lr_mlp", None) if args is not None else None
    latent_avg = ckpt.get("latent_avg")
    if isinstance(latent_avg, torch.Tensor):
        sd["mapping.w_avg"] = latent_avg.reshape(-1)
    config = infer_config(sd, mapping_lr_multiplier=lr_mlp, num_fp16_res=0, conv_clamp=None)
    if "mapping.w_avg" not in sd:
        sd["mapping.w_avg"] = torch.zeros(config.w_dim)
    G = build_from_state_dict(sd, config, what=f"{name} (rosinality g_ema)", device=device, impl=impl,
                              name=f"stylegan2:{Path(name).stem}")
    if not isinstance(latent_avg, torch.Tensor):
        G.compute_w_avg()
    return G


# ----------------------------------------------------------------------------------------------
# our own format and the .pt dispatcher


def save_stylegan2(G: StyleGAN2, path: str | Path) -> Path:
    """Write ``G`` as our ``.pt`` (config + NVIDIA-named state dict), atomically; returns the path."""
    path = Path(path)
    payload = {"format": OUR_FORMAT, "version": OUR_VERSION, "name": G.name, "config": G.config.to_dict(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}}
    _atomic_torch_save(payload, path)
    return path


def save_rosinality(G: StyleGAN2, path: str | Path, *, with_latent_avg: bool = True) -> Path:
    """Write ``G`` as a rosinality-style checkpoint (``g_ema`` [+ ``latent_avg``]), e.g. for tests or export."""
    sd = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    payload: dict[str, Any] = {"g_ema": nvidia_to_rosinality(sd, G.config)}
    if with_latent_avg:
        payload["latent_avg"] = sd["mapping.w_avg"]
    _atomic_torch_save(payload, Path(path))
    return Path(path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from stylerig_au.fileio import atomic_torch_save

    atomic_torch_save(path, obj)


def load_pt(path: str | Path, *, device: str | torch.device = "cpu", impl: str = "auto") -> StyleGAN2:
    """Load a StyleGAN2 ``.pt``: our format, or a rosinality checkpoint (``g_ema``); weights only."""
    path = Path(path)
    if not path.is_file():
        raise StylerigError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt / unsafe files
        from stylerig_au.fileio import load_error_reason

        raise StylerigError(f"cannot load {path.name} as a weights-only torch checkpoint ({load_error_reason(err)})") from None
    if not isinstance(ckpt, Mapping):
        raise StylerigError(f"{path.name}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if ckpt.get("format") == OUR_FORMAT:
        if ckpt.get("version") != OUR_VERSION:
            raise StylerigError(f"{path.name}: format version {ckpt.get('version')} is not supported "
                                f"(expected {OUR_VERSION}); upgrade stylerig_au")
        if not isinstance(ckpt.get("config"), Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
            raise StylerigError(f"{path.name}: expected 'config' and 'state_dict' dicts in a {OUR_FORMAT} file")
        try:
            config = StyleGAN2Config(**ckpt["config"])
        except TypeError as err:
            raise StylerigError(f"{path.name}: bad StyleGAN2 config ({err})") from None
        return build_from_state_dict(ckpt["state_dict"], config, what=path.name, device=device, impl=impl,
                                     name=str(ckpt.get("name") or f"stylegan2:{path.stem}"))
    if "g_ema" in ckpt:
        return load_rosinality(ckpt, name=path.name, device=device, impl=impl)
    raise StylerigError(f"{path.name}: unknown checkpoint layout (keys: {', '.join(map(str, list(ckpt)[:6]))}); "
                        f"expected a rosinality checkpoint with 'g_ema' or a stylerig_au StyleGAN2 file")
