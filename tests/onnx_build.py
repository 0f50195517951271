"""Write tiny ONNX models by hand (a minimal protobuf encoder), for the tests of :mod:`stylerig_au.onnx_torch`.

Independent of the reader under test: OpenCV's ONNX importer (``cv2.dnn.readNetFromONNX``) reads
the same bytes as a reference implementation.
"""

from __future__ import annotations

import struct

import numpy as np

_DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.int64): 7, np.dtype(np.int32): 6}


def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _key(number, 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _packed_ints(number: int, values: list[int]) -> bytes:
    return _bytes_field(number, b"".join(_varint(v) for v in values))


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto with raw little-endian data."""
    array = np.ascontiguousarray(array)
    return (_packed_ints(1, list(array.shape)) + _int_field(2, _DTYPE_CODES[array.dtype])
            + _bytes_field(8, name) + _bytes_field(9, array.astype(array.dtype.newbyteorder("<")).tobytes()))


def attribute(name: str, value) -> bytes:
    """An AttributeProto from an int, float, str, ndarray, or a list of ints / floats."""
    head = _bytes_field(1, name)
    if isinstance(value, np.ndarray):
        return head + _bytes_field(5, tensor("", value)) + _int_field(20, 4)
    if isinstance(value, bool) or isinstance(value, int):
        return head + _int_field(3, int(value)) + _int_field(20, 2)
    if isinstance(value, float):
        return head + _key(2, 5) + struct.pack("<f", value) + _int_field(20, 1)
    if isinstance(value, str):
        return head + _bytes_field(4, value) + _int_field(20, 3)
    if all(isinstance(v, int) for v in value):
        return head + _packed_ints(8, list(value)) + _int_field(20, 7)
    return head + _bytes_field(7, struct.pack(f"<{len(value)}f", *value)) + _int_field(20, 6)


def node(op_type: str, inputs: list[str], outputs: list[str], **attrs) -> bytes:
    out = b"".join(_bytes_field(1, i) for i in inputs) + b"".join(_bytes_field(2, o) for o in outputs)
    out += _bytes_field(3, f"{op_type}_{outputs[0]}") + _bytes_field(4, op_type)
    return out + b"".join(_bytes_field(5, attribute(k, v)) for k, v in attrs.items())


def _value_info(name: str, shape: tuple[int, ...] | None) -> bytes:
    """A float32 ValueInfoProto; ``shape`` None: a shape of unknown rank (OpenCV needs both fields)."""
    dims = b"".join(_bytes_field(1, _int_field(1, d)) for d in shape or ())
    tensor_type = _int_field(1, 1) + _bytes_field(2, dims)
    return _bytes_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


def model(nodes: list[bytes], inputs: dict[str, tuple[int, ...]], outputs: list[str],
          initializers: dict[str, np.ndarray] | None = None, opset: int = 18) -> bytes:
    """A ModelProto: ``nodes`` (from :func:`node`), float32 inputs of the given shapes, named outputs."""
    graph = b"".join(_bytes_field(1, n) for n in nodes) + _bytes_field(2, "g")
    graph += b"".join(_bytes_field(5, tensor(k, v)) for k, v in (initializers or {}).items())
    graph += b"".join(_bytes_field(11, _value_info(k, s)) for k, s in inputs.items())
    graph += b"".join(_bytes_field(12, _value_info(o, None)) for o in outputs)
    opset_id = _bytes_field(1, "") + _int_field(2, opset)
    return _int_field(1, 8) + _bytes_field(2, "stylerig_au-tests") + _bytes_field(7, graph) + _bytes_field(8, opset_id)
