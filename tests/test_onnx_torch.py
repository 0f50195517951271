"""stylerig_au.onnx_torch: tiny hand-written ONNX graphs run by our module, checked against OpenCV's
ONNX importer (an independent implementation) and against naive numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerig_au.errors import StylerigError
from stylerig_au.onnx_torch import OPS, OnnxFormatError, OnnxModule, load_onnx, read_onnx
from tests import onnx_build as ob

RNG = np.random.default_rng(0)


def _rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _opencv(data: bytes, x: np.ndarray) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
    net.setInput(x)
    return net.forward()


def _ours(data: bytes, *xs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_onnx(data)(*(torch.from_numpy(x) for x in xs)).numpy()


def _resnet_like() -> tuple[bytes, np.ndarray]:
    """The op pattern of the dlib age/gender nets: conv, affine (Mul, Add), relu, pools, channel Pad
    for the shortcut, global average, Gemm, Softmax (opset 18)."""
    inits = {
        "w1": _rand(4, 3, 7, 7, scale=0.2), "b1": _rand(4), "s1": _rand(1, 4, 1, 1), "o1": _rand(1, 4, 1, 1),
        "w2": _rand(8, 4, 3, 3, scale=0.2), "b2": _rand(8),
        "lp": np.array([0, 0, 0, 0, 0, 4, 0, 0], np.int64), "rp": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64),
        "fw": _rand(8, 5), "fb": _rand(5),
    }
    nodes = [
        ob.node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[7, 7], pads=[0, 0, 0, 0], strides=[2, 2]),
        ob.node("Mul", ["c1", "s1"], ["m1"]),
        ob.node("Add", ["m1", "o1"], ["a1"]),
        ob.node("Relu", ["a1"], ["r1"]),
        ob.node("MaxPool", ["r1"], ["p1"], ceil_mode=0, kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[2, 2]),
        ob.node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[2, 2]),
        ob.node("AveragePool", ["p1"], ["ap"], ceil_mode=0, count_include_pad=0, kernel_shape=[2, 2],
                pads=[0, 0, 0, 0], strides=[2, 2]),
        ob.node("Pad", ["ap", "lp"], ["pc"], mode="constant"),
        ob.node("Pad", ["c2", "rp"], ["pr"], mode="constant"),
        ob.node("Add", ["pc", "pr"], ["sum"]),
        ob.node("GlobalAveragePool", ["sum"], ["g"]),
        ob.node("Flatten", ["g"], ["f"], axis=1),
        ob.node("Gemm", ["f", "fw", "fb"], ["logits"], alpha=1.0, beta=1.0, transA=0, transB=0),
        ob.node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    return ob.model(nodes, {"x": (2, 3, 39, 39)}, ["prob"], inits), _rand(2, 3, 39, 39)


def _mobilefacenet_like() -> tuple[bytes, np.ndarray]:
    """The op pattern of SFace (opset 11): input scaling, depthwise convs, batch norm, PReLU, Dropout, Gemm."""
    inits = {
        "mean": np.array([127.5], np.float32), "scale": np.array([0.0078125], np.float32),
        "w1": _rand(4, 3, 3, 3, scale=0.3),
        "g1": _rand(4) + 1, "be1": _rand(4), "mu1": _rand(4), "var1": np.abs(_rand(4)) + 0.5,
        "sl1": _rand(4, 1, 1, scale=0.3),
        "wd": _rand(4, 1, 3, 3, scale=0.3), "w3": _rand(6, 4, 1, 1, scale=0.3),
        "fw": _rand(3, 6 * 4 * 4), "fb": _rand(3),
    }
    nodes = [
        ob.node("Sub", ["x", "mean"], ["s"]),
        ob.node("Mul", ["s", "scale"], ["n"]),
        ob.node("Conv", ["n", "w1"], ["c1"], dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        ob.node("BatchNormalization", ["c1", "g1", "be1", "mu1", "var1"], ["bn"], epsilon=1e-3, momentum=0.9),
        ob.node("PRelu", ["bn", "sl1"], ["pr"]),
        ob.node("Conv", ["pr", "wd"], ["dw"], group=4, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        ob.node("Conv", ["dw", "w3"], ["c3"], kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1]),
        ob.node("Dropout", ["c3"], ["d"], ratio=0.4),
        ob.node("Flatten", ["d"], ["f"]),
        ob.node("Gemm", ["f", "fw", "fb"], ["y"], alpha=1.0, beta=1.0, transA=0, transB=1),
    ]
    x = RNG.uniform(0, 255, (2, 3, 8, 8)).astype(np.float32)
    return ob.model(nodes, {"x": (2, 3, 8, 8)}, ["y"], inits, opset=11), x


@pytest.mark.parametrize("build", [_resnet_like, _mobilefacenet_like], ids=["age-gender-ops", "sface-ops"])
def test_graphs_match_opencv(build):
    data, x = build()
    ours, ref = _ours(data, x), _opencv(data, x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def _pool_reference(x: np.ndarray, kind: str, k: int, s: int, pads: list[int], include_pad: bool) -> np.ndarray:
    """Naive ONNX pooling over H, W of [N, C, H, W] with pads [top, left, bottom, right]."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    out_h, out_w = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
    out = np.zeros((n, c, out_h, out_w), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            y0, x0 = i * s - top, j * s - left
            ys, xs = slice(max(y0, 0), min(y0 + k, h)), slice(max(x0, 0), min(x0 + k, w))
            window = x[:, :, ys, xs]
            if kind == "max":
                out[:, :, i, j] = window.max(axis=(2, 3))
            else:
                count = k * k if include_pad else window.shape[2] * window.shape[3]
                out[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return out


@pytest.mark.parametrize("op,pads,include_pad", [
    ("MaxPool", [1, 1, 1, 1], 0), ("MaxPool", [0, 1, 2, 0], 0),
    ("AveragePool", [1, 1, 1, 1], 0), ("AveragePool", [1, 0, 0, 2], 0), ("AveragePool", [1, 0, 0, 2], 1),
])
def test_pooling_with_padding(op, pads, include_pad):
    x = _rand(1, 2, 7, 6)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    if op == "AveragePool":
        attrs["count_include_pad"] = include_pad
    data = ob.model([ob.node(op, ["x"], ["y"], **attrs)], {"x": x.shape}, ["y"])
    expected = _pool_reference(x, "max" if op == "MaxPool" else "avg", 3, 2, pads, bool(include_pad))
    np.testing.assert_allclose(_ours(data, x), expected, rtol=1e-5, atol=1e-6)


def test_asymmetric_conv_padding_and_pad_modes():
    x, w = _rand(1, 2, 5, 6), _rand(3, 2, 3, 3)
    data = ob.model([ob.node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[0, 2, 1, 0])],
                    {"x": x.shape}, ["y"], {"w": w})
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (2, 0)))
    expected = np.zeros((1, 3, padded.shape[2] - 2, padded.shape[3] - 2))
    for i in range(expected.shape[2]):
        for j in range(expected.shape[3]):
            expected[0, :, i, j] = np.einsum("ckl,ockl->o", padded[0, :, i:i + 3, j:j + 3], w)
    np.testing.assert_allclose(_ours(data, x), expected, rtol=1e-5, atol=1e-5)
    for mode, np_mode in (("reflect", "reflect"), ("edge", "edge"), ("constant", "constant")):
        pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
        data = ob.model([ob.node("Pad", ["x", "p"], ["y"], mode=mode)], {"x": x.shape}, ["y"], {"p": pads})
        np.testing.assert_array_equal(_ours(data, x), np.pad(x, ((0, 0), (0, 0), (1, 2), (2, 1)), mode=np_mode))


