"""MobileStyleGAN: the IR reader on tiny synthetic IR files, and the module on a tiny random network.

None of these needs the random-face wheel; the real-weights checks are in test_mobilestylegan_slow.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylerig_au.errors import AssetError, StylerigError
from stylerig_au.models.mobilestylegan import (
    FORMAT,
    MobileStyleGAN,
    build_mobilestylegan,
    _depthwise_separable_cpu,
    inverse_haar,
    inverse_haar_grouped_conv,
    inverse_haar_upfirdn,
    load_mobilestylegan,
)
from stylerig_au.models.mobilestylegan_ir import (
    IRGraph,
    _mapping_numpy,
    convert,
    estimate_w_avg,
    ir_members,
    read_mapping,
)

HAAR = 0.5 * torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]], [[1, -1], [-1, 1]]],
                          dtype=torch.float32)

# ----------------------------------------------------------------------------- a tiny IR writer

_ET = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64", np.dtype(np.int32): "i32"}


class TinyIR:
    """Writes a minimal OpenVINO IR v10 (xml + bin) layer by layer, for reader tests."""

    def __init__(self, name: str = "net") -> None:
        self.name, self.layers, self.edges, self.bin = name, [], [], bytearray()
        self.shapes: dict[tuple[int, int], tuple[int, ...]] = {}

    @staticmethod
    def _dims(shape: tuple[int, ...]) -> str:
        return "".join(f"<dim>{d}</dim>" for d in shape)

    def ops(self, type_: str, name: str, inputs: list[tuple[int, int]], outs: list[tuple[int, ...]],
            **data: str) -> list[tuple[int, int]]:
        """Add a layer; returns (layer id, port) of each output."""
        lid = len(self.layers)
        in_xml = "".join(f'<port id="{p}" precision="FP32">{self._dims(self.shapes[src])}</port>'
                         for p, src in enumerate(inputs))
        out_xml = "".join(f'<port id="{len(inputs) + k}" precision="FP32">{self._dims(shape)}</port>'
                          for k, shape in enumerate(outs))
        attrs = " ".join(f"{k}={quoteattr(v)}" for k, v in data.items())
        self.layers.append(f'<layer id="{lid}" name={quoteattr(name)} type="{type_}" version="opset1">'
                           f"<data {attrs}/><input>{in_xml}</input><output>{out_xml}</output></layer>")
        for port, (src, src_port) in enumerate(inputs):
            self.edges.append(f'<edge from-layer="{src}" from-port="{src_port}" to-layer="{lid}" to-port="{port}"/>')
        refs = [(lid, len(inputs) + k) for k in range(len(outs))]
        self.shapes.update(zip(refs, outs))
        return refs

    def op(self, type_: str, name: str, inputs: list[tuple[int, int]], out: tuple[int, ...], **data: str):
        return self.ops(type_, name, inputs, [out], **data)[0]

    def const(self, name: str, value: np.ndarray) -> tuple[int, int]:
        value = np.ascontiguousarray(value)
        offset = len(self.bin)
        self.bin += value.tobytes()
        return self.op("Const", name, [], value.shape, element_type=_ET[value.dtype],
                       shape=", ".join(map(str, value.shape)), offset=str(offset), size=str(value.nbytes))

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        xml = folder / f"{stem}.xml"
        xml.write_text(f'<?xml version="1.0" ?><net name="{self.name}" version="10"><layers>{"".join(self.layers)}'
                       f'</layers><edges>{"".join(self.edges)}</edges></net>')
        (folder / f"{stem}.bin").write_bytes(bytes(self.bin))
        return xml, folder / f"{stem}.bin"


def write_tiny_mapping(folder: Path, dim: int = 6, n_layers: int = 2, seed: int = 0) -> dict:
    """A mapping-network IR shaped like random-face's (pixel norm, MatMul, reshaped bias, PReLU, gain),
    with unnamed constants. Returns the true parameters."""
    rng = np.random.default_rng(seed)
    ir = TinyIR("MappingNetwork")
    f32 = np.float32
    x = ir.op("Parameter", "var", [], (1, dim), shape=f"1, {dim}", element_type="f32")
    p = ir.op("Power", "Pow_0", [x, ir.const("171", np.array([[2]], f32))], (1, dim))
    r = ir.op("ReduceMean", "ReduceMean_1", [p, ir.const("axis", np.array([1], np.int64))], (1, 1), keep_dims="true")
    a = ir.op("Add", "Add_3", [r, ir.const("Constant_2", np.array([[1e-8]], f32))], (1, 1))
    s = ir.op("Power", "Sqrt", [a, ir.const("126", np.array([[0.5]], f32))], (1, 1))
    s = ir.op("Power", "Recip", [s, ir.const("m1", np.array([[-1.0]], f32))], (1, 1))
    s = ir.op("Multiply", "Div_6", [ir.const("Constant_5", np.array([[1.0]], f32)), s], (1, 1))
    h = ir.op("Multiply", "Mul_7", [x, s], (1, dim))
    truth = {"weights": [], "biases": [], "slopes": [], "gains": []}
    for i in range(n_layers):
        w = rng.standard_normal((dim, dim)).astype(f32) * 0.5
        b = rng.standard_normal(dim).astype(f32) * 0.1
        slope, gain = 0.2 + 0.05 * i, math.sqrt(2) + 0.1 * i
        mm = ir.op("MatMul", f"MatMul_{i}", [h, ir.const(str(100 + i), w)], (1, dim),
                   transpose_a="false", transpose_b="true")
        rs = ir.op("Reshape", f"Reshape_{i}", [ir.const(str(200 + i), b), ir.const(f"shape{i}", np.array([1, dim]))],
                   (1, dim), special_zero="true")
        ad = ir.op("Add", f"Add_{i}", [mm, rs], (1, dim))
        pr = ir.op("PReLU", f"LeakyRelu_{i}", [ad, ir.const(f"slope{i}", np.array([slope], f32))], (1, dim))
        h = ir.op("Multiply", f"Mul_{i}", [pr, ir.const(f"Constant_{i}", np.array([[gain]], f32))], (1, dim))
        for key, v in zip(("weights", "biases", "slopes", "gains"), (w, b, slope, gain)):
            truth[key].append(v)
    ir.ops("Result", "style/sink_port_0", [h], [])
    ir.write(folder, "MappingNetwork")
    return truth


def write_tiny_synthesis(folder: Path, channels: tuple[int, ...] = (16, 16, 8), dim: int = 6, seed: int = 0) -> None:
    """A synthesis IR with random-face's structure (styled convs, inverse-Haar via stride-2 transposed
    convs, baked noise, folded weights with unnamed constants) and ``len(channels) - 1`` blocks."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    ir = TinyIR("SynthesisNetwork")
    conv_attrs = {"strides": "1, 1", "dilations": "1, 1", "auto_pad": "explicit"}
    style = ir.op("Parameter", "style", [], (1, dim), shape=f"1, {dim}", element_type="f32")
    counter = iter(range(10_000))

    def rnd(*shape: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale + offset).astype(f32)

    def modulation(prefix: str, c: int, scale: float | None) -> tuple[int, int]:
        mm = ir.op("MatMul", f"Gemm_{next(counter)}", [style, ir.const(f"{prefix}.modulation.weight", rnd(c, dim, scale=0.3))],
                   (1, c), transpose_a="false", transpose_b="true")
        add = ir.op("Add", f"Gemm_{next(counter)}", [mm, ir.const(f"{prefix}.modulation.bias", rnd(1, c, offset=1.0))],
                    (1, c), auto_broadcast="numpy")
        node = ir.op("Reshape", f"Reshape_{next(counter)}", [add, ir.const(f"{next(counter)}", np.array([1, c, 1, 1]))],
                     (1, c, 1, 1), special_zero="true")
        if scale is not None:
            node = ir.op("Multiply", f"Mul_{next(counter)}", [node, ir.const(f"Constant_{next(counter)}",
                         np.full((1, 1, 1, 1), scale, f32))], (1, c, 1, 1), auto_broadcast="numpy")
        return node

    def styled_conv(prefix: str, x: tuple[int, int], c_in: int, c_out: int, res: int, depthwise: bool):
        x = ir.op("Multiply", f"Mul_{next(counter)}", [modulation(f"{prefix}.conv", c_in, 0.2), x],
                  (1, c_in, res, res), auto_broadcast="numpy")
        if depthwise:
            x = ir.op("GroupConvolution", f"Conv_{next(counter)}", [x, ir.const(f"{prefix}.conv.weight_dw",
                      rnd(c_in, 1, 1, 3, 3, scale=0.3))], (1, c_in, res, res), pads_begin="1, 1", pads_end="1, 1",
                      **conv_attrs)
            w, pad = rnd(c_out, c_in, 1, 1, scale=1 / math.sqrt(c_in)), "0, 0"
        else:
            w, pad = rnd(c_out, c_in, 3, 3, scale=1 / math.sqrt(9 * c_in)), "1, 1"
        x = ir.op("Convolution", f"Conv_{next(counter)}", [x, ir.const(f"Mul_{next(counter)}_copy", w)],
                  (1, c_out, res, res), pads_begin=pad, pads_end=pad, **conv_attrs)
        x = ir.op("Add", f"Add_{next(counter)}", [x, ir.const(f"{next(counter)}", rnd(1, 1, res, res, scale=0.1))],
                  (1, c_out, res, res), auto_broadcast="numpy")
        x = ir.op("Add", f"Add_{next(counter)}", [x, ir.const(f"{prefix}.bias", rnd(1, c_out, 1, 1, scale=0.1))],
                  (1, c_out, res, res), auto_broadcast="numpy")
        return ir.op("PReLU", f"LeakyRelu_{next(counter)}", [x, ir.const(f"slope{next(counter)}", np.array([0.2], f32))],
                     (1, c_out, res, res))

    def inverse_haar_ir(x: tuple[int, int], c4: int, res: int) -> tuple[int, int]:
        c, r2 = c4 // 4, 2 * res
        low, high = ir.ops("VariadicSplit", f"Slice_{next(counter)}", [
            x, ir.const(f"ax{next(counter)}", np.array(1, np.int64)),
            ir.const(f"len{next(counter)}", np.array([c, 3 * c], np.int64))], [(1, c, res, res), (1, 3 * c, res, res)])
        high = ir.op("Reshape", f"Reshape_{next(counter)}", [high, ir.const(f"{next(counter)}",
                     np.array([1, c, 3, res, res]))], (1, c, 3, res, res), special_zero="true")
        parts = ir.ops("VariadicSplit", f"Split_{next(counter)}", [
            high, ir.const(f"ax{next(counter)}", np.array(2, np.int64)),
            ir.const(f"len{next(counter)}", np.array([1, 1, 1], np.int64))], [(1, c, 1, res, res)] * 3)
        bands = [low] + [ir.op("Squeeze", f"Squeeze_{next(counter)}", [p, ir.const(f"sq{next(counter)}",
                         np.array([2], np.int64))], (1, c, res, res)) for p in parts]
        s2 = np.float32(0.5**0.5)
        kh = {0: [s2, s2], 1: [s2, -s2], 2: [s2, s2], 3: [s2, -s2]}
        kw = [[s2, s2], [s2, -s2]]
        up = {"pads_begin": "0, 0", "pads_end": "0, 0", "dilations": "1, 1", "auto_pad": "explicit",
              "output_padding": "0, 0"}
        hs = [ir.op("GroupConvolutionBackpropData", f"ConvTranspose_{next(counter)}", [b, ir.const(
            f"{next(counter)}", np.tile(np.array(kh[i], f32).reshape(1, 1, 1, 2, 1), (c, 1, 1, 1, 1)))],
            (1, c, r2, res), strides="2, 1", **up) for i, b in enumerate(bands)]
        outs = []
        for j, (a, b) in enumerate([(hs[0], hs[1]), (hs[2], hs[3])]):
            pair = ir.op("Add", f"Add_{next(counter)}", [a, b], (1, c, r2, res), auto_broadcast="numpy")
            outs.append(ir.op("GroupConvolutionBackpropData", f"ConvTranspose_{next(counter)}", [pair, ir.const(
                f"{next(counter)}", np.tile(np.array(kw[j], f32).reshape(1, 1, 1, 1, 2), (c, 1, 1, 1, 1)))],
                (1, c, r2, r2), strides="1, 2", **up))
        return ir.op("Add", f"Add_{next(counter)}", outs, (1, c, r2, r2), auto_broadcast="numpy")

    x = styled_conv("m.conv1", ir.const("m.input.input", rnd(1, channels[0], 4, 4)), channels[0], channels[0], 4,
                    depthwise=False)
    res = 4
    for i, c_out in enumerate(channels[1:]):
        c_in = channels[i]
        x = ir.op("Multiply", f"Mul_{next(counter)}", [modulation(f"m.layers.{i}.up", c_in, None), x],
                  (1, c_in, res, res), auto_broadcast="numpy")
        x = inverse_haar_ir(x, c_in, res)
        res *= 2
        x = styled_conv(f"m.layers.{i}.conv1", x, c_in // 4, c_out, res, True)
        x = styled_conv(f"m.layers.{i}.conv2", x, c_out, c_out, res, True)
    last = len(channels) - 2
    x = ir.op("Multiply", f"Mul_{next(counter)}", [modulation(f"m.layers.{last}.to_img.conv", channels[-1], 0.3), x],
              (1, channels[-1], res, res), auto_broadcast="numpy")
    x = ir.op("Convolution", f"Conv_{next(counter)}", [x, ir.const(f"m.layers.{last}.to_img.conv.weight",
              rnd(12, channels[-1], 1, 1, scale=0.3))], (1, 12, res, res), pads_begin="0, 0", pads_end="0, 0",
              **conv_attrs)
    x = ir.op("Add", f"Add_{next(counter)}", [x, ir.const(f"m.layers.{last}.to_img.bias", rnd(1, 12, 1, 1, scale=0.1))],
              (1, 12, res, res), auto_broadcast="numpy")
    x = inverse_haar_ir(x, 12, res)
    ir.ops("Result", "img/sink_port_0", [x], [])
    ir.write(folder, "SynthesisNetwork")


def test_ir_reader_reads_constants_and_recovers_the_unnamed_mapping(tmp_path: Path) -> None:
    truth = write_tiny_mapping(tmp_path)
    g = IRGraph(tmp_path / "MappingNetwork.xml", tmp_path / "MappingNetwork.bin")
    assert g.const("axis").dtype == np.int64 and g.const("axis").tolist() == [1]
    np.testing.assert_array_equal(g.const("100"), truth["weights"][0])
    state, meta = read_mapping(g)
    assert meta["z_dim"] == meta["w_dim"] == 6 and meta["pixel_norm_eps"] == pytest.approx(1e-8)
    for i in range(2):
        np.testing.assert_array_equal(state[f"mapping.weight{i}"], truth["weights"][i])
        np.testing.assert_array_equal(state[f"mapping.bias{i}"], truth["biases"][i])
        assert meta["layers"][i]["slope"] == pytest.approx(truth["slopes"][i])
        assert meta["layers"][i]["gain"] == pytest.approx(truth["gains"][i])
    # numpy reference forward == an independent evaluation of the same maths
    z = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    x = z / np.sqrt((z**2).mean(1, keepdims=True) + 1e-8)
    for w, b, s, k in zip(truth["weights"], truth["biases"], truth["slopes"], truth["gains"]):
        x = x @ w.T + b
        x = np.where(x >= 0, x, s * x) * k
    np.testing.assert_allclose(_mapping_numpy(state, meta, z), x, rtol=1e-5, atol=1e-5)
    w_avg = estimate_w_avg(state, meta, n=500, seed=3, chunk=128)
    expect = _mapping_numpy(state, meta, np.random.default_rng(3).standard_normal((500, 6), dtype=np.float32))
    np.testing.assert_allclose(w_avg, expect.mean(0), rtol=1e-4, atol=1e-5)


def test_ir_reader_rejects_broken_files(tmp_path: Path) -> None:
    write_tiny_mapping(tmp_path)
    data = (tmp_path / "MappingNetwork.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    g = IRGraph(tmp_path / "MappingNetwork.xml", tmp_path / "short.bin")
    with pytest.raises(AssetError, match="outside the .bin"):
        read_mapping(g)
    (tmp_path / "bad.xml").write_text("<html><body/></html>")
    with pytest.raises(AssetError, match="not an OpenVINO IR"):
        IRGraph(tmp_path / "bad.xml", tmp_path / "MappingNetwork.bin")
    (tmp_path / "garbled.xml").write_text("<net><layers>")
    with pytest.raises(AssetError, match="cannot read"):
        IRGraph(tmp_path / "garbled.xml", tmp_path / "MappingNetwork.bin")
    with pytest.raises(AssetError, match="no constant named"):
        IRGraph(tmp_path / "MappingNetwork.xml", tmp_path / "MappingNetwork.bin").const("nope")


def test_convert_tiny_ir_matches_openvino(tmp_path: Path) -> None:
    """The whole converter on a tiny synthetic IR pair: the module must reproduce OpenVINO's output."""
    ov = pytest.importorskip("openvino", reason="openvino (the reference runtime) is not installed")
    write_tiny_mapping(tmp_path, dim=6)
    write_tiny_synthesis(tmp_path, dim=6)
    out = tmp_path / "tiny.pt"
    convert(ir_members(tmp_path), out, w_avg_samples=200)
    G = load_mobilestylegan(out)
    assert (G.num_ws, G.resolution, G.w_dim) == (8, 32, 6)
    assert out.stat().st_mode & 0o644 == 0o644
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["w_avg"]["samples"] == 200
    core = ov.Core()
    synthesis = core.compile_model(core.read_model(tmp_path / "SynthesisNetwork.xml"), "CPU",
                                   {"INFERENCE_PRECISION_HINT": "f32"})
    for seed in range(3):
        w = np.random.default_rng(seed).standard_normal((1, 6)).astype(np.float32)
        ref = synthesis(w)[0]
        with torch.no_grad():
            img = G.synthesis(torch.from_numpy(w)[:, None].repeat(1, G.num_ws, 1)).numpy()
        assert img.shape == ref.shape == (1, 3, 32, 32) and np.abs(ref).max() > 0.05
        np.testing.assert_allclose(img, ref, atol=1e-4, rtol=1e-4)


def test_convert_names_a_missing_member(tmp_path: Path) -> None:
    write_tiny_mapping(tmp_path)
    members = {k: v for k, v in ir_members(tmp_path).items() if "Synthesis" not in k}
    with pytest.raises(AssetError, match="SynthesisNetwork.xml"):
        convert(members, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


# ----------------------------------------------------------------------------- a tiny random module

def tiny_meta(channels: tuple[int, ...] = (16, 16, 8), dim: int = 8) -> dict:
    convs = {"conv1": {"mod_scale": 0.3, "slope": 0.2, "depthwise": False, "padding": 1}}
    for i in range(len(channels) - 1):
        for j in (1, 2):
            convs[f"blocks.{i}.conv{j}"] = {"mod_scale": 0.4, "slope": 0.2, "depthwise": True, "padding": 1}
    return {
        "name": "tiny-mobilestylegan",
        "mapping": {"z_dim": dim, "w_dim": dim, "pixel_norm_eps": 1e-8,
                    "layers": [{"slope": 0.2, "gain": math.sqrt(2)}] * 2},
        "synthesis": {"channels": list(channels), "convs": convs,
                      "ups": {f"blocks.{i}.up": {"mod_scale": 1.0} for i in range(len(channels) - 1)},
                      "to_img": {"mod_scale": 0.3}, "resolution": 2 ** (len(channels) + 2), "w_dim": dim},
    }


def tiny_mobilestylegan(seed: int = 0) -> MobileStyleGAN:
    """A 32² MobileStyleGAN (2 blocks, num_ws 8) with random weights; w_avg from 500 samples."""
    torch.manual_seed(seed)
    G = MobileStyleGAN(tiny_meta())
    with torch.no_grad():
        for name, p in G.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn_like(p) / math.sqrt(fan_in) + (1.0 if name.endswith("mod.bias") else 0.0))
        for name, b in G.named_buffers():
            if name.endswith("noise"):
                b.copy_(torch.randn_like(b) * 0.1)
        G.synthesis.haar.copy_(HAAR)
        G.mapping.w_avg.copy_(G.mapping(torch.randn(500, G.z_dim)).mean(0))
    return G.eval().requires_grad_(False)


def test_slots_and_shapes() -> None:
    G = tiny_mobilestylegan()
    assert (G.num_ws, G.resolution, G.z_dim, G.w_dim) == (8, 32, 8, 8)
    unused = [s.index for s in G.slots if not s.used]
    assert unused == [3, 7]  # the intermediate to-image slot of block 0, and the slot after the last one
    assert [s.resolution for s in G.slots if s.used] == [4, 8, 8, 16, 16, 32]
    assert G.slots[0].group == "coarse" and G.slots[5].group == "middle"
    z = torch.randn(2, 8)
    img = G(z, psi=0.5)
    assert img.shape == (2, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()
    with pytest.raises(StylerigError, match=r"\[N, 8, 8\]"):
        G.synthesis(torch.zeros(1, 7, 8))
    with pytest.raises(StylerigError, match="z of shape"):
        G.mapping(torch.zeros(1, 5))


def test_noise_modes() -> None:
    G = tiny_mobilestylegan()
    ws = G.mapping(torch.randn(1, 8))[:, None].repeat(1, G.num_ws, 1)
    const = G.synthesis(ws)
    assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
    none = G.synthesis(ws, noise_mode="none")
    r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert (none - const).abs().max() > 1e-4 and (r1 - r2).abs().max() > 1e-4
    with pytest.raises(StylerigError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fresh")


def test_truncation_pulls_towards_w_avg() -> None:
    G = tiny_mobilestylegan()
    z = torch.randn(4, 8)
    w = G.mapping(z)
    torch.testing.assert_close(G.mapping(z, psi=0.0), G.w_avg.expand(4, -1))
    torch.testing.assert_close(G.mapping(z, psi=0.5), G.w_avg + 0.5 * (w - G.w_avg))


def test_w_plus_slots_act_where_expected() -> None:
    G = tiny_mobilestylegan()
    w = G.mapping(torch.randn(1, 8))
    ws = w[:, None].repeat(1, G.num_ws, 1)
    base = G.synthesis(ws)
    other = G.mapping(torch.randn(1, 8))[0]
    for slot in G.slots:
        ws2 = ws.clone()
        ws2[:, slot.index] = other
        diff = (G.synthesis(ws2) - base).abs().max().item()
        if slot.used:
            assert diff > 1e-4, f"slot {slot.index} should change the image"
        else:
            assert diff == 0.0, f"slot {slot.index} is documented unused but changed the image by {diff}"


def test_gradient_reaches_used_slots() -> None:
    G = tiny_mobilestylegan()
    ws = G.mapping(torch.randn(1, 8))[:, None].repeat(1, G.num_ws, 1).requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    norms = ws.grad[0].norm(dim=1)
    for slot in G.slots:
        assert (norms[slot.index] > 0) == slot.used


def test_inverse_haar_matches_the_definition_and_the_upfirdn_path() -> None:
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    y = inverse_haar(x, HAAR.double())
    low, high = x[:, :3], x[:, 3:].reshape(2, 3, 3, 5, 6)
    bands = [low, high[:, :, 0], high[:, :, 1], high[:, :, 2]]
    expect = torch.zeros(2, 3, 10, 12, dtype=torch.float64)
    for band, k in zip(bands, HAAR.double()):
        for a in range(2):
            for b in range(2):
                expect[:, :, a::2, b::2] += band * k[a, b]
    torch.testing.assert_close(y, expect)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the CPU path works channels-last
    torch.testing.assert_close(inverse_haar_upfirdn(x, HAAR.double(), impl="ref"), expect)
    torch.testing.assert_close(inverse_haar_grouped_conv(x, HAAR.double()), expect)
    # an orthonormal Haar pair: the forward transform recovers the bands
    fwd = F.conv2d(expect.reshape(6, 1, 10, 12), HAAR.double()[:, None], stride=2)
    torch.testing.assert_close(fwd.reshape(2, 3, 4, 5, 6), torch.stack(bands, 2))


def test_save_load_round_trip_and_errors(tmp_path: Path) -> None:
    G = tiny_mobilestylegan()
    path = tmp_path / "tiny.pt"
    torch.save({"format": FORMAT, "state_dict": G.state_dict(), "meta": G.meta}, path)
    H = load_mobilestylegan(path, impl="ref")
    assert H.impl == "ref" and not any(p.requires_grad for p in H.parameters())
    z = torch.randn(1, 8)
    torch.testing.assert_close(H(z), G(z))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for bad, pattern in [(tmp_path / "missing.pt", "not found"), (tmp_path / "junk.pt", "cannot read")]:
        with pytest.raises(StylerigError, match=pattern) as info:
            load_mobilestylegan(bad)
        assert "\n" not in str(info.value)
    torch.save({"format": "something-else", "state_dict": {}, "meta": {}}, tmp_path / "other.pt")
    with pytest.raises(StylerigError, match="not a converted MobileStyleGAN"):
        load_mobilestylegan(tmp_path / "other.pt")
    state = G.state_dict()
    state.pop("synthesis.to_img.bias")
    with pytest.raises(StylerigError, match="1 missing"):
        build_mobilestylegan({"format": FORMAT, "state_dict": state, "meta": G.meta})
    with pytest.raises(StylerigError, match="impl"):
        G.set_impl("fast")


def test_cpu_depthwise_separable_conv_folds_the_style_exactly() -> None:
    """The CPU path (style folded into per-image 1×1 weights, one batched matmul) is the NCHW maths."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64, generator=gen)
    style = torch.randn(3, 8, 1, 1, dtype=torch.float64, generator=gen)
    weight_dw = torch.randn(8, 1, 3, 3, dtype=torch.float64, generator=gen)
    weight = torch.randn(5, 8, 1, 1, dtype=torch.float64, generator=gen)
    expect = F.conv2d(F.conv2d(x * style, weight_dw, padding=1, groups=8), weight)
    got = _depthwise_separable_cpu(x, style, weight_dw, weight, padding=1)
    assert got.shape == (3, 5, 9, 7)
    torch.testing.assert_close(got, expect)
    # gradients reach the style (and so w) the same way
    s1 = style.clone().requires_grad_(True)
    s2 = style.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(_depthwise_separable_cpu(x, s1, weight_dw, weight, 1).square().sum(), [s1])
    (g2,) = torch.autograd.grad(F.conv2d(F.conv2d(x * s2, weight_dw, padding=1, groups=8), weight).square().sum(), [s2])
    torch.testing.assert_close(g1, g2)
