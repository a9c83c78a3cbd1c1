"""Explicit INT8 quantization of an exported fp32 graph: Q/DQ nodes from good-image calibration. Torch-free.

The result, ``model.int8.onnx``, is an ordinary ONNX graph with ``QuantizeLinear``/``DequantizeLinear``
pairs ("QDQ" format) that TensorRT builds as a strongly typed INT8 network and onnxruntime runs on any
execution provider. Its metadata is the fp32 model's with ``precision = "int8"`` and ``int8_recipe`` (JSON:
method, target, recipe and the parts kept in float, image count, a hash of the calibration image names, the
Q/DQ settings and, when chosen by :func:`measure_recipes`, the measurement behind the choice).

Q/DQ placement for ``target="tensorrt"`` (the default; TensorRT's placement rules as NVIDIA's own ONNX
quantizer, TensorRT Model Optimizer, applies them on top of onnxruntime's quantizer; the onnxruntime option
names are in brackets):

* **Symmetric INT8 everywhere** [QInt8, ``ActivationSymmetric=True``, ``WeightSymmetric=True``]: TensorRT
  implements only zero-point-0 quantization. onnxruntime maps symmetric int8 to [-127, 127].
* **Weights per output channel** [``per_channel=True``, ``QDQOpTypePerChannelSupportToAxis={"Conv": 0}``]:
  axis 0 of the Conv weight, the axis TensorRT supports. Weights are stored as int8 initializers feeding a
  DequantizeLinear (TensorRT 10 takes "pre-quantized weights" that way), 4x smaller than fp32
  [``AddQDQPairToWeight=False``].
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
* **The post-processing head stays float, always**: the bilinear resize of the patch map, the two 33-tap
  Gaussian convolutions and the ReduceMax (every node that depends on ``patch_scores``) are excluded by every
  recipe, and the result is checked: no Q/DQ output feeds the head and ``patch_scores`` is not rounded.

``target="cpu"`` is for onnxruntime's CPU kernels, which only run a convolution in INT8 when it is wrapped as
``DQ -> Conv -> Q``: activations uint8 asymmetric (ranges [min, max] clipped to the calibration threshold),
Conv/Add/ReLU/pooling inputs and outputs quantized (ReLUs folded into the ranges; the layer producing
``patch_scores`` keeps a float output), int32 biases. It is
2-3x faster than fp32 on x86 CPUs, but uint8 zero points and int32 biases make it unusable for TensorRT: its
``int8_recipe`` says ``"target": "cpu"`` and its default file name is ``model.int8.cpu.onnx``. The
TensorRT placement is correct on onnxruntime CPU too, only not faster than fp32 there (measured:
``benchmarks/bench_int8_cpu.py``).

Before quantizing, ``onnxruntime.quantization.shape_inference.quant_pre_process`` folds the exporter's
``Constant`` nodes into initializers (so the patch aggregator's fixed weights are quantized per channel as
weights rather than calibrated as activations) and removes the Shape/Slice/Concat plumbing; compute nodes
keep their names and the numbers do not change.

Calibration ranges are computed here, not by onnxruntime's calibrators: one pass over the calibration images
records each tensor's min, max and absolute maximum, a second a 2048-bin histogram of ``|x|`` over
``[0, absmax]``; every method reads the same histograms, so comparing methods costs one calibration run.
Reason (measured on the exported model): onnxruntime's ``Entropy`` calibrator with its defaults (128 histogram
bins, 128 quantized bins) has a single candidate threshold and returns exactly the min/max scales.

* ``minmax``: the absolute maximum (TensorRT Model Optimizer's "max" calibration);
* ``percentile``: the :data:`PERCENTILE` percentile of ``|x|`` (onnxruntime's default, 99.999);
* ``entropy``: TensorRT's KL-divergence calibration (:func:`_entropy_threshold`).

The ranges reach onnxruntime's quantizer as ``TensorQuantOverrides`` (``rmin``/``rmax`` per tensor);
onnxruntime's own calibration then runs on one batch only, because its API requires a reader.

Mixed precision: the graph's parts are named by node-name patterns of the exported graph (:data:`PARTS`);
a recipe (:data:`RECIPES`) lists the parts kept in float. :func:`measure_recipes` quantizes every
(method, recipe) pair, evaluates image/pixel AUROC and AUPRO of each against the fp32 model on a labelled
evaluation set and chooses by measurement (see :func:`choose_candidate`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from edge_ad.bundle import CONFIG_NAME, read_bundle
from edge_ad.data.layout import Sample, test_samples
from edge_ad.evaluate import Scored, metrics_by_defect, score_samples
from edge_ad.export.op_check import assert_tensorrt_compatible
from edge_ad.io import atomic_path
from edge_ad.runtimes.onnx_runtime import OnnxRuntime

from .calibration_data import DEFAULT_COUNT, CalibrationReader, CalibSource, model_info

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_RECIPE",
    "DEFAULT_TOLERANCE",
    "INT8_NAME",
    "METHODS",
    "PARTS",
    "PERCENTILE",
    "RECIPES",
    "TARGETS",
    "Calibration",
    "Exclusion",
    "QuantizationError",
    "choose_candidate",
    "evaluation_samples",
    "graph_parts",
    "int8_mac_fraction",
    "measure_recipes",
    "prepare_calibration",
    "quantize_int8",
    "quantized_nodes",
    "resolve_exclude",
    "score_deviation",
    "unquantized_layers",
]

METHODS = ("entropy", "percentile", "minmax")
TARGETS = ("tensorrt", "cpu")
DEFAULT_METHOD = "percentile"  # measured best on both demo models (see calibrate reports)
INT8_NAME = "model.int8.onnx"
INT8_CPU_NAME = "model.int8.cpu.onnx"
PATCH_SCORES = "patch_scores"
NUM_BINS = 2048
ENTROPY_LEVELS = 128  # quantized levels of |x| in [0, threshold]: the positive half of symmetric int8
PERCENTILE = 99.999
DEFAULT_TOLERANCE = 0.01  # AUROC points / 100: the accepted INT8 loss of image and of pixel AUROC
SAME_SPEED = 0.01  # recipes whose INT8 share of the MACs differs by less than this count as equally fast
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
POOLING_OPS = ("MaxPool", "AveragePool")
OP_TYPES = {
    "tensorrt": WEIGHTED_OPS + POOLING_OPS,
    "cpu": WEIGHTED_OPS + POOLING_OPS + ("Add", "Relu"),
}

# Parts of the exported SimpleNet graph, by node-name patterns (fnmatch, case-sensitive). The head is also
# found structurally: every node that depends on ``patch_scores``.
PARTS: dict[str, tuple[str, ...]] = {
    "head": ("/head/*",),  # resize of the patch map, 33-tap Gaussian convolutions, ReduceMax
    "score": ("/out/*", "/Sub", "/Abs", "/Neg"),  # the discriminator's last 1x1 conv (1024 -> 1) and the score
    "discriminator": ("/parts.*", "/Add", "/Resize", "/act/*"),  # fused adapter + first discriminator layer
    "aggregator": ("/Conv", "/Conv_1"),  # the fixed grouped convolutions of the patch aggregator
    "backbone": ("/backbone/*",),  # WideResNet50 stem, layer1..layer3
}
# Recipes: the parts kept in float, from most to least quantized.
RECIPES: dict[str, tuple[str, ...]] = {
    "all": ("head",),
    "keep_head_fp": ("head", "score"),
    "keep_discriminator_fp": ("head", "score", "discriminator"),
    "backbone_only": ("head", "score", "discriminator", "aggregator"),
}
DEFAULT_RECIPE = "keep_head_fp"


class QuantizationError(RuntimeError):
    """The quantized graph failed a check (checker, TensorRT ops, float head)."""


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


# ----------------------------------------------------------------------------- graph parts
def _descendants(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """Names of the nodes that depend (transitively) on ``tensor``; the graph is topologically sorted."""
    reached, found = {tensor}, set()
    for node in graph.node:
        if any(name in reached for name in node.input):
            found.add(node.name)
            reached.update(node.output)
    return found


def graph_parts(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> part (a key of :data:`PARTS`, or ``"other"``) for every node of the graph."""
    head = _descendants(model.graph, PATCH_SCORES)
    parts: dict[str, str] = {}
    for node in model.graph.node:
        if node.name in head:
            parts[node.name] = "head"
            continue
        parts[node.name] = next(
            (part for part, patterns in PARTS.items() if any(fnmatch.fnmatchcase(node.name, p) for p in patterns)),
            "other",
        )
    return parts