def test_softmax_axis_rules_before_and_after_opset_13():
    x = _rand(2, 3, 4)
    y11 = _ours(ob.model([ob.node("Softmax", ["x"], ["y"], axis=1)], {"x": x.shape}, ["y"], opset=11), x)
    flat = np.exp(x.reshape(2, 12))  # opset < 13: softmax of the [2, 12] flattening
    np.testing.assert_allclose(y11, (flat / flat.sum(1, keepdims=True)).reshape(x.shape), rtol=1e-5)
    y13 = _ours(ob.model([ob.node("Softmax", ["x"], ["y"])], {"x": x.shape}, ["y"], opset=13), x)
    e = np.exp(x)
    np.testing.assert_allclose(y13, e / e.sum(-1, keepdims=True), rtol=1e-5)


def test_arithmetic_reshape_matmul_constant_nodes():
    x, m = _rand(2, 3, 4), _rand(12, 5)
    nodes = [
        ob.node("Constant", [], ["two"], value=np.array([2.0], np.float32)),
        ob.node("Constant", [], ["shape"], value=np.array([0, -1], np.int64)),
        ob.node("Div", ["x", "two"], ["h"]),
        ob.node("Sigmoid", ["h"], ["s"]),
        ob.node("Identity", ["s"], ["i"]),
        ob.node("Reshape", ["i", "shape"], ["r"]),  # 0: keep dim 0 -> [2, 12]
        ob.node("MatMul", ["r", "m"], ["y"]),
        ob.node("Flatten", ["x"], ["f"], axis=-1),
    ]
    y, f = load_onnx(ob.model(nodes, {"x": x.shape}, ["y", "f"], {"m": m}))(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), (1 / (1 + np.exp(-x / 2))).reshape(2, 12) @ m, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f.numpy(), x.reshape(6, 4))


