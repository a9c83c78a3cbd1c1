"""Will TensorRT's ONNX parser take this graph? A static check, run on every export (no TensorRT needed).

:data:`TENSORRT_ONNX_OPS` is the subset of the operators that TensorRT 10's ONNX parser supports
(onnx-tensorrt ``docs/operators.md``, TensorRT 10.x: opsets 9 to 20 for 10.0, up to 24 for 10.15) that
this project's graphs use or could plausibly use. It is deliberately narrower than TensorRT's full list:
an op outside it is something to look at before shipping, not automatically a TensorRT failure.
Exotic supported ops (Attention, STFT, window functions, RNNs, ...) are left out on purpose.

Besides the op type, a few restrictions that matter for this project are checked:

* ``Resize``: modes ``nearest`` / ``linear`` only (no ``cubic``), no ``antialias``, and only the coordinate
  transformation modes TensorRT implements;
* ops from a non-standard domain (custom ops, ``com.microsoft`` contrib ops) need a TensorRT plugin;
* If/Loop/Scan bodies are checked too.

Torch-free; needs the ``onnx`` package (the ``train`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import onnx

__all__ = ["TENSORRT_ONNX_OPS", "assert_tensorrt_compatible", "check_ops"]

TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    {
        # --- what the exported SimpleNet graph uses (fp32, fp16 and dynamic batch)
        "Conv",
        "Relu",
        "LeakyRelu",
        "Add",
        "MaxPool",
        "AveragePool",
        "Resize",
        "Concat",
        "Slice",
        "Squeeze",
        "Unsqueeze",
        "ReduceMax",
        "Constant",
        "Identity",
        "Cast",
        "Shape",
        "Gather",
        "Reshape",
        "Transpose",
        "Gemm",
        "Neg",
        "Abs",
        "Sub",
        "Pad",
        # --- INT8 (Q/DQ) graphs from calibration/
        "QuantizeLinear",
        "DequantizeLinear",
        # --- common ops, all listed as supported by TensorRT 10's ONNX parser
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Exp",
        "Log",
        "Erf",
        "Reciprocal",
        "Min",
        "Max",
        "Sum",
        "Mean",
        "Clip",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "LogSoftmax",
        "Softplus",
        "HardSigmoid",
        "HardSwish",
        "Elu",
        "Selu",
        "PRelu",
        "Gelu",
        "MatMul",
        "ConvTranspose",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMean",
        "ReduceMin",
        "ReduceSum",
        "ReduceProd",
        "ReduceL2",
        "ArgMax",
        "ArgMin",
        "TopK",
        "Flatten",
        "Expand",
        "Tile",
        "Split",
        "GatherElements",
        "GatherND",
        "ScatterND",
        "ConstantOfShape",
        "Range",
        "Where",
        "Equal",
        "Greater",
        "GreaterOrEqual",
        "Less",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "DepthToSpace",
        "SpaceToDepth",
        "Upsample",
        "Dropout",
        "Einsum",
        "If",
        "CastLike",
    }
)

# Restrictions from the same table (TensorRT 10.x).
_RESIZE_MODES = frozenset({"nearest", "linear"})
_RESIZE_COORDINATE_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
_STANDARD_DOMAINS = ("", "ai.onnx")


def _load(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return onnx.load(os.fspath(model_or_path), load_external_data=False)


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _node_problem(node: onnx.NodeProto) -> str | None:
    """None if TensorRT (as far as this check knows) takes the node, else a short description."""
    if node.domain not in _STANDARD_DOMAINS:
        return f"{node.domain}:{node.op_type}"
    if node.op_type not in TENSORRT_ONNX_OPS:
        return node.op_type
    if node.op_type == "Resize":
        mode = _attr(node, "mode", "nearest")
        if mode not in _RESIZE_MODES:
            return f"Resize(mode={mode})"
        if _attr(node, "antialias", 0):
            return "Resize(antialias=1)"
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if coord not in _RESIZE_COORDINATE_MODES:
            return f"Resize(coordinate_transformation_mode={coord})"
    return None


def check_ops(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> list[str]:
    """Sorted, de-duplicated list of the ops (or op restrictions) TensorRT would not take; empty if fine.

    Entries are an op type (``"NonZero"``), ``"domain:Op"`` for custom/contrib ops, or ``"Op(attr=value)"``
    for a supported op used in an unsupported way.
    """
    model = _load(model_or_path)
    problems = {p for node in _nodes(model.graph) if (p := _node_problem(node)) is not None}
    return sorted(problems)


def assert_tensorrt_compatible(model: onnx.ModelProto | str | os.PathLike[str]) -> None:
    """Raise ValueError naming every op TensorRT 10's ONNX parser (as listed here) would reject."""
    bad = check_ops(model)
    if bad:
        where = f" in {os.fspath(model)}" if not isinstance(model, onnx.ModelProto) else ""
        raise ValueError(
            f"ONNX graph{where} uses operators outside the TensorRT-compatible set: {', '.join(bad)}. "
            "Change the model so that it exports to supported ops (see edge_ad/onnx_tools/op_check.py)."
        )
