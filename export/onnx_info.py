"""What the engine builder needs from an ONNX file, read without the ``onnx`` package (not a base dependency).

A Jetson's base install builds engines from an exported model; pulling in ``onnx`` (and its protobuf) for a
few header fields would break the README's Jetson command. This module walks the protobuf wire format of
``ModelProto`` far enough to read the metadata, the graph's inputs and outputs and the node list, skipping
initializer payloads by their length. A file that is not a valid protobuf (text, truncated) raises
:class:`OnnxFormatError` (a ValueError: one clear line from the CLI, never a DecodeError traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OnnxFormatError", "OnnxInfo", "ValueInfo", "read_onnx_info"]

# ModelProto / GraphProto / NodeProto / ValueInfoProto / TypeProto field numbers (onnx.proto3).
_MODEL_IR_VERSION, _MODEL_GRAPH, _MODEL_METADATA = 1, 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE = 1, 2, 3, 4
_TENSOR_NAME = 8
_ELEM_TYPES = {1: "float32", 10: "float16", 3: "int8", 2: "uint8", 6: "int32", 7: "int64", 16: "bfloat16"}


class OnnxFormatError(ValueError):
    """The file is not a readable ONNX model."""


@dataclass(frozen=True)
class ValueInfo:
    """One graph input or output: name, element type, dims (an int, or the axis name for a dynamic axis)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]


@dataclass
class OnnxInfo:
    path: Path
    ir_version: int
    metadata: dict[str, str]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)  # name, op, in, out

    @property
    def input(self) -> ValueInfo:
        if len(self.inputs) != 1:
            raise OnnxFormatError(f"{self.path} has inputs {[i.name for i in self.inputs]}; expected one")
        return self.inputs[0]

    @property
    def static_batch(self) -> int | None:
        """The input's batch size, or None when the batch axis is dynamic."""
        first = self.input.dims[0] if self.input.dims else None
        return first if isinstance(first, int) and first > 0 else None

    def descendants(self, tensor: str, stop_ops: tuple[str, ...] = ()) -> list[str]:
        """Names of the nodes that depend on ``tensor`` (the graph is topologically sorted).

        A node whose op is in ``stop_ops`` is neither listed nor followed (e.g. ``Shape``: what depends on a
        tensor's shape is integer arithmetic, not the tensor's data).
        """
        reached, found = {tensor}, []
        for name, op, inputs, outputs in self.nodes:
            if reached.intersection(inputs) and op not in stop_ops:
                found.append(name)
                reached.update(outputs)
        return found


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)``: an int for varints/fixed, a memoryview for length-delimited."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFormatError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise OnnxFormatError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise OnnxFormatError("a length-delimited field runs past the end of the data (truncated file?)")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise OnnxFormatError(f"wire type {wire} is not used by ONNX")
        yield number, wire, value


def _text(value: object) -> str:
    if not isinstance(value, memoryview):
        raise OnnxFormatError("expected a string field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxFormatError("a string field is not UTF-8") from exc


def _sub(value: object) -> memoryview:
    if not isinstance(value, memoryview):
        raise OnnxFormatError("expected a message field")
    return value


def _value_info(buf: memoryview) -> ValueInfo:
    name, dtype, dims = "", "unknown", []
    for number, _, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:  # TypeProto
            for t_number, _, t_value in _fields(_sub(value)):
                if t_number != 1:  # tensor_type
                    continue
                for tt_number, _, tt_value in _fields(_sub(t_value)):
                    if tt_number == 1 and isinstance(tt_value, int):
                        dtype = _ELEM_TYPES.get(tt_value, f"onnx:{tt_value}")
                    elif tt_number == 2:  # TensorShapeProto
                        for s_number, _, s_value in _fields(_sub(tt_value)):
                            if s_number != 1:
                                continue
                            dim: int | str = "?"
                            for d_number, _, d_value in _fields(_sub(s_value)):
                                if d_number == 1 and isinstance(d_value, int):
                                    dim = d_value
                                elif d_number == 2:
                                    dim = _text(d_value) or "?"
                            dims.append(dim)
    return ValueInfo(name, dtype, tuple(dims))


def _graph(buf: memoryview) -> tuple[list[ValueInfo], list[ValueInfo], list, set[str]]:
    inputs, outputs, nodes, initializers = [], [], [], set()
    for number, _, value in _fields(buf):
        if number == _GRAPH_INPUT:
            inputs.append(_value_info(_sub(value)))
        elif number == _GRAPH_OUTPUT:
            outputs.append(_value_info(_sub(value)))
        elif number == _GRAPH_INITIALIZER:
            for t_number, _, t_value in _fields(_sub(value)):
                if t_number == _TENSOR_NAME:
                    initializers.add(_text(t_value))
        elif number == _GRAPH_NODE:
            name, op, ins, outs = "", "", [], []
            for n_number, _, n_value in _fields(_sub(value)):
                if n_number == _NODE_INPUT:
                    ins.append(_text(n_value))
                elif n_number == _NODE_OUTPUT:
                    outs.append(_text(n_value))
                elif n_number == _NODE_NAME:
                    name = _text(n_value)
                elif n_number == _NODE_OP_TYPE:
                    op = _text(n_value)
            nodes.append((name or f"node_of_{outs[0] if outs else len(nodes)}", op, tuple(ins), tuple(outs)))
    return [i for i in inputs if i.name not in initializers], outputs, nodes, initializers


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """Metadata, inputs, outputs and nodes of an ONNX file; :class:`OnnxFormatError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    data = memoryview(path.read_bytes())
    ir_version, metadata, graph = None, {}, None
    try:
        for number, wire, value in _fields(data):
            if number == _MODEL_IR_VERSION and wire == 0:
                ir_version = int(value)  # type: ignore[arg-type]
            elif number == _MODEL_GRAPH:
                graph = _sub(value)
            elif number == _MODEL_METADATA:
                key = val = ""
                for e_number, _, e_value in _fields(_sub(value)):
                    if e_number == 1:
                        key = _text(e_value)
                    elif e_number == 2:
                        val = _text(e_value)
                metadata[key] = val
        if ir_version is None or graph is None:
            raise OnnxFormatError("no ir_version or no graph")
        inputs, outputs, nodes, _ = _graph(graph)
    except OnnxFormatError as exc:
        raise OnnxFormatError(f"{path} is not a readable ONNX model ({exc}); re-export it with edge-ad export") from exc
    return OnnxInfo(path, ir_version, metadata, inputs, outputs, nodes)
