"""Convert the MobileStyleGAN OpenVINO IR (from the ``random-face`` wheel) into a stylerig_au file.

An OpenVINO IR is an XML graph (layers + edges) and a raw ``.bin``; every ``Const`` layer names an
``offset``, ``size``, ``shape`` and ``element_type`` into the ``.bin``, so numpy alone reads every
weight. Most synthesis constants keep their PyTorch names (``m.layers.3.conv2.conv.modulation.weight``);
the rest (folded conv weights, baked noise, activation slopes, the mapping network's whole
parameter set, the inverse-Haar filters) were renamed by constant folding, so :func:`convert` finds
them by following the graph from the named ones.

The converted file is one ``torch.save`` dict::

    {'format': 'stylerig_au-mobilestylegan-v1',
     'state_dict': {name: float32 tensor},   # MobileStyleGAN's own state_dict names
     'meta': {...}}                          # plain Python values (see :func:`convert`)

No OpenVINO is needed to convert or to run the result.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stylerig_au.errors import AssetError
from stylerig_au.fileio import atomic_torch_save

FORMAT = "stylerig_au-mobilestylegan-v1"
MEMBER_PREFIX = "random_face/data/"
MAPPING = "MappingNetwork"
SYNTHESIS = "SynthesisNetwork"
# w_avg is not stored in the IR (random_face estimates it at start-up from 4096 samples); we estimate it
# once here, deterministically, from more samples.
W_AVG_SAMPLES = 100_000
W_AVG_SEED = 0

_DTYPES = {
    "f32": np.float32, "f16": np.float16, "f64": np.float64,
    "i64": np.int64, "i32": np.int32, "i8": np.int8, "u8": np.uint8, "u64": np.uint64, "u32": np.uint32,
    "boolean": np.bool_,
}


@dataclass
class Layer:
    """One IR layer: its id, name, type, ``<data>`` attributes, and input edges port -> (layer id, port)."""

    id: str
    name: str
    type: str
    data: dict[str, str]
    inputs: dict[int, tuple[str, int]] = field(default_factory=dict)
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    out_ports: list[int] = field(default_factory=list)


class IRGraph:
    """A parsed OpenVINO IR (v10/v11) with numpy access to its constants.

    Args:
        xml_path: the ``.xml`` graph.
        bin_path: the ``.bin`` weights it refers to.

    Raises:
        AssetError: a missing, unreadable or inconsistent file.
    """

    def __init__(self, xml_path: Path, bin_path: Path) -> None:
        try:
            root = ET.parse(xml_path).getroot()
            self._bin = np.fromfile(bin_path, dtype=np.uint8)
        except (OSError, ET.ParseError) as exc:
            raise AssetError(f"cannot read OpenVINO IR {Path(xml_path).name}: {exc}") from exc
        if root.tag != "net" or root.find("layers") is None or root.find("edges") is None:
            raise AssetError(f"{Path(xml_path).name} is not an OpenVINO IR graph (no <net>/<layers>/<edges>)")
        self.layers: dict[str, Layer] = {}
        for el in root.find("layers"):
            data = el.find("data")
            out = el.find("output")
            shapes, ports = [], []
            if out is not None:
                for port in out.findall("port"):
                    shapes.append(tuple(int(d.text) for d in port.findall("dim")))
                    ports.append(int(port.get("id")))
            layer = Layer(el.get("id"), el.get("name", ""), el.get("type", ""),
                          dict(data.attrib) if data is not None else {}, out_shapes=shapes, out_ports=ports)
            self.layers[layer.id] = layer
        self.consumers: dict[str, list[tuple[str, int]]] = {lid: [] for lid in self.layers}
        for edge in root.find("edges"):
            src, dst = edge.get("from-layer"), edge.get("to-layer")
            if src not in self.layers or dst not in self.layers:
                raise AssetError(f"{Path(xml_path).name}: an edge names an unknown layer")
            self.layers[dst].inputs[int(edge.get("to-port"))] = (src, int(edge.get("from-port")))
            self.consumers[src].append((dst, int(edge.get("to-port"))))
        self.by_name = {layer.name: layer for layer in self.layers.values()}

    # -- constants -------------------------------------------------------------------------------
    def const(self, layer: Layer | str) -> np.ndarray:
        """The value of a ``Const`` layer (given or by name) as a numpy array of its own shape and dtype."""
        if isinstance(layer, str):
            if layer not in self.by_name:
                raise AssetError(f"OpenVINO IR has no constant named {layer!r}; "
                                 "is this the random-face 2021.7.21.1 IR?")
            layer = self.by_name[layer]
        if layer.type != "Const":
            raise AssetError(f"IR layer {layer.name!r} is a {layer.type}, not a Const")
        d = layer.data
        dtype = _DTYPES.get(d.get("element_type", ""))
        if dtype is None:
            raise AssetError(f"IR constant {layer.name!r} has unsupported element type {d.get('element_type')!r}")
        offset, size = int(d["offset"]), int(d["size"])
        shape = tuple(int(s) for s in d.get("shape", "").replace(" ", "").split(",") if s != "")
        if offset < 0 or offset + size > self._bin.size:
            raise AssetError(f"IR constant {layer.name!r} lies outside the .bin (truncated or wrong file?)")
        arr = self._bin[offset:offset + size].view(dtype)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise AssetError(f"IR constant {layer.name!r}: {size} bytes do not fill shape {shape}")
        return arr.reshape(shape).copy()

    # -- graph navigation -------------------------------------------------------------------------
    def producer(self, layer: Layer, port: int) -> Layer:
        """The layer feeding input ``port`` of ``layer``."""
        if port not in layer.inputs:
            raise AssetError(f"IR layer {layer.name!r} has no input {port}")
        return self.layers[layer.inputs[port][0]]

    def users(self, layer: Layer, out_port: int | None = None) -> list[Layer]:
        """The layers consuming ``layer``'s outputs (or only its ``out_port``-th output), in edge order."""
        if out_port is not None:
            out_port = layer.out_ports[out_port]
        found = []
        for dst, _ in self.consumers[layer.id]:
            target = self.layers[dst]
            if out_port is not None and not any(
                    src == (layer.id, out_port) for src in target.inputs.values()):
                continue
            if target not in found:
                found.append(target)
        return found

    def only_user(self, layer: Layer, types: tuple[str, ...], out_port: int | None = None) -> Layer:
        """The single consumer of ``layer`` whose type is one of ``types`` (shape-plumbing ones ignored)."""
        hits = [u for u in self.users(layer, out_port) if u.type in types]
        if len(hits) != 1:
            raise AssetError(f"IR layer {layer.name!r}: expected one {'/'.join(types)} consumer, found {len(hits)}")
        return hits[0]

    def const_input(self, layer: Layer) -> np.ndarray:
        """The value of ``layer``'s one ``Const`` input (e.g. the weight of a MatMul or Convolution)."""
        consts = [self.producer(layer, p) for p in sorted(layer.inputs)
                  if self.producer(layer, p).type == "Const"]
        if len(consts) != 1:
            raise AssetError(f"IR layer {layer.name!r}: expected one constant input, found {len(consts)}")
        return self.const(consts[0])

    def of_type(self, type_: str) -> list[Layer]:
        """Layers of one type in XML (topological for IRs written by OpenVINO) order."""
        return [layer for layer in self.layers.values() if layer.type == type_]


