"""Run an int8 model's weight products with signed weights where this CPU's kernel for them is exact.

The shipped model stores its weights as unsigned 8-bit (the ``avx2`` preset):
on AVX2 without VNNI, ONNX Runtime's u8 x s8 kernel adds pairs of products in
int16 and saturates, so signed weights would change the vectors. On CPUs with
VNNI or AMX the u8 x s8 kernel accumulates in int32 and is exact, and it is
the fast one: ONNX Runtime 1.32 sends u8 x u8 products to the AVX2 kernel
there. On a 2-core Xeon with AVX-512 VNNI and AMX, indexing ran 2.2-2.5x the
takes/s and a query's encode took 0.62x the CPU, with every output bit the
same (docs/PERFORMANCE.md, "Signed weights where the kernel is exact").

Subtracting 128 from a weight and from its zero point leaves their
difference, the number that is multiplied, unchanged; as bits that is
``byte ^ 0x80``. So the model loaded is the same model: :func:`signed_weights`
rewrites the MatMulInteger weights of the file's bytes, and
:func:`signed_products_exact` decides by running the kernel on this machine
(products that saturate int16, checked against numpy's exact sums), not by
reading CPU flags.

The ONNX file is read and written as protobuf by hand: the ``onnx`` package
is not a dependency of running takes, and importing it costs 0.7 s.
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

# Field numbers of onnx.proto.
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
_NODE_INPUT, _NODE_OUTPUT, _NODE_OP_TYPE, _NODE_DOMAIN, _NODE_ATTRIBUTE = 1, 2, 4, 7, 5
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_INT32_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 5, 8, 9
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_VALUE_INFO_NAME = 1
_UINT8, _INT8, _INT32 = 2, 3, 6

_VARINT, _LENGTH = 0, 2


class _Unsupported(ValueError):
    """The file holds something this rewrite does not handle: it is loaded as it is."""


def _read_varint(buffer, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(buffer):
            raise _Unsupported("truncated varint")
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buffer, start: int = 0, end: int | None = None):
    """(field number, wire type, value, field start, field end) of the message in ``buffer[start:end]``.

    A varint's value is the int; a length-delimited value is its (start, end)
    in ``buffer``, so nothing is copied.
    """
    end = len(buffer) if end is None else end
    offset = start
    while offset < end:
        field_start = offset
        key, offset = _read_varint(buffer, offset)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, offset = _read_varint(buffer, offset)
        elif wire == _LENGTH:
            size, offset = _read_varint(buffer, offset)
            value = (offset, offset + size)
            offset += size
        elif wire in (1, 5):
            value = None
            offset += 8 if wire == 1 else 4
        else:
            raise _Unsupported(f"wire type {wire}")
        if offset > end:
            raise _Unsupported("truncated field")
        yield number, wire, value, field_start, offset


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _length_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LENGTH) + _varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _varint(value)


def _strings(buffer, span: tuple[int, int], number: int) -> list[str]:
    return [
        bytes(buffer[value[0] : value[1]]).decode("utf-8")
        for field, wire, value, _, _ in _fields(buffer, *span)
        if field == number and wire == _LENGTH
    ]


def _packed_varints(buffer, span: tuple[int, int]) -> list[int]:
    data = np.frombuffer(buffer, dtype=np.uint8, count=span[1] - span[0], offset=span[0])
    ends = np.flatnonzero(data < 0x80)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if len(ends) and ends[-1] == len(data) - 1 and np.all(ends - starts <= 1):
        # Values under 16,384 (zero points are under 256): one or two bytes each, decoded at once.
        low = (data[starts] & 0x7F).astype(np.int64)
        high = np.where(ends > starts, (data[ends] & 0x7F).astype(np.int64) << 7, 0)
        return (low | high).tolist()
    offset, values = span[0], []
    while offset < span[1]:
        value, offset = _read_varint(buffer, offset)
        values.append(value)
    return values


class _Tensor:
    """Where an initializer's name, type and values lie in the file."""

    def __init__(self, buffer, span: tuple[int, int]):
        self.span = span
        self.name = None
        self.data_type = self.type_field = self.raw = None
        self.int32_data: list[int] = []
        dims = []
        for number, wire, value, field_start, field_end in _fields(buffer, *span):
            if number == _TENSOR_NAME and wire == _LENGTH:
                self.name = bytes(buffer[value[0] : value[1]]).decode("utf-8")
            elif number == _TENSOR_DATA_TYPE and wire == _VARINT:
                self.data_type, self.type_field = value, (field_start, field_end)
            elif number == _TENSOR_RAW_DATA and wire == _LENGTH:
                self.raw = value
            elif number == _TENSOR_INT32_DATA:
                self.int32_data += _packed_varints(buffer, value) if wire == _LENGTH else [value]
            elif number == _TENSOR_DIMS:
                dims += _packed_varints(buffer, value) if wire == _LENGTH else [value]
            elif number in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION) and not (wire == _VARINT and value == 0):
                raise _Unsupported("external data")
        self.size = int(np.prod(dims, dtype=np.int64))

    def sign_in_place(self, work: bytearray) -> bool:
        """Flip a raw uint8 tensor to int8 within ``work`` (same length); False when its values are not raw."""
        if self.raw is None or self.raw[1] - self.raw[0] != self.size or self.type_field[1] - self.type_field[0] != 2:
            return False
        work[self.type_field[0] + 1] = _INT8
        values = np.frombuffer(work, dtype=np.uint8, count=self.size, offset=self.raw[0])
        values ^= np.uint8(0x80)
        return True

    def signed(self, buffer) -> bytes:
        """This uint8 tensor rebuilt as int8 with raw values: for values kept as int32_data (small zero points)."""
        if self.raw is not None or len(self.int32_data) != self.size:
            raise _Unsupported("tensor values neither raw nor int32_data")
        kept = b"".join(
            bytes(buffer[field_start:field_end])
            for number, _, _, field_start, field_end in _fields(buffer, *self.span)
            if number not in (_TENSOR_DATA_TYPE, _TENSOR_INT32_DATA)
        )
        values = (np.asarray(self.int32_data, dtype=np.uint8) ^ np.uint8(0x80)).tobytes()
        return kept + _varint_field(_TENSOR_DATA_TYPE, _INT8) + _length_field(_TENSOR_RAW_DATA, values)


