"""The Q/DQ writer: an INT8 ONNX graph from an fp32 export and its calibration ranges, checked. Torch-free.

The result, ``model.int8.onnx``, is an ordinary ONNX graph with ``QuantizeLinear``/``DequantizeLinear``
pairs ("QDQ" format) that TensorRT builds as a strongly typed INT8 network and onnxruntime runs on any
execution provider. Its metadata is the fp32 model's with ``precision = "int8"`` and ``int8_recipe`` (JSON:
method, target, recipe and the parts kept in float, image count, a hash of the calibration image names, the
Q/DQ settings and, when chosen by measurement, the measurement behind the choice). Which parts a recipe keeps in
float is the graph's own declaration (:mod:`.graph_parts`); how the ranges are found is :mod:`.ranges`.

Q/DQ placement for ``target="tensorrt"`` (the default; TensorRT's placement rules as NVIDIA's own ONNX
quantizer, TensorRT Model Optimizer, applies them on top of onnxruntime's quantizer; the onnxruntime option
names are in brackets):

* **Symmetric INT8 everywhere** [QInt8, ``ActivationSymmetric=True``, ``WeightSymmetric=True``]: TensorRT
  implements only zero-point-0 quantization. onnxruntime maps symmetric int8 to [-127, 127].
* **Weights per output channel** [``per_channel=True``, ``QDQOpTypePerChannelSupportToAxis={"Conv": 0}``]:
  axis 0 of the Conv weight, the axis TensorRT supports (a ConvTranspose weight, ``[C_in, C_out, k, k]`` as
  in NSA's decoder, gets onnxruntime's axis 1, its output channels; tests/test_nsa_export.py holds it there).
  Weights are stored as int8 initializers feeding a DequantizeLinear (TensorRT 10 takes "pre-quantized weights"
  that way), 4x smaller than fp32 [``AddQDQPairToWeight=False``].
* **Biases stay float** [``QuantizeBias=False``]: an int32 bias behind a DequantizeLinear is rejected by
  TensorRT's ONNX parser ("only activation types allowed as input to this layer", onnx-tensorrt issue 850);
  TensorRT folds a float bias into its INT8 kernels itself.
* **Quantize the inputs of weighted layers, not their outputs** [op types Conv/ConvTranspose/Gemm/MatMul and
  MaxPool/AveragePool; ``OpTypesToExcludeOutputQuantization`` = all of them]: TensorRT fuses Conv + bias +
  ReLU (+ residual Add) and rounds at the next layer's input; a Q/DQ pair between a Conv and its ReLU would
  split that fusion. ReLU, LeakyReLU, Add, Resize, Concat and shape plumbing are not quantized themselves.
  MaxPool's input is: TensorRT then pools in INT8, and max-pooling commutes with the rounding
  [``ForceQuantizeNoInputCheck=True``: onnxruntime otherwise skips a MaxPool whose input is not yet int8].
* **Shared Q/DQ pairs** [``DedicatedQDQPair=False``]: one pair per tensor, read by every consumer. In a
  ResNet identity block the residual branch of the ``Add`` then reads the same int8-rounded tensor as the next
  convolutions: TensorRT's "quantize the residual input" rule, which lets the Add fuse into the preceding
  convolution, while the convolution branch of the Add stays unrounded. (Dedicated pairs were a TensorRT 7 /
  8.0 requirement; newer TensorRT and TensorRT Model Optimizer use shared ones.) A consequence: a layer kept
  in float may read an int8-rounded input when another consumer of that tensor is quantized.
* **ReLUs are never removed** [``QDQKeepRemovableActivations=True``]: onnxruntime may drop a ReLU that a Q/DQ
  pair makes redundant, which is only exact for asymmetric (uint8) ranges starting at 0; TensorRT fuses
  ReLUs anyway.
* **The post-processing head stays float, always**: every node that depends on ``patch_scores`` (SimpleNet:
  the bilinear resize and 33-tap Gaussian of the patch map, two MatMuls, and the ReduceMax; NSA: the mean
  and the optional smoothing) is excluded by every recipe, and the result is checked: no Q/DQ output feeds the
  head and ``patch_scores`` is not rounded.

``target="cpu"`` is for onnxruntime's CPU kernels, which only run a convolution in INT8 when it is wrapped as
``DQ -> Conv -> Q``: activations uint8 asymmetric (ranges [min, max] clipped to the calibration threshold),
Conv/Add/ReLU/pooling inputs and outputs quantized (ReLUs folded into the ranges; the layer producing
``patch_scores`` keeps a float output), int32 biases. It is
2-3x faster than fp32 on x86 CPUs, but uint8 zero points and int32 biases make it unusable for TensorRT: its
``int8_recipe`` says ``"target": "cpu"`` and its default file name is ``model.int8.cpu.onnx``. The
TensorRT placement is correct on onnxruntime CPU too, only not faster than fp32 there (measured:
``benchmarks/bench_int8_cpu.py``).

The ranges (:meth:`.ranges.Calibration.ranges`) reach onnxruntime's quantizer as ``TensorQuantOverrides``
(``rmin``/``rmax`` per tensor); onnxruntime's own calibration then runs on one batch only, because its API
requires a reader.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edge_ad.artifacts import ArtifactCheckError
from edge_ad.io import atomic_path
from edge_ad.onnx_tools.op_check import assert_tensorrt_compatible

from .calibration_data import DEFAULT_COUNT, CalibrationReader, CalibSource
from .graph_parts import (
    OP_TYPES,
    PATCH_SCORES,
    check_choice,
    head_nodes,
    int8_mac_fraction,
    quantized_nodes,
    resolve_exclude,
)
from .ranges import DEFAULT_METHOD, METHODS, PERCENTILE, TARGETS, Calibration, prepare_calibration, quiet

__all__ = [
    "INT8_CPU_NAME",
    "INT8_NAME",
    "QuantizationError",
    "check_head_float",
    "int8_name",
    "quantize_int8",
    "quantize_model",
    "set_int8_metadata",
    "write_model",
]

INT8_NAME = "model.int8.onnx"
INT8_CPU_NAME = "model.int8.cpu.onnx"


class QuantizationError(ArtifactCheckError):
    """The quantized graph failed a check (checker, TensorRT ops, float head)."""


def int8_name(target: str) -> str:
    """The default file name of an INT8 model for a target (beside the fp32 model)."""
    return INT8_NAME if target == "tensorrt" else INT8_CPU_NAME


class _OneBatch:
    """The minimal CalibrationDataReader onnxruntime's API insists on (its ranges are overridden anyway)."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self.feed, self.done = feed, False

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.done:
            return None
        self.done = True
        return self.feed

    def rewind(self) -> None:
        self.done = False