def _scalar(value: np.ndarray) -> float:
    if value.size != 1:
        raise AssetError(f"expected a scalar IR constant, got shape {value.shape}")
    return float(value.reshape(()))


def _bias_from_add(g: IRGraph, add: Layer) -> np.ndarray:
    """The bias of an ``Add`` whose other input is a constant, possibly behind a (batch-size) Reshape."""
    for port in sorted(add.inputs):
        src = g.producer(add, port)
        if src.type == "Const":
            return g.const(src).reshape(-1)
        if src.type == "Reshape" and g.producer(src, 0).type == "Const":
            return g.const(g.producer(src, 0)).reshape(-1)
    raise AssetError(f"IR layer {add.name!r}: no constant bias input")


# --------------------------------------------------------------------------------------------------
# Mapping network
# --------------------------------------------------------------------------------------------------
def read_mapping(g: IRGraph) -> tuple[dict[str, np.ndarray], dict]:
    """Recover the mapping network (pixel norm + N × (linear, bias, leaky ReLU, gain)) by following the graph.

    Returns:
        (state, meta): ``mapping.weight{i}`` [out, in] and ``mapping.bias{i}`` [out] float32 arrays,
        and per-layer ``slope`` / ``gain`` floats plus the pixel-norm ``eps``.
    """
    params = g.of_type("Parameter")
    if len(params) != 1:
        raise AssetError("MappingNetwork IR: expected one input")
    z_dim = params[0].out_shapes[0][-1]
    # Pixel norm: x * c * ((mean(x ** 2) + eps) ** 0.5) ** -1, folded into Power/ReduceMean/Add/Multiply.
    square = g.only_user(params[0], ("Power",))
    reduce = g.only_user(square, ("ReduceMean",))
    add = g.only_user(reduce, ("Add",))
    eps = _scalar(g.const_input(add))
    sqrt = g.only_user(add, ("Power",))
    recip = g.only_user(sqrt, ("Power",))
    scale = g.only_user(recip, ("Multiply",))
    exponents = [_scalar(g.const_input(n)) for n in (square, sqrt, recip, scale)]
    if exponents != [2.0, 0.5, -1.0, 1.0]:
        raise AssetError(f"MappingNetwork IR: unexpected pixel-norm constants {exponents} (want 2, 0.5, -1, 1)")
    matmuls = g.of_type("MatMul")
    state: dict[str, np.ndarray] = {}
    layers_meta = []
    for i, mm in enumerate(matmuls):
        if mm.data.get("transpose_b") != "true" or mm.data.get("transpose_a", "false") != "false":
            raise AssetError(f"MappingNetwork IR: unexpected MatMul layout in {mm.name!r}")
        weight = g.const_input(mm)
        add = g.only_user(mm, ("Add",))
        bias = _bias_from_add(g, add)
        act = g.only_user(add, ("PReLU",))
        slope = _scalar(g.const_input(act))
        mul = g.only_user(act, ("Multiply",))
        gain = _scalar(g.const_input(mul))
        state[f"mapping.weight{i}"] = weight.astype(np.float32)
        state[f"mapping.bias{i}"] = bias.astype(np.float32)
        layers_meta.append({"slope": slope, "gain": gain})
    if not matmuls:
        raise AssetError("MappingNetwork IR: no linear layers found")
    w_dim = state[f"mapping.weight{len(matmuls) - 1}"].shape[0]
    return state, {"z_dim": int(z_dim), "w_dim": int(w_dim), "pixel_norm_eps": eps, "layers": layers_meta}