def _weight_tensors(buffer, graph: tuple[int, int]) -> list[_Tensor]:
    """The uint8 initializers that only MatMulInteger nodes use, as their weights (input 1) or its zero point (input 3)."""
    initializers: dict[str, _Tensor] = {}
    declared: set[str] = set()
    targets: set[str] = set()
    other_uses: set[str] = set()
    for number, wire, value, _, _ in _fields(buffer, *graph):
        if wire != _LENGTH:
            continue
        if number == _GRAPH_NODE:
            inputs, op_type, domain, attributes = [], "", "", False
            for field, field_wire, item, _, _ in _fields(buffer, *value):
                if field_wire != _LENGTH:
                    continue
                if field == _NODE_INPUT:
                    inputs.append(bytes(buffer[item[0] : item[1]]).decode("utf-8"))
                elif field == _NODE_OP_TYPE:
                    op_type = bytes(buffer[item[0] : item[1]]).decode("utf-8")
                elif field == _NODE_DOMAIN:
                    domain = bytes(buffer[item[0] : item[1]]).decode("utf-8")
                elif field == _NODE_ATTRIBUTE:
                    attributes = True
            if attributes and op_type in ("If", "Loop", "Scan"):
                raise _Unsupported("subgraphs")
            for position, name in enumerate(inputs):
                if op_type == "MatMulInteger" and domain in ("", "ai.onnx") and position in (1, 3):
                    targets.add(name)
                else:
                    other_uses.add(name)
        elif number == _GRAPH_INITIALIZER:
            tensor = _Tensor(buffer, value)
            initializers[tensor.name] = tensor
        elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO):
            declared.update(_strings(buffer, value, _VALUE_INFO_NAME))
    found = [initializers[name] for name in sorted(targets) if name in initializers and initializers[name].data_type == _UINT8]
    if any(tensor.name in other_uses or tensor.name in declared for tensor in found):
        raise _Unsupported("a weight is used elsewhere or declared as a graph value")
    return found


def signed_weights(model: bytes) -> bytes | None:
    """``model`` (an ONNX file's bytes) with its uint8 MatMulInteger weights as int8, or None when it has none to change.

    The products and so the outputs are the same wherever the u8 x s8 kernel
    is exact (:func:`signed_products_exact`). A file this rewrite does not
    handle (external data, subgraphs, a weight shared with another node) gives
    None too, with a debug line.
    """
    return _signed_in_place(bytearray(model))


def signed_weights_of_file(path: str | os.PathLike) -> bytes | None:
    """:func:`signed_weights` of the ONNX file at ``path``, read straight into the buffer it is changed in.

    The shipped model is 23 MB, and in a process that has just started each
    copy of it costs about 10 ms of the server's cold start.
    """
    with open(path, "rb") as file:
        work = bytearray(os.fstat(file.fileno()).st_size)
        if file.readinto(work) != len(work):
            return None  # the file changed while it was read: it is loaded as it is
    return _signed_in_place(work)