@dataclass(frozen=True)
class Exclusion:
    """What a recipe keeps in float: its label, the parts, the extra patterns and the resolved node names."""

    recipe: str
    parts: tuple[str, ...]
    patterns: tuple[str, ...]
    nodes: frozenset[str]


def resolve_exclude(model: onnx.ModelProto, exclude: str | Sequence[str] = DEFAULT_RECIPE) -> Exclusion:
    """The nodes that a recipe name (:data:`RECIPES`) or a list of node-name patterns keeps in float.

    The head (everything that depends on ``patch_scores``) is always excluded. A recipe part or a pattern
    that matches no node raises ValueError (the graph does not look like an edge-ad SimpleNet export).
    """
    parts_of = graph_parts(model)
    if isinstance(exclude, str):
        _check_choice("INT8 recipe", exclude, tuple(RECIPES))
        parts = RECIPES[exclude]
        present = set(parts_of.values())
        for part in parts:
            if part not in present:
                patterns = ", ".join(PARTS[part])
                raise ValueError(f"recipe {exclude!r}: no node of part {part!r} ({patterns}) in the graph")
        nodes = {name for name, part in parts_of.items() if part in parts}
        return Exclusion(exclude, parts, (), frozenset(nodes))
    patterns = tuple(str(p) for p in exclude)
    nodes = {name for name, part in parts_of.items() if part == "head"}
    for pattern in patterns:
        matched = {name for name in parts_of if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            raise ValueError(f"exclude pattern {pattern!r} matches no node of the graph")
        nodes |= matched
    return Exclusion("custom", ("head",), patterns, frozenset(nodes))


def quantized_nodes(model: onnx.ModelProto) -> set[str]:
    """Layers that compute in INT8: weighted ops whose weight comes from a DequantizeLinear, pooling ops whose
    input does. (A float layer reading an int8-rounded input through a shared Q/DQ pair is not counted.)"""
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    found = set()
    for node in model.graph.node:
        slot = 1 if node.op_type in WEIGHTED_OPS else 0
        if node.op_type in WEIGHTED_OPS + POOLING_OPS and len(node.input) > slot and node.input[slot] in dq_outputs:
            found.add(node.name)
    return found


def unquantized_layers(int8_model: onnx.ModelProto) -> dict[str, list[str]]:
    """Weighted and pooling layers left in float, by part (for the report)."""
    quantized = quantized_nodes(int8_model)
    parts = graph_parts(int8_model)
    left: dict[str, list[str]] = {}
    for node in int8_model.graph.node:
        if node.op_type in WEIGHTED_OPS + POOLING_OPS and node.name not in quantized:
            left.setdefault(parts.get(node.name, "other"), []).append(node.name)
    return left


def _macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per image of every Conv/Gemm/MatMul (shapes from the model's value_info)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else 1 for d in dims])
    macs: dict[str, int] = {}
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or node.op_type not in WEIGHTED_OPS:
            continue
        weight = shapes.get(node.input[1])
        if not weight:
            continue
        batch = max(out[0], 1)
        if node.op_type in ("Conv", "ConvTranspose"):
            macs[node.name] = math.prod(out) * math.prod(weight[1:]) // batch
        else:
            macs[node.name] = math.prod(out) * weight[0] // batch
    return macs


def int8_mac_fraction(int8_model: onnx.ModelProto, macs: dict[str, int]) -> float:
    """Share of the graph's weighted-layer MACs that run in INT8 (a proxy for the speed-up a recipe allows)."""
    total = sum(macs.values())
    quantized = quantized_nodes(int8_model)
    return float(sum(v for k, v in macs.items() if k in quantized) / total) if total else 0.0


# ----------------------------------------------------------------------------- calibration statistics
def _entropy_threshold(hist: np.ndarray, levels: int = ENTROPY_LEVELS) -> int:
    """TensorRT's KL-divergence calibration on a histogram of ``|x|``: how many bins to keep.

    As NVIDIA's pytorch-quantization computes it: the zero bin's count is replaced by its neighbour's (ReLU
    outputs put a spike of exact zeros there that would otherwise dominate the divergence); for each
    candidate ``i`` (``levels`` .. number of bins) the reference P is ``hist[:i]`` with the clipped outliers
    added to its last bin, and Q quantizes ``hist[:i]`` into ``levels`` equal groups, spreading each group's
    count evenly over its non-empty bins. The largest ``i`` with the smallest KL(P || Q) wins (Q empty where
    P is not: infinite divergence). Candidates are scanned every 8 bins, then every bin around the best.
    """
    n = hist.size
    counts = hist.astype(np.float64)
    if n > 1:
        counts[0] = counts[1]
    if counts.sum() <= 0 or n <= levels:
        return n
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = sum(counts[i:])

    def divergence(i: int) -> float:
        sliced = counts[:i]
        p = sliced.copy()
        p[-1] += tail[i]
        group = (np.arange(i) * levels) // i
        nonzero = sliced > 0
        group_sum = np.bincount(group, weights=sliced, minlength=levels)
        group_nonzero = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, group_sum[group] / np.maximum(group_nonzero[group], 1), 0.0)
        p_total, q_total = p.sum(), q.sum()
        mask = p > 0
        if p_total <= 0 or q_total <= 0 or np.any(q[mask] == 0):
            return float("inf")
        p, q = p[mask] / p_total, q[mask] / q_total
        return float(np.sum(p * np.log(p / q)))

    def best(candidates: range) -> int:
        return -min((divergence(i), -i) for i in candidates)[1]

    coarse = best(range(levels, n + 1, 8))
    return best(range(max(levels, coarse - 7), min(n, coarse + 7) + 1))


@dataclass
class _TensorStats:
    minimum: float
    maximum: float
    absmax: float
    hist: np.ndarray  # NUM_BINS counts of |x| over [0, absmax]

    def threshold(self, method: str) -> float:
        """Symmetric clipping threshold t (the tensor is quantized over [-t, t])."""
        if self.absmax <= 0:
            return 0.0
        width = self.absmax / NUM_BINS
        if method == "minmax":
            return self.absmax
        if method == "percentile":
            cdf = np.cumsum(self.hist) / max(int(self.hist.sum()), 1)
            index = int(np.searchsorted(cdf, PERCENTILE / 100.0))
            return float(min(self.absmax, (index + 1) * width))
        return float(min(self.absmax, _entropy_threshold(self.hist) * width))


def _calibrated_tensors(model: onnx.ModelProto) -> list[str]:
    """The activation tensors either target may place Q/DQ on: non-constant inputs and outputs of the
    quantizable op types."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    op_types = set(OP_TYPES["tensorrt"]) | set(OP_TYPES["cpu"])
    names: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            for name in [*node.input, *node.output]:
                if name and name not in constants:
                    names[name] = None
    return list(names)


def _collect(model: onnx.ModelProto, reader: CalibrationReader, tensors: list[str]) -> dict[str, _TensorStats]:
    """Run the calibration images through the model twice: extremes, then histograms of ``|x|``."""
    graph_inputs = {i.name for i in model.graph.input}
    outputs = [name for name in tensors if name not in graph_inputs]
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs if name not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del augmented

    def batches() -> Iterator[dict[str, np.ndarray]]:
        reader.rewind()
        for feed in iter(reader.get_next, None):
            values = dict(zip(outputs, session.run(outputs, feed), strict=True))
            values.update({name: feed[name] for name in tensors if name in feed})
            yield values

    low = dict.fromkeys(tensors, math.inf)
    high = dict.fromkeys(tensors, -math.inf)
    for values in batches():
        for name, value in values.items():
            if value.size:
                low[name] = min(low[name], float(value.min()))
                high[name] = max(high[name], float(value.max()))
    absmax = {name: max(abs(low[name]), abs(high[name])) if low[name] <= high[name] else 0.0 for name in tensors}
    hists = {name: np.zeros(NUM_BINS, np.int64) for name in tensors}
    for values in batches():
        for name, value in values.items():
            if absmax[name] > 0:
                scaled = np.abs(value.astype(np.float32, copy=False)).ravel() * np.float32(NUM_BINS / absmax[name])
                hists[name] += np.bincount(np.minimum(scaled.astype(np.int64), NUM_BINS - 1), minlength=NUM_BINS)
    reader.rewind()
    return {
        name: _TensorStats(
            low[name] if math.isfinite(low[name]) else 0.0,
            high[name] if math.isfinite(high[name]) else 0.0,
            absmax[name],
            hists[name],
        )
        for name in tensors
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools print progress and warnings; keep them off the user's console."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class Calibration:
    """Calibration statistics of one fp32 model on one set of good images, reused by every method/recipe.

    Holds the fp32 model's metadata, its pre-processed copy (``quant_pre_process``, in a temporary folder
    removed with this object or by :meth:`cleanup`), the calibration reader's description and first batch,
    the MACs of the weighted layers and per-tensor statistics. Build it with :func:`prepare_calibration`.
    Collecting the statistics holds every calibrated activation of one batch in memory at once (about
    150 MB per image at 224x224): calibrate a large static batch from a batch-1 or dynamic-batch export.
    """

    def __init__(self, fp32_path: Path, reader: CalibrationReader):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.fp32_path = fp32_path
        info = model_info(fp32_path)
        precision = info.metadata.get("precision")
        if precision != "fp32":
            raise ValueError(
                f"{fp32_path} has precision {precision!r}; INT8 quantization starts from the fp32 export "
                "(edge-ad export --precision fp32)"
            )
        self.metadata = dict(info.metadata)
        self.reader_info = reader.describe()
        self.first_batch = {reader.input_name: reader.batch(0)}
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-ad-int8-")
        self.prepared_path = Path(self._tmp.name) / "prepared.onnx"
        with _quiet():
            quant_pre_process(str(fp32_path), str(self.prepared_path), skip_symbolic_shape=True)
        self.prepared = onnx.load(str(self.prepared_path))
        self.macs = _macs(self.prepared)
        self.stats = _collect(self.prepared, reader, _calibrated_tensors(self.prepared))

    def ranges(self, method: str, target: str = "tensorrt") -> dict[str, tuple[float, float]]:
        """``(rmin, rmax)`` of every calibrated tensor: ``(-t, t)`` for the TensorRT target, the observed
        ``[min, max]`` clipped to ``[-t, t]`` for the CPU target (uint8, asymmetric)."""
        _check_choice("calibration method", method, METHODS)
        _check_choice("INT8 target", target, TARGETS)
        out = {}
        for name, stats in self.stats.items():
            t = stats.threshold(method)
            if t <= 0:
                continue
            out[name] = (-t, t) if target == "tensorrt" else (max(stats.minimum, -t), min(stats.maximum, t))
        return out

    def cleanup(self) -> None:
        self._tmp.cleanup()


def prepare_calibration(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader = None,
    *,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
) -> Calibration:
    """Read the calibration images (see :class:`CalibrationReader`) and collect their statistics once."""
    path = Path(fp32_onnx)
    reader = (
        calib_source
        if isinstance(calib_source, CalibrationReader)
        else CalibrationReader(path, calib_source, count=count, seed=seed)
    )
    return Calibration(path, reader)


# ----------------------------------------------------------------------------- quantization
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


def _check_head_float(model: onnx.ModelProto) -> None:
    """No Q/DQ output may feed the post-processing head, and ``patch_scores`` itself must not be rounded."""
    head = _descendants(model.graph, PATCH_SCORES)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    qdq_outputs = {out for node in model.graph.node if node.op_type in qdq for out in node.output}
    rounded = sorted(node.name for node in model.graph.node if node.name in head and set(node.input) & qdq_outputs)
    if PATCH_SCORES in qdq_outputs:
        rounded.insert(0, PATCH_SCORES)
    if rounded:
        raise QuantizationError(f"the post-processing head must stay float, but INT8 reaches {rounded}")


def quantize_int8(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    method: str = DEFAULT_METHOD,
    count: int = DEFAULT_COUNT,
    exclude: str | Sequence[str] = DEFAULT_RECIPE,
    per_channel: bool = True,
    target: str = "tensorrt",
    seed: int = 0,
    selection: dict[str, Any] | None = None,
) -> Path:
    """Quantize an exported fp32 model to a Q/DQ INT8 model; returns the path written.

    ``calib_source``: None (the bundle's training images), a folder of good images, a list of files, a
    :class:`CalibrationReader`, or a :class:`Calibration` from :func:`prepare_calibration` (reused as it is;
    ``count`` and ``seed`` are then ignored). ``method``: one of :data:`METHODS`. ``exclude``: a recipe name
    (:data:`RECIPES`) or a list of node-name patterns kept in float; the head stays float regardless.
    ``target``: "tensorrt" (default) or "cpu" (see the module docstring). ``selection``: how the recipe was
    chosen, recorded in the ``int8_recipe`` metadata. ``out_path`` defaults to ``model.int8.onnx``
    (``model.int8.cpu.onnx`` for the CPU target) beside the fp32 model; it is written atomically, after
    ``onnx.checker`` (full), the TensorRT op check and the float-head check passed.
    """
    _check_choice("calibration method", method, METHODS)
    _check_choice("INT8 target", target, TARGETS)
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
            )
        finally:
            calibration.cleanup()
    calibration = calib_source
    if calibration.fp32_path.resolve() != fp32_path.resolve():
        raise ValueError(f"the calibration was prepared for {calibration.fp32_path}, not {fp32_path}")
    default_name = INT8_NAME if target == "tensorrt" else INT8_CPU_NAME
    out = Path(out_path) if out_path is not None else fp32_path.parent / default_name
    exclusion = resolve_exclude(calibration.prepared, exclude)
    float_nodes = set(exclusion.nodes)
    if target == "cpu":  # the CPU placement rounds layer outputs: the layer producing the patch scores stays float
        float_nodes |= {n.name for n in calibration.prepared.graph.node if PATCH_SCORES in n.output}

    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-") as tmp:
        raw = Path(tmp) / "quantized.onnx"
        with _quiet():
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
    if selection is not None:
        recipe["selection"] = selection
    metadata = {**calibration.metadata, "precision": "int8", "int8_recipe": json.dumps(recipe)}
    onnx.helper.set_model_props(model, metadata)

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the INT8 graph fails onnx.checker: {exc}") from exc
    assert_tensorrt_compatible(model)
    if not quantized_nodes(model):
        raise QuantizationError("quantization left every layer in float (nothing was quantized)")
    _check_head_float(model)

    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(model.SerializeToString())
    return out


# ----------------------------------------------------------------------------- measurement
def evaluation_samples(eval_data: str | os.PathLike[str] | None, fp32_onnx: str | os.PathLike[str]) -> list[Sample]:
    """The labelled test split to measure on: ``eval_data`` (a category folder), else the test split of the
    category the bundle holding ``fp32_onnx`` was trained on."""
    if eval_data is None:
        bundle = Path(fp32_onnx).parent
        if not (bundle / CONFIG_NAME).is_file():
            raise ValueError(f"{fp32_onnx} is not inside a bundle; pass eval_data (a category folder with test/)")
        eval_data = read_bundle(bundle, verify_weights=False).training.get("data")
        if not eval_data:
            raise ValueError(f"bundle {bundle} does not record its data folder; pass eval_data")
    return test_samples(eval_data, require_masks=True)


def _evaluate(path: Path, samples: Sequence[Sample], batch_size: int = 8) -> tuple[Scored, dict[str, dict[str, float]]]:
    runtime = OnnxRuntime(path, device="cpu")
    scored = score_samples(runtime, samples, runtime.preprocessing, batch_size=batch_size)
    return scored, metrics_by_defect(scored)


def score_deviation(fp32: Scored, int8: Scored) -> dict[str, float]:
    """How far INT8 moved the outputs: max/mean absolute change of image scores and of anomaly maps, raw and
    as a fraction of the fp32 range (max - min) of each."""
    d_score = np.abs(int8.image_scores.astype(np.float64) - fp32.image_scores)
    d_map = np.abs(int8.maps.astype(np.float64) - fp32.maps)
    score_range = max(float(np.ptp(fp32.image_scores)), 1e-12)
    map_range = max(float(np.ptp(fp32.maps)), 1e-12)
    return {
        "image_score_max_abs": float(d_score.max()),
        "image_score_mean_abs": float(d_score.mean()),
        "map_max_abs": float(d_map.max()),
        "map_mean_abs": float(d_map.mean()),
        "fp32_image_score_range": score_range,
        "fp32_map_range": map_range,
        "image_score_mean_rel": float(d_score.mean() / score_range),
        "map_mean_rel": float(d_map.mean() / map_range),
    }


def _losses(fp32: dict[str, float], int8: dict[str, float]) -> dict[str, float]:
    """fp32 minus INT8 (positive: INT8 is worse) for each metric both have."""
    return {k: float(fp32[k] - int8[k]) for k in ("image_auroc", "pixel_auroc", "aupro") if k in fp32 and k in int8}


def choose_candidate(candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The measured choice among (method, recipe) candidates.

    1. Gate: image AUROC loss and pixel AUROC loss (fp32 - INT8) both <= ``tolerance``.
    2. Speed: among those that pass, the ones whose INT8 share of the MACs is within :data:`SAME_SPEED` of the
       highest (e.g. quantizing the 1024 -> 1 scoring layer changes nothing measurable in speed).
    3. Fidelity: the smallest mean change of image scores plus maps, relative to the fp32 ranges (a change
       of ranking that happens to raise AUROC is noise, not a gain, so AUROC itself is not maximised).
    If nothing passes, the candidate with the smallest worst-case loss is returned (``within_tolerance``
    False in it).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    passing = [c for c in candidates if c["within_tolerance"]]

    def fidelity(c: dict[str, Any]) -> float:
        return c["deviation"]["image_score_mean_rel"] + c["deviation"]["map_mean_rel"]

    def worst_loss(c: dict[str, Any]) -> float:
        return max(c["loss"].get("image_auroc", 0.0), c["loss"].get("pixel_auroc", 0.0))

    if not passing:
        return min(candidates, key=lambda c: (worst_loss(c), fidelity(c)))
    fastest = max(c["int8_mac_fraction"] for c in passing)
    fast = [c for c in passing if c["int8_mac_fraction"] >= fastest - SAME_SPEED]
    return min(fast, key=lambda c: (fidelity(c), -c["int8_mac_fraction"]))


def measure_recipes(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    eval_data: str | os.PathLike[str] | None = None,
    *,
    methods: Sequence[str] = METHODS,
    recipes: Sequence[str] = tuple(RECIPES),
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    target: str = "tensorrt",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Quantize every (method, recipe) pair, evaluate each against fp32 and choose one (:func:`choose_candidate`).

    Returns ``{"fp32": metrics, "candidates": [...], "chosen": {...}, "rule": str, "tolerance", "eval": {...},
    "calibration": {...}}``; each candidate holds its method, recipe, overall metrics, losses vs fp32,
    deviation (:func:`score_deviation`), INT8 share of the MACs and whether it is within tolerance.
    The evaluation set needs labels; by default it is the test split of the bundle's category (then the
    choice among a handful of candidates uses that split's labels: report numbers from another split when
    you have one).
    """
    result, calibration, *_ = _measure(
        fp32_onnx, calib_source, eval_data, methods, recipes, count, seed, tolerance, target, batch_size
    )
    if calibration is not calib_source:
        calibration.cleanup()
    return result


def _measure(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration,
    eval_data: str | os.PathLike[str] | None,
    methods: Sequence[str],
    recipes: Sequence[str],
    count: int,
    seed: int,
    tolerance: float,
    target: str,
    batch_size: int,
) -> tuple[dict[str, Any], Calibration, list[Sample], Scored, dict[str, dict[str, float]]]:
    if not methods or not recipes:
        raise ValueError("measure_recipes needs at least one method and one recipe")
    for m in methods:
        _check_choice("calibration method", m, METHODS)
    for r in recipes:
        _check_choice("INT8 recipe", r, tuple(RECIPES))
    fp32_path = Path(fp32_onnx)
    calibration = (
        calib_source
        if isinstance(calib_source, Calibration)
        else prepare_calibration(fp32_path, calib_source, count=count, seed=seed)
    )
    samples = evaluation_samples(eval_data, fp32_path)
    fp32_scored, fp32_metrics = _evaluate(fp32_path, samples, batch_size)
    candidates = []
    with tempfile.TemporaryDirectory(prefix="edge-ad-int8-measure-") as tmp:
        for method in methods:
            for recipe in recipes:
                path = Path(tmp) / f"{method}.{recipe}.onnx"
                quantize_int8(fp32_path, calibration, path, method=method, exclude=recipe, target=target)
                scored, metrics = _evaluate(path, samples, batch_size)
                loss = _losses(fp32_metrics["overall"], metrics["overall"])
                within = all(loss.get(k, 0.0) <= tolerance + 1e-12 for k in ("image_auroc", "pixel_auroc"))
                candidates.append(
                    {
                        "method": method,
                        "recipe": recipe,
                        "metrics": metrics["overall"],
                        "loss": loss,
                        "deviation": score_deviation(fp32_scored, scored),
                        "int8_mac_fraction": int8_mac_fraction(onnx.load(str(path)), calibration.macs),
                        "within_tolerance": within,
                    }
                )
                path.unlink()
    chosen = choose_candidate(candidates, tolerance)
    result = {
        "fp32": fp32_metrics["overall"],
        "candidates": candidates,
        "chosen": {k: chosen[k] for k in ("method", "recipe", "within_tolerance")},
        "rule": (
            f"image and pixel AUROC loss <= {tolerance:g}; then the highest INT8 share of MACs "
            f"(within {SAME_SPEED:g}); then the smallest relative change of image scores + maps"
        ),
        "tolerance": tolerance,
        "target": target,
        "eval": {"images": len(samples), "anomalous": sum(s.label for s in samples)},
        "calibration": {k: v for k, v in calibration.reader_info.items() if k != "names"},
    }
    return result, calibration, samples, fp32_scored, fp32_metrics