def _extra_options(target: str, ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The onnxruntime ``extra_options`` of each target (see the module docstring)."""
    overrides = {name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name, (lo, hi) in ranges.items()}
    common = {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"Conv": 0}}
    if target == "tensorrt":
        return {
            **common,
            "ActivationSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": False,
            "DedicatedQDQPair": False,
            "QDQKeepRemovableActivations": True,
            "ForceQuantizeNoInputCheck": True,
            "OpTypesToExcludeOutputQuantization": list(OP_TYPES["tensorrt"]),
            "TensorQuantOverrides": overrides,
        }
    return {**common, "ActivationSymmetric": False, "TensorQuantOverrides": overrides}


def check_head_float(model: onnx.ModelProto) -> None:
    """No Q/DQ output may feed the post-processing head, and ``patch_scores`` itself must not be rounded."""
    head = head_nodes(model.graph)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    qdq_outputs = {out for node in model.graph.node if node.op_type in qdq for out in node.output}
    rounded = sorted(node.name for node in model.graph.node if node.name in head and set(node.input) & qdq_outputs)
    if PATCH_SCORES in qdq_outputs:
        rounded.insert(0, PATCH_SCORES)
    if rounded:
        raise QuantizationError(f"the post-processing head must stay float, but INT8 reaches {rounded}")


def quantize_model(
    calibration: Calibration, method: str, exclude: str | Sequence[str] | None, target: str, per_channel: bool = True
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """One Q/DQ model from the collected statistics, checked (checker, TensorRT ops, float head), not written.

    Returns the model (metadata: the fp32 model's with ``precision`` and ``int8_recipe``) and its recipe dict.
    """
    check_choice("calibration method", method, METHODS)
    check_choice("INT8 target", target, TARGETS)
    exclusion = resolve_exclude(calibration.prepared, exclude, calibration.layout)
    float_nodes = set(exclusion.nodes)
    if target == "cpu":  # the CPU placement rounds layer outputs: the layer producing the patch scores stays float
        float_nodes |= {n.name for n in calibration.prepared.graph.node if PATCH_SCORES in n.output}

    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-") as tmp:
        raw = Path(tmp) / "quantized.onnx"
        with quiet():
            quantize_static(
                str(calibration.prepared_path),
                str(raw),
                _OneBatch(calibration.first_batch),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(OP_TYPES[target]),
                per_channel=per_channel,
                reduce_range=False,
                activation_type=QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=sorted(float_nodes),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=_extra_options(target, calibration.ranges(method, target)),
            )
        model = onnx.load(str(raw))

    reader = calibration.reader_info
    recipe: dict[str, Any] = {
        "method": method,
        "target": target,
        "recipe": exclusion.recipe,
        "excluded_parts": list(exclusion.parts),
        "excluded_patterns": list(exclusion.patterns),
        "count": reader["count"],
        "calibration_images_sha256": reader["images_sha256"],
        "calibration_folder": reader["folder"],
        "seed": reader["seed"],
        "percentile": PERCENTILE if method == "percentile" else None,
        "format": "QDQ",
        "activations": "int8 symmetric per-tensor" if target == "tensorrt" else "uint8 asymmetric per-tensor",
        "weights": f"int8 symmetric {'per-channel (axis 0)' if per_channel else 'per-tensor'}",
        "bias": "float" if target == "tensorrt" else "int32",
        "int8_mac_fraction": round(int8_mac_fraction(model, calibration.macs), 4),
        "onnxruntime": ort.__version__,
    }
    set_int8_metadata(model, calibration, recipe)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the INT8 graph fails onnx.checker: {exc}") from exc
    assert_tensorrt_compatible(model)
    if not quantized_nodes(model):
        raise QuantizationError("quantization left every layer in float (nothing was quantized)")
    check_head_float(model)
    return model, recipe


def set_int8_metadata(
    model: onnx.ModelProto,
    calibration: Calibration,
    recipe: dict[str, Any],
    score_stats: dict[str, Any] | None = None,
) -> None:
    """The fp32 model's metadata with ``precision``, ``int8_recipe`` and -- given this model's own good-image
    statistics -- its own ``threshold`` and ``score_stats`` in place of the fp32 ones."""
    metadata = {**calibration.metadata, "precision": "int8"}
    if score_stats is not None:
        threshold = float(score_stats["image"]["threshold"])
        if not math.isfinite(threshold):
            raise QuantizationError(f"the INT8 model's threshold from its good-image scores is {threshold}")
        metadata["threshold"] = repr(threshold)
        metadata["score_stats"] = json.dumps(score_stats)
        recipe["threshold"] = {
            "int8": threshold,
            "fp32": float(calibration.metadata["threshold"]),
            "source": score_stats.get("threshold_source", "?"),
        }
    else:
        recipe["threshold"] = {
            "int8": float(calibration.metadata["threshold"]),
            "fp32": float(calibration.metadata["threshold"]),
            "source": "the fp32 model's, not re-derived (calibrate derives the INT8 model's own)",
        }
    metadata["int8_recipe"] = json.dumps(recipe)
    onnx.helper.set_model_props(model, metadata)


def write_model(model: onnx.ModelProto, out: Path) -> Path:
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(model.SerializeToString())
    return out


def quantize_int8(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    method: str = DEFAULT_METHOD,
    count: int = DEFAULT_COUNT,
    exclude: str | Sequence[str] | None = None,
    per_channel: bool = True,
    target: str = "tensorrt",
    seed: int = 0,
    selection: dict[str, Any] | None = None,
    score_stats: dict[str, Any] | None = None,
) -> Path:
    """Quantize an exported fp32 model to a Q/DQ INT8 model; returns the path written.

    ``calib_source``: None (the bundle's training images), a folder of good images, a list of files, a
    :class:`CalibrationReader`, or a :class:`Calibration` from :func:`prepare_calibration` (reused as it is;
    ``count`` and ``seed`` are then ignored). ``method``: one of :data:`METHODS`. ``exclude``: a recipe name
    of the graph's declared layout (None: its default; :mod:`.graph_parts`) or a list of node-name patterns
    kept in float; the head stays float regardless.
    ``target``: "tensorrt" (default) or "cpu" (see the module docstring). ``selection``: how the recipe was
    chosen, recorded in the ``int8_recipe`` metadata. ``score_stats``: this INT8 model's own good-image
    statistics (:func:`~edge_ad.thresholds.rules.good_statistics`); its threshold then replaces the fp32 one
    (without it the fp32 threshold is kept and ``int8_recipe`` says so: :func:`~.report.calibrate` derives it).
    ``out_path`` defaults to ``model.int8.onnx`` (``model.int8.cpu.onnx`` for the CPU target) beside the
    fp32 model; it is written atomically, after ``onnx.checker`` (full), the TensorRT op check and the
    float-head check passed.
    """
    check_choice("calibration method", method, METHODS)
    check_choice("INT8 target", target, TARGETS)
    fp32_path = Path(fp32_onnx)
    if not isinstance(calib_source, Calibration):
        calibration = prepare_calibration(fp32_path, calib_source, count=count, seed=seed)
        try:
            return quantize_int8(
                fp32_path,
                calibration,
                out_path,
                method=method,
                exclude=exclude,
                per_channel=per_channel,
                target=target,
                selection=selection,
                score_stats=score_stats,
            )
        finally:
            calibration.cleanup()
    calibration = calib_source
    if calibration.fp32_path.resolve() != fp32_path.resolve():
        raise ValueError(f"the calibration was prepared for {calibration.fp32_path}, not {fp32_path}")
    out = Path(out_path) if out_path is not None else fp32_path.parent / int8_name(target)
    model, recipe = quantize_model(calibration, method, exclude, target, per_channel)
    if selection is not None:
        recipe["selection"] = selection
    if selection is not None or score_stats is not None:
        set_int8_metadata(model, calibration, recipe, score_stats)
    return write_model(model, out)