def _signed_in_place(work: bytearray) -> bytes | None:
    try:
        graph = next(
            ((value, field_start, field_end) for number, wire, value, field_start, field_end in _fields(work) if number == _MODEL_GRAPH and wire == _LENGTH),
            None,
        )
        if graph is None:
            return None
        tensors = _weight_tensors(work, graph[0])
        if not tensors:
            return None
        # The large weights keep their length and are flipped where they lie,
        # which leaves every field's place unchanged; the few tensors stored
        # as int32 varints are rebuilt.
        rebuilt = {tensor.span: tensor.signed(work) for tensor in tensors if not tensor.sign_in_place(work)}
    except _Unsupported as reason:
        logger.debug("int8 weights kept unsigned: %s", reason)
        return None
    if not rebuilt:
        return bytes(work)
    view = memoryview(work)
    parts = []
    for number, wire, value, field_start, field_end in _fields(work, *graph[0]):
        if number == _GRAPH_INITIALIZER and wire == _LENGTH and value in rebuilt:
            parts.append(_length_field(_GRAPH_INITIALIZER, rebuilt[value]))
        else:
            parts.append(view[field_start:field_end])
    size = sum(len(part) for part in parts)
    return b"".join((view[: graph[1]], _key(_MODEL_GRAPH, _LENGTH), _varint(size), *parts, view[graph[2] :]))


_PROBE_DEPTH = 384  # the model's hidden size: the products' inner dimension
_PROBE_COLUMNS = 64


def _probe_model() -> bytes:
    """An ONNX model of one MatMulInteger: A (uint8, M x 384) times a constant int8 B (384 x 64) into int32."""
    weights = _probe_weights()

    def value_info(name: str, element: int, dims: list) -> bytes:
        shape = b"".join(
            _length_field(1, _length_field(2, dim.encode()) if isinstance(dim, str) else _varint_field(1, dim)) for dim in dims
        )
        tensor_type = _varint_field(1, element) + _length_field(2, shape)
        return _length_field(_VALUE_INFO_NAME, name.encode()) + _length_field(2, _length_field(1, tensor_type))

    node = _length_field(_NODE_INPUT, b"A") + _length_field(_NODE_INPUT, b"B") + _length_field(_NODE_OUTPUT, b"Y")
    node += _length_field(_NODE_OP_TYPE, b"MatMulInteger")
    initializer = (
        b"".join(_varint_field(_TENSOR_DIMS, dim) for dim in weights.shape)
        + _varint_field(_TENSOR_DATA_TYPE, _INT8)
        + _length_field(_TENSOR_NAME, b"B")
        + _length_field(_TENSOR_RAW_DATA, weights.tobytes())
    )
    graph = (
        _length_field(_GRAPH_NODE, node)
        + _length_field(2, b"int8-kernel-probe")
        + _length_field(_GRAPH_INITIALIZER, initializer)
        + _length_field(_GRAPH_INPUT, value_info("A", _UINT8, ["M", _PROBE_DEPTH]))
        + _length_field(_GRAPH_OUTPUT, value_info("Y", _INT32, ["M", _PROBE_COLUMNS]))
    )
    opset = _length_field(1, b"") + _varint_field(2, 13)
    return _varint_field(1, 8) + _length_field(8, opset) + _length_field(_MODEL_GRAPH, graph)


def _probe_weights() -> np.ndarray:
    # The extremes first: 255 x 127 twice is past int16, where a
    # VPMADDUBSW kernel saturates; then random values for everything else.
    weights = np.random.default_rng(16).integers(-128, 128, size=(_PROBE_DEPTH, _PROBE_COLUMNS)).astype(np.int8)
    weights[:, 0] = 127
    weights[:, 1] = -128
    weights[::2, 2], weights[1::2, 2] = 127, -128
    return weights


@functools.cache
def signed_products_exact(onnxruntime) -> bool:
    """Whether ONNX Runtime's u8 x s8 products on this CPU equal the exact integer sums, one row or many.

    Runs once per process, in a few milliseconds.
    """
    try:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(_probe_model(), options, providers=["CPUExecutionProvider"])
        weights = _probe_weights().astype(np.int64)
        rows = np.random.default_rng(3).integers(0, 256, size=(70, _PROBE_DEPTH)).astype(np.uint8)
        rows[:8] = 255
        for count in (1, 8, 70):
            activations = rows[:count]
            (result,) = session.run(None, {"A": activations})
            if not np.array_equal(result, activations.astype(np.int64) @ weights):
                logger.debug("int8 weights kept unsigned: this CPU's u8 x s8 products are not exact")
                return False
    except Exception as error:  # any failure of the probe means: keep the weights as they are
        logger.debug("int8 weights kept unsigned: the kernel probe failed (%s)", error)
        return False
    return True


__all__ = ["signed_products_exact", "signed_weights", "signed_weights_of_file"]