def _mapping_numpy(state: dict[str, np.ndarray], meta: dict, z: np.ndarray) -> np.ndarray:
    """The mapping network in numpy float32 (for the w_avg estimate): z [N, z_dim] -> w [N, w_dim]."""
    x = z.astype(np.float32)
    x = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + np.float32(meta["pixel_norm_eps"]))
    for i, lm in enumerate(meta["layers"]):
        x = x @ state[f"mapping.weight{i}"].T + state[f"mapping.bias{i}"]
        x = np.where(x >= 0, x, x * np.float32(lm["slope"])) * np.float32(lm["gain"])
    return x


def estimate_w_avg(state: dict[str, np.ndarray], meta: dict, n: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED,
                   chunk: int = 10_000) -> np.ndarray:
    """Mean of the mapped w over ``n`` standard-normal z from ``numpy.random.default_rng(seed)``; float32 [w_dim]."""
    rng = np.random.default_rng(seed)
    total = np.zeros(meta["w_dim"], dtype=np.float64)
    done = 0
    while done < n:
        m = min(chunk, n - done)
        total += _mapping_numpy(state, meta, rng.standard_normal((m, meta["z_dim"]), dtype=np.float32)).sum(0)
        done += m
    return (total / n).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Synthesis network
# --------------------------------------------------------------------------------------------------
def _modulation(g: IRGraph, prefix: str) -> tuple[dict[str, np.ndarray], float, Layer]:
    """A style affine ``{prefix}.modulation.{weight,bias}``, its constant scale (1 if none) and the
    ``Multiply`` where it modulates the feature map."""
    weight = g.const(f"{prefix}.modulation.weight")
    bias = g.const(f"{prefix}.modulation.bias").reshape(-1)
    mm = g.only_user(g.by_name[f"{prefix}.modulation.weight"], ("MatMul",))
    node = g.only_user(mm, ("Add",))
    node = g.only_user(node, ("Reshape",))
    scale = 1.0
    nxt = g.only_user(node, ("Multiply",))
    if any(g.producer(nxt, p).type == "Const" for p in nxt.inputs):
        scale = _scalar(g.const_input(nxt))
        node = nxt
        nxt = g.only_user(node, ("Multiply",))
    return {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32)}, scale, nxt


