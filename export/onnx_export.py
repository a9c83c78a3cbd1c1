"""Bundle -> ONNX: a family's fused inference graph, fp32 or fp16, with the metadata a runtime needs.

What is exported is the model's ``inference_graph()`` (SimpleNet's, NSA's, RealNet's) -- the very module evaluation
and the torch runtime run, carrying what the graph declares for the torch-free stages (:func:`graph_metadata`):
``images[N,3,H,W] float32 (normalised) -> image_score[N], anomaly_map[N,H,W], patch_scores[N,1,h,w]``
(all float32). The exporter is the one the graph declares (``onnx_exporter``, :mod:`edge_ad.export.onnx_trace`):
the legacy TorchScript exporter by default, which folds the backbone's eval-mode BatchNorm into its convolutions,
or the torch.export-based one (opset 18 at least) for a graph the legacy one cannot take; node names follow the
module paths either way.

FP16: the fp32 ONNX graph is converted (:func:`convert_network_to_fp16`, no extra dependency): the network
part (backbone, patch aggregation, fused adapter/discriminator -- every node the ``patch_scores`` output
does not depend on) gets float16 weights and compute, with an explicit Cast of ``images`` to float16 at its
entrance and of the patch scores back to float32 at its exit; the post-processing head (bilinear resize and
Gaussian of the patch map as two MatMuls, ReduceMax) stays float32. That is the torch runtime's fp16
precision split; the graph's input and its three outputs are float32 either way. Converting the ONNX graph
rather than tracing a ``.half()`` torch module keeps the export fast on CPU, where torch's float16
convolutions are very slow, and folds BatchNorm in float32 before rounding.
A graph may keep an upstream part in float32 (``fp16_float32``: node-name patterns; a Cast to float16 after each
tensor of it that the float16 part reads) and declare its own fp16 parity bound (``fp16_tolerance``, a share of the
map range, instead of :data:`VERIFY_TOLERANCE`'s 0.02): RealNet keeps its backbone float32 and allows 0.25.

After tracing, zero ``Pad`` nodes that feed convolutions (TensorFlow "SAME" padding of EfficientNet-Lite's stride-2
layers) are folded into those convolutions' asymmetric ``pads`` (:mod:`edge_ad.onnx_tools.pad_fold`): the same
outputs, one activation copy fewer per stride-2 layer, and onnxruntime keeps its blocked (NCHWc) layout across them.

Every export is checked before it is written: ``onnx.checker`` (full check, with shape inference), the
TensorRT op check (:mod:`edge_ad.onnx_tools.op_check`), and -- unless ``verify=False`` -- a parity run of
onnxruntime against the fp32 torch graph on a fixed random batch. Any failure raises; nothing is written.
:func:`export_onnx_checked` returns what those checks measured (:class:`ExportResult`; ``edge-ad export`` prints
it); :func:`export_onnx` returns only the path.

Threshold: fp32 keeps the bundle's (onnxruntime matches torch to ~1e-5). fp16 moves the scores (~1e-3 of the map
range), so its metadata carries its own ``threshold`` and ``score_stats``: the bundle's rule applied to the fp16
graph's scores on the images that made the bundle's current threshold (:mod:`edge_ad.thresholds.basis`: the held-out
good images, or those of the latest ``edge-ad threshold`` with its rule), as INT8 does, and the fp32 threshold in
``score_stats["fp32_threshold"]``. Without training images (an imported bundle, data moved) fp16 keeps the bundle's
threshold and :attr:`ExportResult.threshold` says so; images of ``edge-ad threshold`` that are gone are refused.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn

from edge_ad import BUNDLE_FORMAT_VERSION, __version__
from edge_ad.artifacts import INPUT_NAME, REQUIRED_METADATA, artifact_path
from edge_ad.artifacts import OUTPUT_NAMES as RUNTIME_OUTPUTS
from edge_ad.bundle import WEIGHTS_NAME, BundleError, BundleInfo, file_sha256
from edge_ad.export.onnx_trace import ExportError, trace_export
from edge_ad.io import atomic_path
from edge_ad.models.registry import load_model
from edge_ad.onnx_tools.onnx_graph import FLOP_STAGES, descendants, graph_flops
from edge_ad.onnx_tools.op_check import assert_tensorrt_compatible
from edge_ad.onnx_tools.pad_fold import fold_pads_into_convs
from edge_ad.postprocess.image_score import IMAGE_SCORE_KEY, IMAGE_SCORES, SMOOTHING_SIGMA_KEY, HeadDeclaration

if TYPE_CHECKING:
    from edge_ad.thresholds.sets import ThresholdSets

__all__ = [
    "INPUT_NAME",
    "METADATA_KEYS",
    "OUTPUT_NAMES",
    "PRECISIONS",
    "FLOP_STAGES",
    "GRAPH_METADATA_KEYS",
    "IMAGE_SCORES",
    "ExportError",
    "ExportResult",
    "convert_network_to_fp16",
    "export_onnx",
    "export_onnx_checked",
    "graph_flops",
    "graph_metadata",
    "onnx_metadata",
]

PRECISIONS = ("fp32", "fp16")
OUTPUT_NAMES = (*RUNTIME_OUTPUTS, "patch_scores")
# metadata_props every edge-ad ONNX model carries (all values are strings; JSON where structured): what the
# torch-free runtime needs to run it, plus provenance.
METADATA_KEYS = ("edge_ad_version", *REQUIRED_METADATA, "bundle_weights_sha256", "model_config")
# What the family's graph declares for the torch-free stages (see graph_metadata).
GRAPH_METADATA_KEYS = (IMAGE_SCORE_KEY, SMOOTHING_SIGMA_KEY, "int8_layout")
MIN_OPSET, MAX_OPSET = 13, 20  # TensorRT 10.0's ONNX parser reads opsets 9..20
FP16_MAX = 65504.0
# Parity of the exported graph against the fp32 torch graph on the export's check batch, as a fraction of the
# torch anomaly map's value range (max - min). Measured: fp32 ~1e-6, fp16 ~1e-3 on random-backbone models.
VERIFY_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


def verify_tolerance(graph: nn.Module, precision: str) -> float:
    """The parity tolerance of an export: :data:`VERIFY_TOLERANCE`, or for fp16 the graph's own ``fp16_tolerance``
    when it declares one (a graph that amplifies float16 rounding, stated with its measurement where declared)."""
    declared = getattr(graph, "fp16_tolerance", None) if precision == "fp16" else None
    if declared is None:
        return VERIFY_TOLERANCE[precision]
    if isinstance(declared, bool) or not isinstance(declared, (int, float)) or not 0 < declared < 1:
        raise ExportError(f"{type(graph).__name__}.fp16_tolerance must be in (0, 1), got {declared!r}")
    return float(declared)


def onnx_metadata(info: BundleInfo, precision: str) -> dict[str, str]:
    """The ``metadata_props`` for a model exported from bundle ``info`` (see :data:`METADATA_KEYS`).

    A bundle without a verdict threshold (imported without good images) is refused: every runtime requires a finite
    threshold, so an export that carried none could never be loaded.
    """
    if not info.has_threshold:
        raise BundleError(
            f"{info.path} has no verdict threshold (imported without --good-images): re-import it with "
            "`edge-ad import-simplenet ... --good-images DIR` before exporting"
        )
    sha = info.raw.get("files", {}).get(WEIGHTS_NAME) or file_sha256(info.weights_path)
    return {
        "edge_ad_version": __version__,
        "bundle_format_version": str(BUNDLE_FORMAT_VERSION),
        "family": info.family,
        "preprocessing": json.dumps(info.preprocessing.to_dict()),
        "image_size": str(int(info.image_size)),
        "threshold": repr(float(info.threshold)),
        "score_stats": json.dumps(info.score_stats),
        "precision": precision,
        "bundle_weights_sha256": str(sha),
        "model_config": json.dumps(info.model),
    }


def graph_metadata(graph: nn.Module) -> dict[str, str]:
    """The ``metadata_props`` a family's inference graph declares (:data:`GRAPH_METADATA_KEYS`): how its image score
    is made from the map (``max`` or ``mean``: the CUDA post-processing kernel computes the max), the map's
    smoothing sigma, and its INT8 layout (parts and recipes, JSON; read by :mod:`edge_ad.calibration.graph_parts`).
    A graph that declares none of them is refused, so no export leaves calibration or the runtimes guessing."""
    layout = getattr(graph, "int8_layout", None)
    try:
        head = HeadDeclaration.metadata_of_graph(graph)
    except ValueError as exc:
        raise ExportError(f"{exc} to be exported") from None
    if not isinstance(layout, dict):
        raise ExportError(f"{type(graph).__name__} must declare its int8_layout to be exported")
    return {**head, "int8_layout": json.dumps(layout)}


def fp16_float32(graph: nn.Module) -> tuple[str, ...]:
    """The node-name patterns a graph keeps in float32 in its fp16 export (``fp16_float32``; none by default)."""
    patterns = getattr(graph, "fp16_float32", ())
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ExportError(f"{type(graph).__name__}.fp16_float32 must be a tuple of node-name patterns")
    return tuple(patterns)


# Inputs that must stay float32 whatever the data type (ONNX spec: Resize's roi and scales, Upsample's scales).
_KEEP_FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def _float32_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the graph's float32 tensors (inputs, node outputs; element types from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


def convert_network_to_fp16(
    proto: onnx.ModelProto, boundary: str = "patch_scores", keep_float32: Sequence[str] = ()
) -> onnx.ModelProto:
    """FP16 copy of an exported fp32 graph: the network in float16, post-processing and I/O in float32.

    The network is every node ``boundary`` does not depend on (backbone, aggregation, fused discriminator);
    the head is every node that depends on it (resize + Gaussian MatMuls, ReduceMax). Network float32
    weights and constants become float16 (Resize/Upsample scales and roi stay float32, as ONNX requires), a
    Cast to float16 follows the graph input and a Cast back to float32 produces ``boundary``. ``keep_float32``:
    node-name patterns (a graph's ``fp16_float32`` declaration) of network nodes that stay float32 too; they must
    come before the float16 part (each of their float32 outputs that the float16 part reads gets a Cast, as the
    graph input does). Raises :class:`ExportError` for weights outside float16's range.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    head = set(descendants(graph, boundary))
    kept = {
        i for i, node in enumerate(graph.node)
        if i not in head and any(fnmatch.fnmatchcase(node.name, p) for p in keep_float32)
    }  # fmt: skip
    if keep_float32 and not kept:
        raise ExportError(f"fp16 float32 patterns {list(keep_float32)} match no node of the graph")
    network = [i for i in range(len(graph.node)) if i not in head and i not in kept]
    producer = next((i for i in network if boundary in graph.node[i].output), None)
    if producer is None:
        raise ExportError(f"no node produces {boundary!r} in the float16 part; cannot split the graph for fp16")
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    half_outputs = {name for i in network for name in graph.node[i].output}
    if any(name in half_outputs for i in kept for name in graph.node[i].input):
        raise ExportError("nodes kept in float32 for fp16 must come before the float16 part of the graph")

    # Which float32 tensors the network consumes as data (not as Resize scales/roi).
    network_data, keep_float = set(), set()
    for i in network:
        node = graph.node[i]
        exempt = _KEEP_FLOAT32_INPUTS.get(node.op_type, ())
        for slot, name in enumerate(node.input):
            (keep_float if slot in exempt else network_data).add(name)
    head_inputs = {name for i in head | kept for name in graph.node[i].input}

    def to_half(tensor: onnx.TensorProto) -> None:
        values = onnx.numpy_helper.to_array(tensor).astype(np.float32)
        peak = float(np.abs(values).max()) if values.size else 0.0
        if not math.isfinite(peak) or peak > FP16_MAX:
            raise ExportError(
                f"{tensor.name or 'a constant'} holds values up to {peak:g}, beyond float16's range; export fp32"
            )
        tensor.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float16), tensor.name))

    for init in graph.initializer:
        if init.data_type != float32 or init.name not in network_data:
            continue
        if init.name in keep_float or init.name in head_inputs:
            raise ExportError(f"initializer {init.name} is shared by fp16 and fp32 consumers; cannot convert")
        to_half(init)
    for i in network:
        node = graph.node[i]
        if node.op_type == "Constant" and node.output[0] in network_data and node.output[0] not in keep_float:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == float32:
                    to_half(attr.t)
        elif node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == float32 and node.output[0] not in keep_float:
                    attr.i = float16

    # Entrance and exit casts; the graph's own inputs and outputs stay float32.
    initializers = {init.name for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input} - initializers
    kept_outputs = {name for i in kept for name in graph.node[i].output}
    if kept_outputs:
        kept_outputs &= _float32_tensors(proto)
    entrance = {name: f"{name}_fp16" for name in sorted(graph_inputs | kept_outputs)}
    for i in network:
        node = graph.node[i]
        for slot, name in enumerate(node.input):
            if name in entrance and slot not in _KEEP_FLOAT32_INPUTS.get(node.op_type, ()):
                node.input[slot] = entrance[name]
    used = {name for i in network for name in graph.node[i].input}
    cast_in = {name: onnx.helper.make_node("Cast", [name], [half], to=float16) for name, half in entrance.items()}
    cast_in = {name: node for name, node in cast_in.items() if entrance[name] in used}
    half_name = f"{boundary}_fp16"
    exit_node = graph.node[producer]
    exit_node.output[list(exit_node.output).index(boundary)] = half_name
    nodes = [cast_in[name] for name in sorted(graph_inputs) if name in cast_in]  # topological order kept
    for i, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(cast_in[name] for name in node.output if name in cast_in and name not in graph_inputs)
        if i == producer:
            nodes.append(onnx.helper.make_node("Cast", [half_name], [boundary], to=float32))
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    del graph.value_info[:]  # stale element types; shape inference recomputes them
    return model


