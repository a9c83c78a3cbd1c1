"""Fold zero ``Pad`` nodes into the convolutions they feed: an export-time graph pass. Torch-free (onnx only).

Why: TensorFlow's "SAME" padding of a stride-2 convolution is asymmetric (EfficientNet-Lite's backbone pads 0 before
and 1 after at 224 px), which torch's ``Conv2d(padding=...)`` cannot say, so the model pads with ``F.pad`` and the
exporter writes a separate ``Pad`` node in front of each such convolution: an extra copy of the whole activation per
stride-2 layer. ONNX's ``Conv`` takes asymmetric ``pads`` itself, so a constant-zero ``Pad`` that touches only the
spatial axes and feeds only convolutions can be dropped and its amounts added to each convolution's ``pads``: the
same arithmetic (zeros outside the image), one node and one copy fewer.

torch's exporter computes each Pad's amounts with a small chain of ops on constants (ConstantOfShape, Concat, Reshape,
Slice, Transpose, Cast) that its constant folding leaves in place; the pass evaluates such a chain
(:mod:`onnx.reference`, node by node) to know the amounts, and drops the chain with the Pad.

A ``Pad`` is left alone when any of this does not hold: mode ``constant`` with a zero (or absent) value, its amounts
computable from constants alone, none negative, none on the batch or channel axes, every
consumer a ``Conv`` taking it as its data input with ``auto_pad`` unset or ``NOTSET``, and it is not a graph output.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

__all__ = ["fold_pads_into_convs"]


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node outputs (``value`` attribute) by tensor name."""
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


_NOT_CONSTANT = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")


class _Folder:
    """Values of tensors computable from constants alone, evaluated node by node (and the nodes that made them)."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.values = _constants(graph)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.chain: set[int] = set()  # ids of the nodes evaluated here

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if node is None or node.op_type in _NOT_CONSTANT or node.domain not in ("", "ai.onnx") or depth > 32:
            return None
        inputs = [self.value(i, depth + 1) if i else None for i in node.input]
        if any(v is None for i, v in zip(node.input, inputs, strict=True) if i):
            return None
        feeds = {i: v for i, v in zip(node.input, inputs, strict=True) if i}
        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opsets.get("", 17)}).run(None, feeds)
        except Exception:  # noqa: BLE001 - an op the reference cannot run: the Pad is left as it is
            return None
        for out_name, out in zip(node.output, outs, strict=False):
            self.values[out_name] = np.asarray(out)
        self.chain.add(id(node))
        return self.values.get(name)


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def _pad_amounts(node: onnx.NodeProto, folder: _Folder) -> list[int] | None:
    """The Pad's amounts ``[x0_begin, x1_begin, ..., x0_end, ...]`` when it is a foldable zero pad, else None."""
    mode = _attr(node, "mode")
    if mode is not None and mode.s not in (b"", b"constant"):
        return None
    if _attr(node, "pads") is not None:  # opset < 11: amounts and value are attributes
        pads = list(_attr(node, "pads").ints)  # type: ignore[union-attr]
        value_attr = _attr(node, "value")
        value = np.array(value_attr.f if value_attr is not None else 0.0)
    else:
        amounts = folder.value(node.input[1]) if len(node.input) > 1 else None
        if amounts is None or (len(node.input) > 3 and node.input[3]):  # opset 18 "axes": not written here
            return None
        pads = [int(v) for v in amounts.reshape(-1)]
        value_name = node.input[2] if len(node.input) > 2 else ""
        value = folder.value(value_name) if value_name else np.array(0.0)
        if value is None:
            return None
    if value.size > 1 or float(value.reshape(-1)[0] if value.size else 0.0) != 0.0:
        return None
    rank = len(pads) // 2
    if rank < 3 or any(p < 0 for p in pads) or any(pads[i] or pads[rank + i] for i in (0, 1)):
        return None
    return pads


def _foldable_consumer(node: onnx.NodeProto, tensor: str) -> bool:
    auto_pad = _attr(node, "auto_pad")
    return (
        node.op_type == "Conv"
        and node.input[0] == tensor
        and tensor not in node.input[1:]
        and (auto_pad is None or auto_pad.s in (b"", b"NOTSET"))
    )


def fold_pads_into_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every foldable zero ``Pad`` merged into the ``Conv`` nodes it feeds, and how many
    Pads were removed. Constants left unused (the amounts) are removed too. Only the top-level graph is walked."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    folder = _Folder(out)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    removed: list[onnx.NodeProto] = []
    for node in list(graph.node):
        if node.op_type != "Pad" or node.output[0] in outputs:
            continue
        pads = _pad_amounts(node, folder)
        users = consumers.get(node.output[0], [])
        if pads is None or not users or not all(_foldable_consumer(u, node.output[0]) for u in users):
            continue
        rank = len(pads) // 2
        spatial = rank - 2
        begin, end = pads[2:rank], pads[rank + 2 :]
        for conv in users:
            attr = _attr(conv, "pads")
            old = list(attr.ints) if attr is not None else [0] * (2 * spatial)
            new = [old[i] + begin[i] for i in range(spatial)] + [old[spatial + i] + end[i] for i in range(spatial)]
            if attr is not None:
                conv.attribute.remove(attr)
            conv.attribute.append(onnx.helper.make_attribute("pads", new))
            conv.input[0] = node.input[0]
            consumers[node.input[0]].append(conv)
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    if removed:
        _drop_dead(graph, {name for node in removed for name in node.input[1:] if name})
    return out, len(removed)


def _drop_dead(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove what computed ``names`` (the folded Pads' amounts and values) once nothing reads it any more: the
    nodes, transitively back through their inputs, and the initializers."""
    producer = {out: node for node in graph.node for out in node.output}
    keep = {o.name for o in graph.output} | {i.name for i in graph.input}
    while True:
        used = {name for node in graph.node for name in node.input} | keep
        dead = [producer[n] for n in names - used if n in producer and all(o not in used for o in producer[n].output)]
        dead = list({id(node): node for node in dead}.values())
        if not dead:
            break
        for node in dead:
            names.update(i for i in node.input if i)
            names.difference_update(node.output)
            graph.node.remove(node)
            for o in node.output:
                producer.pop(o, None)
    used = {name for node in graph.node for name in node.input} | keep
    for init in [t for t in graph.initializer if t.name in names and t.name not in used]:
        graph.initializer.remove(init)