def _styled_conv(g: IRGraph, prefix: str) -> tuple[dict[str, np.ndarray], dict, Layer]:
    """One styled conv at ``prefix`` (e.g. ``m.layers.2.conv1``): modulation, optional depthwise 3×3,
    dense conv, baked noise, bias and leaky ReLU. Returns (arrays, meta, the PReLU layer)."""
    mod, scale, mul = _modulation(g, f"{prefix}.conv")
    arrays = {"mod.weight": mod["weight"], "mod.bias": mod["bias"]}
    node = g.only_user(mul, ("GroupConvolution", "Convolution"))
    depthwise = node.type == "GroupConvolution"
    pad = int(node.data.get("pads_begin", "0").split(",")[0])
    if depthwise:
        dw = g.const_input(node)  # [C, 1, 1, k, k]
        arrays["weight_dw"] = dw.reshape(dw.shape[0], 1, dw.shape[-2], dw.shape[-1]).astype(np.float32)
        node = g.only_user(node, ("Convolution",))
    arrays["weight"] = g.const_input(node).astype(np.float32)
    add = g.only_user(node, ("Add",))
    noise = g.const_input(add)
    if noise.ndim != 4 or noise.shape[1] != 1:
        raise AssetError(f"SynthesisNetwork IR: unexpected noise constant {noise.shape} in {prefix}")
    arrays["noise"] = noise.astype(np.float32)
    add2 = g.only_user(add, ("Add",))
    arrays["bias"] = g.const(f"{prefix}.bias").reshape(-1).astype(np.float32)
    if _bias_from_add(g, add2).shape != arrays["bias"].shape:
        raise AssetError(f"SynthesisNetwork IR: bias mismatch in {prefix}")
    act = g.only_user(add2, ("PReLU",))
    meta = {"mod_scale": scale, "slope": _scalar(g.const_input(act)), "depthwise": depthwise, "padding": pad}
    return arrays, meta, act


def _inverse_haar(g: IRGraph, split: Layer) -> np.ndarray:
    """Recover the inverse-wavelet kernels that follow a ``VariadicSplit`` of [low | 3 high bands].

    The IR does it as separable stride-2 transposed convs (2×1 along H, then 1×2 along W) per band;
    we follow each band to its H and W filters and return their outer products, one [2, 2] kernel per
    band (order: low, high 0, high 1, high 2), as float32 [4, 2, 2]."""
    def follow(start: Layer, port: int | None) -> np.ndarray:
        h = g.only_user(start, ("GroupConvolutionBackpropData",), out_port=port)
        kh = g.const_input(h)
        if h.data.get("strides", "").replace(" ", "") != "2,1" or kh.shape[-2:] != (2, 1):
            raise AssetError(f"SynthesisNetwork IR: unexpected inverse-wavelet layer {h.name!r}")
        add = g.only_user(h, ("Add",))
        w = g.only_user(add, ("GroupConvolutionBackpropData",))
        kw = g.const_input(w)
        if w.data.get("strides", "").replace(" ", "") != "1,2" or kw.shape[-2:] != (1, 2):
            raise AssetError(f"SynthesisNetwork IR: unexpected inverse-wavelet layer {w.name!r}")
        # Every channel carries the same filter; keep one after checking.
        kh2, kw2 = kh.reshape(kh.shape[0], 2), kw.reshape(kw.shape[0], 2)
        if not (np.all(kh2 == kh2[:1]) and np.all(kw2 == kw2[:1])):
            raise AssetError("SynthesisNetwork IR: inverse-wavelet filters differ between channels")
        return np.outer(kh2[0], kw2[0])

    low = follow(split, 0)
    reshape = g.only_user(split, ("Reshape",), out_port=1)
    bands = g.only_user(reshape, ("VariadicSplit",))
    highs = []
    for port in range(3):
        squeeze = g.only_user(bands, ("Squeeze",), out_port=port)
        highs.append(follow(squeeze, None))
    return np.stack([low] + highs).astype(np.float32)


