"""Structure of an exported ONNX graph: what depends on a tensor, and the work of its weighted layers. Torch-free.

One home for graph walks that the export (fp16 split, FLOP count) and the INT8 calibration (float head, recipe
speed) both need, so that the calibration stage does not import the torch-based exporter for them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx

from edge_ad.artifacts import artifact_path

__all__ = ["FLOP_STAGES", "WEIGHTED_OPS", "descendants", "graph_flops", "node_macs"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOP_STAGES = ("backbone", "aggregation", "discriminator", "postprocess")
PATCH_SCORES = "patch_scores"


def descendants(graph: onnx.GraphProto, tensor: str) -> list[int]:
    """Indices (in graph order) of the nodes that depend, transitively, on ``tensor``.

    Relies on the graph being topologically sorted, as ``onnx.checker`` requires of every exported model.
    """
    reached, found = {tensor}, []
    for index, node in enumerate(graph.node):
        if any(name in reached for name in node.input):
            found.append(index)
            reached.update(node.output)
    return found


def _shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    """Shape-inferred copy of ``model`` and every known tensor shape (a symbolic axis counts as 1).

    Where shape inference leaves a weighted layer's spatial axes open (EfficientNet-Lite's TF-SAME padding, a Pad
    whose amounts come from Shape ops, exported by the legacy exporter), those tensors' shapes come from one
    onnxruntime run on a zero image (:func:`_runtime_shapes`) instead of counting each open axis as 1.
    """
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    open_axes: set[str] = set()
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else 1 for d in dims])
        if any(not d.HasField("dim_value") for d in list(dims)[1:]):
            open_axes.add(value.name)
    wanted = {
        name for node in inferred.graph.node if node.op_type in WEIGHTED_OPS
        for name in (node.output[0], node.input[0]) if name in open_axes or name not in shapes
    }  # fmt: skip
    if wanted:
        shapes.update(_runtime_shapes(model, sorted(wanted)))
    return inferred, shapes


def _runtime_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """The shapes of ``names`` in one onnxruntime run on zero inputs (symbolic axes 1); {} without onnxruntime or
    when the run fails (the count then stays a lower bound)."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    initializers = {t.name for t in probe.graph.initializer}
    feeds = {}
    for value in probe.graph.input:
        if value.name not in initializers:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
            feeds[value.name] = np.zeros(dims, dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, feeds)
    except Exception:  # noqa: BLE001 - FLOPs are informative; an unrunnable graph keeps inference's shapes
        return {}
    return {name: list(value.shape) for name, value in zip(names, values, strict=True)}


def _macs_of(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one weighted node over its whole output (all images of the batch)."""
    out = shapes.get(node.output[0]) if node.output else None
    if not out or node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
        return 0
    if node.op_type == "Conv":  # weight [C_out, C_in / group, kh, kw]: each output sums C_in / group * kh * kw
        weight = shapes.get(node.input[1])
        return math.prod(out) * math.prod(weight[1:]) if weight else 0
    if node.op_type == "ConvTranspose":  # weight [C_in, C_out / group, kh, kw]: each input feeds C_out/group*kh*kw
        weight, x = shapes.get(node.input[1]), shapes.get(node.input[0])
        return math.prod(x) * math.prod(weight[1:]) if weight and x else 0
    a = shapes.get(node.input[0])
    if not a:
        return 0
    trans_a = any(at.name == "transA" and at.i for at in node.attribute)
    return math.prod(out) * (a[-2] if node.op_type == "Gemm" and trans_a else a[-1])


def _batch(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> int:
    initializers = {t.name for t in model.graph.initializer}
    first = next((i.name for i in model.graph.input if i.name not in initializers), None)
    return max(shapes[first][0], 1) if first is not None and shapes.get(first) else 1


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per image of every Conv/ConvTranspose/Gemm/MatMul node, by node name."""
    inferred, shapes = _shapes(model)
    batch = _batch(inferred, shapes)
    macs = {}
    for node in inferred.graph.node:
        value = _macs_of(node, shapes)
        if value:
            macs[node.name] = value // batch
    return macs


def _flops_model(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if path.is_dir():  # a bundle: count its exported graph
        candidates = [artifact_path(path, "fp32"), *sorted(path.glob(artifact_path(path, "*").name))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path} holds no exported model.<precision>.onnx to count FLOPs on")
        path = found
    return onnx.load(str(path))


def graph_flops(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> dict[str, float]:
    """FLOPs per image (2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul) by stage, plus ``"total"``.

    Accepts an ONNX model, its path, or a bundle folder (its exported ``model.fp32.onnx``, else another
    ``model.*.onnx``). Stages (:data:`FLOP_STAGES`) are found from the graph's structure, not node names:
    ``aggregation`` = the grouped convolutions of the patch aggregator, ``discriminator`` = what depends on
    them, ``postprocess`` = what depends on ``patch_scores``, ``backbone`` = the rest. Element-wise ops,
    pooling and resizes are not counted. A symbolic batch axis counts as one image. Shapes come from ONNX shape
    inference; a node whose shapes it cannot infer counts 0.
    """
    model, shapes = _shapes(_flops_model(model_or_path))
    graph = model.graph
    batch = _batch(model, shapes)
    head = set(descendants(graph, PATCH_SCORES))
    after_aggregation: set[str] = set()
    flops = dict.fromkeys(FLOP_STAGES, 0.0)
    for index, node in enumerate(graph.node):
        grouped = node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)
        if index in head:
            stage = "postprocess"
        elif grouped or any(name in after_aggregation for name in node.input):
            stage = "aggregation" if grouped else "discriminator"
            after_aggregation.update(node.output)
        else:
            stage = "backbone"
        flops[stage] += 2.0 * _macs_of(node, shapes) / batch  # 0 for nodes that are not WEIGHTED_OPS
    flops["total"] = sum(flops[stage] for stage in FLOP_STAGES)
    return flops
