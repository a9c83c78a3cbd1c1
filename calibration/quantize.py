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
a recipe (:data:`RECIPES`) lists the parts kept in float. :func:`measure` quantizes every (method, recipe)
pair once and runs each once on the sets read once by :func:`selection_sets`: by default the bundle's
held-out good images, where it measures how far each stays from fp32 and derives each one's own threshold,
and chooses without labels (:func:`choose_without_labels`); only with an explicit labelled ``--eval-data``
does it also measure image/pixel AUROC and AUPRO and choose on them (:func:`choose_candidate`).
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
from collections.abc import Callable, Iterator, Sequence
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
from edge_ad.export.onnx_graph import WEIGHTED_OPS, descendants, node_macs
from edge_ad.export.op_check import assert_tensorrt_compatible
from edge_ad.io import atomic_path
from edge_ad.progress import Bar, progress_bar
from edge_ad.runtimes.onnx_runtime import OnnxRuntime

from .calibration_data import (
    DEFAULT_COUNT,
    MIN_IMAGES,
    CalibrationReader,
    CalibSource,
    ModelInfo,
    calibration_images,
    model_info,
)
from .selection import (
    HOLDOUT,
    ImageSet,
    bundle_holdout,
    good_set,
    labelled_metrics,
    labelled_set,
    run_model,
    split_source,
    threshold_sigmas,
)

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_RECIPE",
    "DEFAULT_GOOD_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "INT8_NAME",
    "METHODS",
    "PARTS",
    "PERCENTILE",
    "RECIPES",
    "TARGETS",
    "Calibration",
    "Exclusion",
    "Measurement",
    "QuantizationError",
    "choose_candidate",
    "choose_without_labels",
    "evaluation_samples",
    "graph_parts",
    "int8_mac_fraction",
    "measure",
    "measure_recipes",
    "output_deviation",
    "prepare_calibration",
    "quantize_int8",
    "quantized_nodes",
    "resolve_exclude",
    "score_deviation",
    "selection_sets",
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
DEFAULT_TOLERANCE = 0.01  # AUROC points / 100: the accepted INT8 loss of image and of pixel AUROC (--eval-data)
# Without labels: the accepted mean change of image scores and of maps on held-out good images, as a share of the
# fp32 maps' range there (see choose_without_labels; measured values in the calibration report).
DEFAULT_GOOD_TOLERANCE = 0.02
SAME_SPEED = 0.01  # recipes whose INT8 share of the MACs differs by less than this count as equally fast
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
def _head(graph: onnx.GraphProto) -> set[str]:
    """Names of the post-processing head's nodes: every node that depends on ``patch_scores``."""
    return {graph.node[i].name for i in descendants(graph, PATCH_SCORES)}