def _check_interface(proto: onnx.ModelProto, image_size: int, batch_size: int, dynamic_batch: bool) -> None:
    """Input ``images`` and the three outputs, all float32, with the expected shapes."""
    float32 = onnx.TensorProto.FLOAT
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f"exported graph inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(OUTPUT_NAMES):
        raise ExportError(f"exported graph outputs are {outputs}, expected {list(OUTPUT_NAMES)}")
    for value in [*inputs, *proto.graph.output]:
        if value.type.tensor_type.elem_type != float32:
            raise ExportError(f"{value.name} is not float32 in the exported graph")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_param if d.dim_param else d.dim_value for d in dims]
    expected_batch: Any = "batch" if dynamic_batch else batch_size
    if len(shape) != 4 or shape[1:] != [3, image_size, image_size] or (shape[0] != expected_batch):
        raise ExportError(f"exported input shape {shape} != [{expected_batch}, 3, {image_size}, {image_size}]")


def _verify(
    proto: onnx.ModelProto,
    example: np.ndarray,
    reference: tuple[np.ndarray, ...],
    precision: str,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Run the export in onnxruntime (CPU) and compare with the fp32 torch graph; returns the figures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: example})
    ref_score, ref_map = reference[0], reference[1]
    for name, value, ref in zip(OUTPUT_NAMES, got, reference, strict=True):
        if value.shape != ref.shape:
            raise ExportError(f"onnxruntime {name} has shape {value.shape}, torch {ref.shape}")
        if not np.isfinite(value).all():
            raise ExportError(f"onnxruntime {name} is not finite ({precision}); the model does not fit {precision}")
    scale = max(float(np.ptp(ref_map)), 1e-6)
    share = VERIFY_TOLERANCE[precision] if tolerance is None else tolerance
    tol = share * scale
    err_map = float(np.abs(got[1] - ref_map).max())
    err_score = float(np.abs(got[0] - ref_score).max())
    if err_map > tol or err_score > tol:
        raise ExportError(
            f"exported {precision} graph disagrees with torch: max |map diff| {err_map:.3g}, "
            f"max |score diff| {err_score:.3g}, allowed {tol:.3g} ({share:g} x map range)"
        )
    return {
        "reference": "fp32 torch graph",
        "images": int(example.shape[0]),
        "max_abs_score_diff": err_score,
        "max_abs_map_diff": err_map,
        "allowed": tol,
        "map_range": scale,
    }


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what its checks measured (``edge-ad export`` prints it)."""

    path: Path
    precision: str
    op_check: dict[str, Any]  # {"passed": True, "op_types": N}: every op in TensorRT 10's ONNX parser
    parity: dict[str, Any] | None  # _verify's figures; None with verify=False
    threshold: dict[str, Any] = field(default_factory=dict)  # {"value", "bundle", "source"}

    def summary(self) -> list[str]:
        """Lines for people: the checks, the parity figures and the threshold."""
        ops = self.op_check
        lines = [f"checks: onnx.checker passed; TensorRT op check passed ({ops['op_types']} op types)"]
        if ops.get("pads_folded"):
            lines.append(f"graph: {ops['pads_folded']} Pad node(s) folded into their convolutions' pads")
        if self.parity is None:
            lines.append("parity: not run (verify=False)")
        else:
            par = self.parity
            lines.append(
                f"parity vs {par['reference']} ({par['images']} random image(s)): max |score diff| "
                f"{par['max_abs_score_diff']:.3g}, max |map diff| {par['max_abs_map_diff']:.3g} "
                f"(allowed {par['allowed']:.3g})"
            )
        th = self.threshold
        if th:
            lines.append(f"threshold: {th['value']:.6g} ({th['source']}; bundle {th['bundle']:.6g})")
        return lines


def _threshold_sets(info: BundleInfo) -> tuple[ThresholdSets | None, str]:
    """The images and rule behind the bundle's current threshold (:func:`edge_ad.thresholds.basis.threshold_basis`:
    the held-out good images, or those of the latest ``edge-ad threshold``), read before tracing; or ``(None, why
    not)`` when the bundle records none (imported) or its training images cannot be read. Images of ``edge-ad
    threshold`` that are gone raise :class:`BundleError` (one line): the old basis would undo the re-threshold."""
    from edge_ad.thresholds.basis import ThresholdImagesGone
    from edge_ad.thresholds.sets import bundle_threshold_sets

    try:
        sets = bundle_threshold_sets(info, info.preprocessing)
    except ThresholdImagesGone as exc:
        raise BundleError(f"cannot derive an export's own threshold: {exc}") from None
    except ValueError as exc:
        return None, f"its held-out good images cannot be read ({exc})"
    if sets is None:
        return None, "the bundle records no held-out good images to re-derive it from"
    return sets, ""


def _own_threshold(
    proto: onnx.ModelProto, info: BundleInfo, precision: str, sets: ThresholdSets
) -> dict[str, Any]:
    """The bundle's threshold rule applied to this graph's own scores on ``sets`` (:func:`_threshold_sets`)."""
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime
    from edge_ad.thresholds.sets import basis_statistics, run_model

    with tempfile.TemporaryDirectory(prefix="edge-ad-export-") as tmp:
        path = artifact_path(tmp, precision)
        path.write_bytes(proto.SerializeToString())
        outs = run_model(OnnxRuntime(path), sets.sets, f"threshold {precision}", sets.basis.sigmas or 0.0)
    try:
        stats = basis_statistics(sets, outs[0], outs[1] if len(outs) > 1 else None)
    except ValueError as exc:  # a user's choice (the rule) to revisit: one line, not a traceback
        raise BundleError(f"{precision} export: {exc}") from None
    source = f"{sets.basis.summary()}, scored by this {precision} ONNX model"
    return {**stats, "threshold_source": source, "fp32_threshold": float(info.threshold)}


def export_onnx(
    bundle_dir: str | os.PathLike[str], out_path: str | os.PathLike[str] | None = None, **options: Any
) -> Path:
    """Export a bundle's fused inference graph to ONNX; returns the written path. ``options`` are
    :func:`export_onnx_checked`'s (precision, batch_size, dynamic_batch, opset, verify)."""
    return export_onnx_checked(bundle_dir, out_path, **options).path