def test_reader_decodes_attributes_of_every_kind():
    data = ob.model([ob.node("Identity", ["x"], ["y"], i=-3, f=0.25, s="edge", ints=[-1, 0, 7], floats=[0.5, -2.0])],
                    {"x": (1,)}, ["y"], {"k": np.arange(6, dtype=np.int64).reshape(2, 3) - 2})
    graph = read_onnx(data)
    assert graph.opset == 18 and graph.inputs == ["x"] and graph.outputs == ["y"]
    assert graph.nodes[0].attrs == {"i": -3, "f": 0.25, "s": "edge", "ints": [-1, 0, 7], "floats": [0.5, -2.0]}
    np.testing.assert_array_equal(graph.initializers["k"], np.arange(6).reshape(2, 3) - 2)
    assert graph.initializers["k"].dtype == np.int64


def test_unsupported_ops_are_named_up_front():
    data = ob.model([ob.node("Resize", ["x"], ["a"]), ob.node("Relu", ["a"], ["b"]), ob.node("LSTM", ["b"], ["y"])],
                    {"x": (1, 1, 2, 2)}, ["y"])
    with pytest.raises(StylerigError, match="unsupported op.*LSTM, Resize"):
        load_onnx(data)
    assert "Resize" not in OPS


def test_unsupported_attributes_raise_a_clear_error():
    data = ob.model([ob.node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)],
                    {"x": (1, 1, 4, 4)}, ["y"])
    with pytest.raises(StylerigError, match="MaxPool.*ceil_mode"):
        load_onnx(data)(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("data", [b"", b"not an onnx file at all", b"\x3a\xff\xff\xff"])
def test_corrupt_bytes_are_an_onnx_format_error(data):
    with pytest.raises(OnnxFormatError):
        read_onnx(data)


def test_truncated_model_is_an_onnx_format_error():
    data, _ = _resnet_like()
    with pytest.raises(OnnxFormatError):
        read_onnx(data[: len(data) // 2])


def test_state_round_trip_and_gradients(tmp_path):
    data, x = _mobilefacenet_like()
    module = load_onnx(data)
    torch.save(module.state(), tmp_path / "m.pt")
    again = OnnxModule.from_state(torch.load(tmp_path / "m.pt", weights_only=True))
    xt = torch.from_numpy(x).requires_grad_(True)
    y = again(xt)
    torch.testing.assert_close(y, module(torch.from_numpy(x)))
    y.square().sum().backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in again.buffers())
    with pytest.raises(StylerigError, match="format"):
        OnnxModule.from_state({"format": "something else"})
    with pytest.raises(StylerigError, match="takes 1 input"):
        module(xt, xt)


def test_module_follows_dtype_and_device_moves():
    """.double() casts the float constants only (the int64 pads of Pad stay integers); results agree."""
    data, x = _resnet_like()
    module = load_onnx(data)
    y32 = module(torch.from_numpy(x))
    module64 = load_onnx(data).double()
    assert {getattr(module64, f"c{i}").dtype for i in range(len(module64.constant_names))} == {torch.float64, torch.int64}
    y64 = module64(torch.from_numpy(x).double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y32, rtol=1e-4, atol=1e-5)
    if torch.cuda.is_available():
        torch.testing.assert_close(load_onnx(data).cuda()(torch.from_numpy(x).cuda()).cpu(), y32, rtol=1e-4, atol=1e-5)