def graph_parts(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> part (a key of :data:`PARTS`, or ``"other"``) for every node of the graph."""
    head = _head(model.graph)
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

    def batches(bar: Bar) -> Iterator[dict[str, np.ndarray]]:
        reader.rewind()
        for feed in iter(reader.get_next, None):
            values = dict(zip(outputs, session.run(outputs, feed), strict=True))
            values.update({name: feed[name] for name in tensors if name in feed})
            yield values
            bar.advance(reader.batch_size)

    low = dict.fromkeys(tensors, math.inf)
    high = dict.fromkeys(tensors, -math.inf)
    images, fed = len(reader.data), len(reader) * reader.batch_size  # fed: the last batch wraps around
    with progress_bar(total=fed, description=f"calibration ranges ({images} good images)") as bar:
        for values in batches(bar):
            for name, value in values.items():
                if value.size:
                    low[name] = min(low[name], float(value.min()))
                    high[name] = max(high[name], float(value.max()))
    absmax = {name: max(abs(low[name]), abs(high[name])) if low[name] <= high[name] else 0.0 for name in tensors}
    hists = {name: np.zeros(NUM_BINS, np.int64) for name in tensors}
    with progress_bar(total=fed, description=f"calibration histograms ({images} good images)") as bar:
        for values in batches(bar):
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
        info = reader.model  # read once, by the reader
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
        self.macs = node_macs(self.prepared)
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
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Calibration:
    """Read the calibration images (see :class:`CalibrationReader`) and collect their statistics once."""
    path = Path(fp32_onnx)
    reader = (
        calib_source
        if isinstance(calib_source, CalibrationReader)
        else CalibrationReader(path, calib_source, count=count, seed=seed, exclude=exclude)
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
    head = _head(model.graph)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    qdq_outputs = {out for node in model.graph.node if node.op_type in qdq for out in node.output}
    rounded = sorted(node.name for node in model.graph.node if node.name in head and set(node.input) & qdq_outputs)
    if PATCH_SCORES in qdq_outputs:
        rounded.insert(0, PATCH_SCORES)
    if rounded:
        raise QuantizationError(f"the post-processing head must stay float, but INT8 reaches {rounded}")


def _quantize(
    calibration: Calibration, method: str, exclude: str | Sequence[str], target: str, per_channel: bool = True
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """One Q/DQ model from the collected statistics, checked (checker, TensorRT ops, float head), not written.

    Returns the model (metadata: the fp32 model's with ``precision`` and ``int8_recipe``) and its recipe dict.
    """
    _check_choice("calibration method", method, METHODS)
    _check_choice("INT8 target", target, TARGETS)
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
    _set_metadata(model, calibration, recipe)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the INT8 graph fails onnx.checker: {exc}") from exc
    assert_tensorrt_compatible(model)
    if not quantized_nodes(model):
        raise QuantizationError("quantization left every layer in float (nothing was quantized)")
    _check_head_float(model)
    return model, recipe


def _set_metadata(
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


def _write(model: onnx.ModelProto, out: Path) -> Path:
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
    exclude: str | Sequence[str] = DEFAULT_RECIPE,
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
    (:data:`RECIPES`) or a list of node-name patterns kept in float; the head stays float regardless.
    ``target``: "tensorrt" (default) or "cpu" (see the module docstring). ``selection``: how the recipe was
    chosen, recorded in the ``int8_recipe`` metadata. ``score_stats``: this INT8 model's own good-image
    statistics (:func:`edge_ad.thresholds.good_image_statistics`); its threshold then replaces the fp32 one (without it
    the fp32 threshold is kept and ``int8_recipe`` says so: :func:`~.report.calibrate` derives it).
    ``out_path`` defaults to ``model.int8.onnx`` (``model.int8.cpu.onnx`` for the CPU target) beside the
    fp32 model; it is written atomically, after ``onnx.checker`` (full), the TensorRT op check and the
    float-head check passed.
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
                score_stats=score_stats,
            )
        finally:
            calibration.cleanup()
    calibration = calib_source
    if calibration.fp32_path.resolve() != fp32_path.resolve():
        raise ValueError(f"the calibration was prepared for {calibration.fp32_path}, not {fp32_path}")
    out = Path(out_path) if out_path is not None else fp32_path.parent / _default_name(target)
    model, recipe = _quantize(calibration, method, exclude, target, per_channel)
    if selection is not None:
        recipe["selection"] = selection
    if selection is not None or score_stats is not None:
        _set_metadata(model, calibration, recipe, score_stats)
    return _write(model, out)


def _default_name(target: str) -> str:
    return INT8_NAME if target == "tensorrt" else INT8_CPU_NAME


# ----------------------------------------------------------------------------- measurement
def evaluation_samples(eval_data: str | os.PathLike[str] | None, fp32_onnx: str | os.PathLike[str]) -> list[Sample]:
    """A labelled test split (for benchmarks that report accuracy): ``eval_data`` (a category folder), else the
    test split of the category the bundle holding ``fp32_onnx`` was trained on. The recipe choice never
    uses this default: it reads labels only from an explicit ``eval_data`` (see :func:`measure_recipes`)."""
    if eval_data is None:
        bundle = Path(fp32_onnx).parent
        if not (bundle / CONFIG_NAME).is_file():
            raise ValueError(f"{fp32_onnx} is not inside a bundle; pass eval_data (a category folder with test/)")
        eval_data = read_bundle(bundle, verify_weights=False).training.get("data")
        if not eval_data:
            raise ValueError(f"bundle {bundle} does not record its data folder; pass eval_data")
    return test_samples(eval_data, require_masks=True)


def _evaluate(path: Path, samples: Sequence[Sample], batch_size: int = 8) -> tuple[Scored, dict[str, dict[str, float]]]:
    """Score a labelled split with an exported model (benchmarks; the calibration stage reads its sets once)."""
    runtime = OnnxRuntime(path, device="cpu")
    scored = score_samples(runtime, samples, runtime.preprocessing, batch_size=batch_size)
    return scored, metrics_by_defect(scored)


def output_deviation(
    fp32_scores: np.ndarray, fp32_maps: np.ndarray, scores: np.ndarray, maps: np.ndarray
) -> dict[str, float]:
    """How far a model moved the outputs: max/mean absolute change of image scores and of anomaly maps, raw and
    as a fraction of the fp32 range (max - min) of each; ``image_score_mean_per_map_range`` puts the score
    change on the maps' range (an image score is a map's maximum: same units, and a few good images' score
    range is too narrow and too noisy to divide by)."""
    d_score = np.abs(scores.astype(np.float64) - fp32_scores)
    d_map = np.abs(maps.astype(np.float64) - fp32_maps)
    score_range = max(float(np.ptp(fp32_scores)), 1e-12)
    map_range = max(float(np.ptp(fp32_maps)), 1e-12)
    return {
        "image_score_max_abs": float(d_score.max()),
        "image_score_mean_abs": float(d_score.mean()),
        "map_max_abs": float(d_map.max()),
        "map_mean_abs": float(d_map.mean()),
        "fp32_image_score_range": score_range,
        "fp32_map_range": map_range,
        "image_score_mean_rel": float(d_score.mean() / score_range),
        "map_mean_rel": float(d_map.mean() / map_range),
        "image_score_mean_per_map_range": float(d_score.mean() / map_range),
    }


def score_deviation(fp32: Scored, int8: Scored) -> dict[str, float]:
    """:func:`output_deviation` of two scored splits."""
    return output_deviation(fp32.image_scores, fp32.maps, int8.image_scores, int8.maps)


def _losses(fp32: dict[str, float], int8: dict[str, float]) -> dict[str, float]:
    """fp32 minus INT8 (positive: INT8 is worse) for each metric both have."""
    return {k: float(fp32[k] - int8[k]) for k in ("image_auroc", "pixel_auroc", "aupro") if k in fp32 and k in int8}


def _fastest_then_closest(
    passing: Sequence[dict[str, Any]], fidelity: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    fastest = max(c["int8_mac_fraction"] for c in passing)
    fast = [c for c in passing if c["int8_mac_fraction"] >= fastest - SAME_SPEED]
    return min(fast, key=lambda c: (fidelity(c), -c["int8_mac_fraction"]))


def choose_candidate(candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The measured choice among (method, recipe) candidates on a labelled set (``--eval-data``).

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
    return _fastest_then_closest(passing, fidelity)


def good_fidelity(candidate: dict[str, Any]) -> float:
    """Mean change of image scores plus mean change of maps on good images, both over the fp32 maps' range."""
    d = candidate["good_deviation"]
    return d["image_score_mean_per_map_range"] + d["map_mean_rel"]


def _within_good_tolerance(deviation: dict[str, float], tolerance: float) -> bool:
    return max(deviation["image_score_mean_per_map_range"], deviation["map_mean_rel"]) <= tolerance + 1e-12


def choose_without_labels(
    candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_GOOD_TOLERANCE
) -> dict[str, Any]:
    """The choice without any label: how close each candidate stays to fp32 on held-out good images.

    1. Gate: the mean change of image scores and the mean change of anomaly maps, each as a share of the fp32
       maps' range on those images, both <= ``tolerance``.
    2. Speed: as :func:`choose_candidate` (the highest INT8 share of the MACs, within :data:`SAME_SPEED`).
    3. Fidelity: the smallest sum of the two changes (:func:`good_fidelity`).
    If nothing passes, the closest candidate is returned (``within_tolerance`` False in it).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    passing = [c for c in candidates if c["within_tolerance"]]
    if not passing:
        return min(candidates, key=good_fidelity)
    return _fastest_then_closest(passing, good_fidelity)


@dataclass
class Measurement:
    """What :func:`measure` found: the JSON-friendly ``result``, the chosen candidate (its quantized file kept in a
    temporary folder until :meth:`cleanup`), the reference's outputs and the sets measured on."""

    result: dict[str, Any]
    calibration: Calibration
    selection: ImageSet
    labelled: ImageSet | None
    chosen: dict[str, Any]
    chosen_path: Path
    chosen_recipe: dict[str, Any]
    chosen_metrics: dict[str, dict[str, float]] | None
    fp32_stats: dict[str, Any]
    fp32_metrics: dict[str, dict[str, float]] | None
    _tmp: tempfile.TemporaryDirectory[str]

    def cleanup(self, calibration: bool = True) -> None:
        self._tmp.cleanup()
        if calibration:
            self.calibration.cleanup()


def selection_sets(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    eval_data: str | os.PathLike[str] | None = None,
    *,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    model: ModelInfo | None = None,
) -> tuple[Calibration, ImageSet, ImageSet | None, float]:
    """Calibration statistics and the sets to choose on, each read once: ``(calibration, held-out good images,
    labelled --eval-data set or None, k of the threshold rule)``. Calibration never sees the held-out images."""
    fp32_path = Path(fp32_onnx)
    info_model = model_info(model if model is not None else fp32_path)
    bundle_dir = fp32_path.parent
    bundle = read_bundle(bundle_dir, verify_weights=False) if (bundle_dir / CONFIG_NAME).is_file() else None
    held = bundle_holdout(bundle) if bundle is not None else None
    if held is not None:
        kind, folder, paths = held
        exclude = paths if kind == HOLDOUT else []
        if isinstance(calib_source, (Calibration, CalibrationReader)):  # made by the caller: check, do not redo
            given = calib_source.reader_info if isinstance(calib_source, Calibration) else calib_source.describe()
            overlap = {p.name for p in exclude} & set(given["names"])
            if overlap and Path(given["folder"]).resolve() == Path(folder).resolve():
                raise ValueError(
                    f"the calibration images include {len(overlap)} of the bundle's held-out good images "
                    f"(e.g. {sorted(overlap)[0]}), which choose the recipe and set the INT8 threshold"
                )
        if isinstance(calib_source, Calibration):
            calibration = calib_source
        else:
            reader = (
                calib_source
                if isinstance(calib_source, CalibrationReader)
                else CalibrationReader(info_model, calib_source, count=count, seed=seed, exclude=exclude)
            )
            calibration = Calibration(fp32_path, reader)
    else:
        if isinstance(calib_source, (Calibration, CalibrationReader)):
            raise ValueError(
                f"{fp32_path}: no bundle with held-out good images beside it; pass the calibration images as a "
                "folder or a file list, so that a share of them can be held out to choose the recipe"
            )
        folder, candidates = calibration_images(calib_source, fp32_path)
        rest, paths = split_source(candidates, seed, MIN_IMAGES)
        kind = "calibration-source images held out (the bundle records no held-out good images)"
        calibration = Calibration(fp32_path, CalibrationReader(info_model, rest, count=count, seed=seed))
    try:
        selection = good_set(paths, info_model.preprocessing, kind, folder)
        labelled = labelled_set(eval_data, info_model.preprocessing) if eval_data is not None else None
        sigmas = threshold_sigmas(bundle)
    except BaseException:
        if calibration is not calib_source:
            calibration.cleanup()
        raise
    return calibration, selection, labelled, sigmas


def _score_stats(stats: dict[str, Any], selection: ImageSet, who: str, fp32_threshold: float) -> dict[str, Any]:
    """Good-image statistics as an artifact's ``score_stats``, saying where its threshold comes from."""
    return {
        **stats,
        "threshold_source": f"{selection.kind}: {len(selection.paths)} in {selection.folder}, {who}",
        "fp32_threshold": fp32_threshold,
    }


def measure(
    fp32_onnx: str | os.PathLike[str],
    calibration: Calibration,
    selection: ImageSet,
    labelled: ImageSet | None = None,
    *,
    methods: Sequence[str] = METHODS,
    recipes: Sequence[str] = tuple(RECIPES),
    tolerance: float | None = None,
    target: str = "tensorrt",
    sigmas: float = 3.0,
    batch_size: int = 8,
) -> Measurement:
    """Quantize every (method, recipe) pair once, run each once on the sets, and choose one.

    Each candidate's outputs on the held-out good images give its own threshold (the bundle's rule,
    :func:`edge_ad.thresholds.good_image_statistics`) and its closeness to fp32; on a labelled set (only when given)
    also its metrics. The choice is :func:`choose_without_labels` (default) or, with a labelled set,
    :func:`choose_candidate`. Candidates' metrics and deviations are kept, so nothing is evaluated twice.
    """
    if not methods or not recipes:
        raise ValueError("measure_recipes needs at least one method and one recipe")
    for m in methods:
        _check_choice("calibration method", m, METHODS)
    for r in recipes:
        _check_choice("INT8 recipe", r, tuple(RECIPES))
    _check_choice("INT8 target", target, TARGETS)
    if tolerance is None:
        tolerance = DEFAULT_TOLERANCE if labelled is not None else DEFAULT_GOOD_TOLERANCE
    fp32_path = Path(fp32_onnx)
    fp32_threshold = float(calibration.metadata["threshold"])
    sets = [selection] + ([labelled] if labelled is not None else [])
    fp32_out = run_model(OnnxRuntime(fp32_path, device="cpu"), sets, "evaluate fp32 (reference)", sigmas, batch_size)
    fp32_metrics = labelled_metrics(labelled, fp32_out[1]) if labelled is not None else None
    pairs = [(m, r) for m in methods for r in recipes]
    tmp = tempfile.TemporaryDirectory(prefix="edge-ad-int8-measure-")
    candidates: list[dict[str, Any]] = []
    kept: list[tuple[Path, dict[str, Any], dict[str, dict[str, float]] | None]] = []
    try:
        for index, (method, recipe) in enumerate(pairs, 1):
            path = Path(tmp.name) / f"{method}.{recipe}.onnx"
            model, recipe_meta = _quantize(calibration, method, recipe, target)
            mac_fraction = int8_mac_fraction(model, calibration.macs)
            _write(model, path)
            del model
            label = f"evaluate int8 {method}/{recipe} ({index}/{len(pairs)})"
            out = run_model(OnnxRuntime(path, device="cpu"), sets, label, sigmas, batch_size)
            assert out[0].stats is not None
            good_dev = output_deviation(fp32_out[0].scores, fp32_out[0].maps, out[0].scores, out[0].maps)
            candidate: dict[str, Any] = {
                "method": method,
                "recipe": recipe,
                "threshold": out[0].stats["image"]["threshold"],
                "score_stats": _score_stats(
                    out[0].stats, selection, f"scored by this INT8 model ({method}/{recipe})", fp32_threshold
                ),
                "good_deviation": good_dev,
                "int8_mac_fraction": mac_fraction,
            }
            metrics = None
            if labelled is not None and fp32_metrics is not None:
                metrics = labelled_metrics(labelled, out[1])
                loss = _losses(fp32_metrics["overall"], metrics["overall"])
                candidate.update(
                    metrics=metrics["overall"],
                    loss=loss,
                    deviation=output_deviation(fp32_out[1].scores, fp32_out[1].maps, out[1].scores, out[1].maps),
                    within_tolerance=all(loss.get(k, 0.0) <= tolerance + 1e-12 for k in ("image_auroc", "pixel_auroc")),
                )
            else:
                candidate.update(deviation=good_dev, within_tolerance=_within_good_tolerance(good_dev, tolerance))
            candidates.append(candidate)
            kept.append((path, recipe_meta, metrics))
        choose = choose_candidate if labelled is not None else choose_without_labels
        chosen = choose(candidates, tolerance)
    except BaseException:
        tmp.cleanup()
        raise
    chosen_index = candidates.index(chosen)
    for index, (path, _, _) in enumerate(kept):
        if index != chosen_index:
            path.unlink(missing_ok=True)
    if labelled is not None:
        rule = (
            f"labels of --eval-data: image and pixel AUROC loss <= {tolerance:g}; then the highest INT8 share of "
            f"MACs (within {SAME_SPEED:g}); then the smallest relative change of image scores + maps"
        )
    else:
        rule = (
            f"no labels: on the held-out good images, mean change of image scores and of maps <= {tolerance:g} of "
            f"the fp32 maps' range; then the highest INT8 share of MACs (within {SAME_SPEED:g}); then the "
            "smallest sum of the two changes"
        )
    assert fp32_out[0].stats is not None
    fp32_stats = _score_stats(fp32_out[0].stats, selection, "scored by the fp32 ONNX model", fp32_threshold)
    result = {
        "selection": {k: v for k, v in selection.describe().items()},
        "labels_used": labelled is not None,
        "fp32": fp32_metrics["overall"] if fp32_metrics is not None else None,
        "fp32_threshold": {
            "bundle": fp32_threshold,
            "onnx": fp32_stats["image"]["threshold"],
        },
        "candidates": candidates,
        "chosen": {k: chosen[k] for k in ("method", "recipe", "within_tolerance")},
        "rule": rule,
        "tolerance": tolerance,
        "target": target,
        "eval": {k: v for k, v in labelled.describe().items() if k != "names"} if labelled is not None else None,
        "calibration": {k: v for k, v in calibration.reader_info.items() if k != "names"},
        "evaluations": {"fp32": 1, "candidates": len(pairs), "images_per_run": sum(len(s.data) for s in sets)},
    }
    path, recipe_meta, metrics = kept[chosen_index]
    return Measurement(
        result, calibration, selection, labelled, chosen, path, recipe_meta, metrics, fp32_stats, fp32_metrics, tmp
    )


def measure_recipes(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    eval_data: str | os.PathLike[str] | None = None,
    *,
    methods: Sequence[str] = METHODS,
    recipes: Sequence[str] = tuple(RECIPES),
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    tolerance: float | None = None,
    target: str = "tensorrt",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Quantize every (method, recipe) pair, measure each against fp32 and choose one (see :func:`measure`).

    By default the choice reads no label: it is made on the bundle's held-out good images
    (:func:`choose_without_labels`). ``eval_data`` (a category folder with a labelled test split) switches to
    the labelled rule (:func:`choose_candidate`); the result's ``selection``/``labels_used`` say which.
    """
    calibration, selection, labelled, sigmas = selection_sets(
        fp32_onnx, calib_source, eval_data, count=count, seed=seed
    )
    try:
        measured = measure(
            fp32_onnx,
            calibration,
            selection,
            labelled,
            methods=methods,
            recipes=recipes,
            tolerance=tolerance,
            target=target,
            sigmas=sigmas,
            batch_size=batch_size,
        )
        measured.cleanup(calibration=False)
        return measured.result
    finally:
        if calibration is not calib_source:
            calibration.cleanup()