def read_synthesis(g: IRGraph) -> tuple[dict[str, np.ndarray], dict]:
    """Recover the MobileStyleGAN synthesis network by following the graph from its named constants.

    Returns:
        (state, meta): float32 arrays named as :class:`~stylerig_au.models.mobilestylegan.MobileStyleGAN`
        expects, and plain metadata (channels, per-conv modulation scales and slopes, resolution).
    """
    state: dict[str, np.ndarray] = {}
    const_input = g.const("m.input.input")
    state["synthesis.input"] = const_input.astype(np.float32)
    convs: dict[str, dict] = {}

    def add_conv(key: str, prefix: str) -> Layer:
        arrays, meta, act = _styled_conv(g, prefix)
        for k, v in arrays.items():
            state[f"synthesis.{key}.{k}"] = v
        convs[key] = meta
        return act

    act = add_conv("conv1", "m.conv1")
    n_blocks = 0
    while f"m.layers.{n_blocks}.up.modulation.weight" in g.by_name:
        n_blocks += 1
    if n_blocks == 0:
        raise AssetError("SynthesisNetwork IR: no synthesis blocks found (m.layers.N.up)")
    haar = None
    ups = {}
    channels = [int(const_input.shape[1])]
    for i in range(n_blocks):
        mod, scale, mul = _modulation(g, f"m.layers.{i}.up")
        state[f"synthesis.blocks.{i}.up.mod.weight"] = mod["weight"]
        state[f"synthesis.blocks.{i}.up.mod.bias"] = mod["bias"]
        ups[f"blocks.{i}.up"] = {"mod_scale": scale}
        if act not in [g.producer(mul, p) for p in mul.inputs]:
            raise AssetError(f"SynthesisNetwork IR: block {i} does not follow the previous layer")
        kernel = _inverse_haar(g, g.only_user(mul, ("VariadicSplit",)))
        if haar is None:
            haar = kernel
        elif not np.array_equal(haar, kernel):
            raise AssetError("SynthesisNetwork IR: inverse-wavelet kernels differ between blocks")
        add_conv(f"blocks.{i}.conv1", f"m.layers.{i}.conv1")
        act = add_conv(f"blocks.{i}.conv2", f"m.layers.{i}.conv2")
        channels.append(int(state[f"synthesis.blocks.{i}.conv2.bias"].shape[0]))
    # Final to-image: modulated 1×1 conv to 12 wavelet channels, bias, then the inverse wavelet.
    last = n_blocks - 1
    mod, scale, mul = _modulation(g, f"m.layers.{last}.to_img.conv")
    conv = g.only_user(mul, ("Convolution",))
    add = g.only_user(conv, ("Add",))
    state["synthesis.to_img.mod.weight"] = mod["weight"]
    state["synthesis.to_img.mod.bias"] = mod["bias"]
    state["synthesis.to_img.weight"] = g.const_input(conv).astype(np.float32)
    state["synthesis.to_img.bias"] = _bias_from_add(g, add).astype(np.float32)
    kernel = _inverse_haar(g, g.only_user(add, ("VariadicSplit",)))
    if not np.array_equal(haar, kernel):
        raise AssetError("SynthesisNetwork IR: the output inverse wavelet differs from the blocks'")
    state["synthesis.haar"] = haar
    results = g.of_type("Result")
    if len(results) != 1:
        raise AssetError("SynthesisNetwork IR: expected one output")
    out_shape = g.producer(results[0], 0).out_shapes[0]
    meta = {
        "channels": channels,
        "convs": convs,
        "ups": ups,
        "to_img": {"mod_scale": scale},
        "resolution": int(out_shape[-1]),
        "w_dim": int(g.of_type("Parameter")[0].out_shapes[0][-1]),
    }
    return state, meta


def _member(members: dict[str, Path], net: str, ext: str) -> Path:
    for key, path in members.items():
        if key.replace("\\", "/").endswith(f"{net}.{ext}"):
            return Path(path)
    raise AssetError(f"MobileStyleGAN conversion needs {MEMBER_PREFIX}{net}.{ext}; it is missing from the source")