def export_onnx_checked(
    bundle_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    precision: str = "fp32",
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = 17,
    verify: bool = True,
) -> ExportResult:
    """Export a bundle's fused inference graph to ONNX; returns the path and what the checks measured.

    ``out_path`` defaults to ``BUNDLE/model.<precision>.onnx``; it is written atomically. The input shape is
    static ``[batch_size, 3, S, S]`` unless ``dynamic_batch`` (then the batch axis is named ``batch`` and
    ``batch_size`` is only the tracing batch). ``verify`` runs the result in onnxruntime (CPU) against the
    fp32 torch graph on a fixed random batch (see :data:`VERIFY_TOLERANCE`) before anything is written.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r} (INT8 lives in calibration/)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (TensorRT 10's ONNX parser), got {opset}")

    model, info = load_model(bundle_dir)
    sets, why = _threshold_sets(info) if precision == "fp16" else (None, "")
    out = Path(out_path) if out_path is not None else artifact_path(info.path, precision)
    size = int(model.image_size)
    graph = model.eval().inference_graph()

    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size, 3, size, size, generator=generator)
    reference = None
    if verify:
        with torch.no_grad():
            reference = tuple(t.numpy() for t in graph(example))

    proto = trace_export(graph, example, int(opset), dynamic_batch, OUTPUT_NAMES)
    proto, pads_folded = fold_pads_into_convs(proto)  # TF "SAME" Pad nodes into their convolutions' pads
    if precision == "fp16":
        proto = convert_network_to_fp16(proto, keep_float32=fp16_float32(graph))

    metadata = {**onnx_metadata(info, precision), **graph_metadata(graph)}
    onnx.helper.set_model_props(proto, metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
    assert_tensorrt_compatible(proto)
    op_check = {"passed": True, "op_types": len({n.op_type for n in proto.graph.node}), "pads_folded": pads_folded}
    _check_interface(proto, size, batch_size, dynamic_batch)
    tolerance = verify_tolerance(graph, precision)
    parity = _verify(proto, example.numpy(), reference, precision, tolerance) if reference is not None else None

    threshold = {"value": float(info.threshold), "bundle": float(info.threshold), "source": "the bundle's"}
    if precision == "fp16":
        if sets is None:
            threshold["source"] = f"the bundle's (fp32): {why}"
        else:
            stats = _own_threshold(proto, info, precision, sets)
            value = float(stats["image"]["threshold"])
            if not math.isfinite(value):
                raise ExportError(f"the fp16 graph's threshold from its good-image scores is {value}")
            metadata.update(threshold=repr(value), score_stats=json.dumps(stats))
            onnx.helper.set_model_props(proto, metadata)
            threshold.update(value=value, source=stats["threshold_source"])

    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return ExportResult(out, precision, op_check, parity, threshold)