def read_ir(members: dict[str, Path]) -> tuple[dict[str, np.ndarray], dict]:
    """Read both IR graphs into one numpy state dict and one metadata dict (without w_avg)."""
    mapping_g = IRGraph(_member(members, MAPPING, "xml"), _member(members, MAPPING, "bin"))
    synthesis_g = IRGraph(_member(members, SYNTHESIS, "xml"), _member(members, SYNTHESIS, "bin"))
    m_state, m_meta = read_mapping(mapping_g)
    s_state, s_meta = read_synthesis(synthesis_g)
    if m_meta["w_dim"] != s_meta["w_dim"]:
        raise AssetError("MobileStyleGAN IR: mapping output and synthesis input sizes differ")
    return {**m_state, **s_state}, {"mapping": m_meta, "synthesis": s_meta}


def convert(members: dict[str, Path], out: Path, w_avg_samples: int = W_AVG_SAMPLES) -> None:
    """Convert the random-face IR files to one ``torch.save`` file at ``out`` (written atomically).

    Args:
        members: ``'random_face/data/{Mapping,Synthesis}Network.{xml,bin}'`` -> file path.
        out: where to write the converted file.
        w_avg_samples: how many mapped z (seed :data:`W_AVG_SEED`) estimate ``w_avg``; the IR holds no
            w_avg (random_face averages 4096 random samples at start-up).

    Raises:
        AssetError: a member is missing or the graph is not the expected MobileStyleGAN IR.
    """
    import torch

    state, meta = read_ir(members)
    m_state = {k: v for k, v in state.items() if k.startswith("mapping.")}
    state["mapping.w_avg"] = estimate_w_avg(m_state, meta["mapping"], n=w_avg_samples)
    meta.update({
        "name": "mobilestylegan-ffhq-1024",
        "source": "PyPI random-face==2021.7.21.1 OpenVINO IR (random_face/data/*Network.{xml,bin})",
        "w_avg": {"method": "mean of mapped z ~ N(0, I)", "samples": int(w_avg_samples),
                  "rng": f"numpy.random.default_rng({W_AVG_SEED}).standard_normal, float32"},
        "output": "RGB in [-1, 1], NCHW",
    })
    payload = {
        "format": FORMAT,
        "state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
        "meta": meta,
    }
    atomic_torch_save(out, payload)


# --------------------------------------------------------------------------------------------------
# Finding the raw IR (for reference checks against OpenVINO; the toolkit itself only needs the .pt)
# --------------------------------------------------------------------------------------------------
ENV_IR_DIR = "STYLERIG_AU_RANDOM_FACE_IR"
IR_FILES = ("MappingNetwork.xml", "MappingNetwork.bin", "SynthesisNetwork.xml", "SynthesisNetwork.bin")


def ir_members(ir_dir: Path) -> dict[str, Path]:
    """The :func:`convert` ``members`` dict for a folder holding the four IR files."""
    return {MEMBER_PREFIX + f: Path(ir_dir) / f for f in IR_FILES}


def find_ir_dir(scratch: Path, fetch: bool = True) -> Path | None:
    """A folder holding the four raw IR files, or None when they cannot be found.

    Looks in ``$STYLERIG_AU_RANDOM_FACE_IR``, then for the random-face wheel in the registry's search
    path and download cache (fetching it through the registry when ``fetch``), which it extracts into
    ``scratch/random_face_ir``.
    """
    import zipfile

    from stylerig_au import pretrained

    env = os.environ.get(ENV_IR_DIR)
    if env and all((Path(env) / f).is_file() for f in IR_FILES):
        return Path(env)
    if not fetch and pretrained.locate("mobilestylegan-ffhq-1024")[1] == "missing":
        return None
    try:  # the registry's hash-checked release file (search path, download cache, or PyPI)
        found = pretrained.source_archive("mobilestylegan-ffhq-1024")
    except AssetError:
        return None
    out = Path(scratch) / "random_face_ir"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found) as zf:
        for f in IR_FILES:
            (out / f).write_bytes(zf.read(MEMBER_PREFIX + f))
    return out
