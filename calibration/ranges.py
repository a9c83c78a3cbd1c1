"""Calibration statistics of an fp32 graph on good images, and the INT8 ranges every method derives from them.

Calibration ranges are computed here, not by onnxruntime's calibrators: one pass over the calibration images
records each tensor's min, max and absolute maximum, a second a 2048-bin histogram of ``|x|`` over
``[0, absmax]``; every method reads the same histograms, so comparing methods costs one calibration run.
Reason (measured on the exported model): onnxruntime's ``Entropy`` calibrator with its defaults (128 histogram
bins, 128 quantized bins) has a single candidate threshold and returns exactly the min/max scales.

* ``minmax``: the absolute maximum (TensorRT Model Optimizer's "max" calibration);
* ``percentile``: the :data:`PERCENTILE` percentile of ``|x|`` (onnxruntime's default, 99.999);
* ``entropy``: TensorRT's KL-divergence calibration (:func:`_entropy_threshold`).

Before collecting, ``onnxruntime.quantization.shape_inference.quant_pre_process`` folds the exporter's
``Constant`` nodes into initializers (so fixed weights, such as SimpleNet's patch aggregator, are quantized per
channel as weights rather than calibrated as activations) and removes the Shape/Slice/Concat plumbing; compute
nodes keep their names and the numbers do not change. Torch-free.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge_ad.onnx_tools.onnx_graph import node_macs
from edge_ad.progress import Bar, progress_bar

from .calibration_data import DEFAULT_COUNT, CalibrationReader, CalibSource
from .graph_parts import OP_TYPES, Int8Layout, check_choice, layout_of

__all__ = [
    "DEFAULT_METHOD",
    "ENTROPY_LEVELS",
    "METHODS",
    "NUM_BINS",
    "PERCENTILE",
    "TARGETS",
    "Calibration",
    "prepare_calibration",
    "quiet",
]

METHODS = ("entropy", "percentile", "minmax")
TARGETS = ("tensorrt", "cpu")
DEFAULT_METHOD = "percentile"  # measured best on both demo models (see calibrate reports)
NUM_BINS = 2048
ENTROPY_LEVELS = 128  # quantized levels of |x| in [0, threshold]: the positive half of symmetric int8
PERCENTILE = 99.999


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
def quiet() -> Iterator[None]:
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
    the MACs of the weighted layers, per-tensor statistics and the graph's declared INT8 layout (``layout``).
    Build it with :func:`prepare_calibration`.
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
        self.layout: Int8Layout = layout_of(self.metadata, str(fp32_path))  # the family's parts, from the export
        self.reader_info = reader.describe()
        self.first_batch = {reader.input_name: reader.batch(0)}
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-ad-int8-")
        self.prepared_path = Path(self._tmp.name) / "prepared.onnx"
        with quiet():
            quant_pre_process(str(fp32_path), str(self.prepared_path), skip_symbolic_shape=True)
        self.prepared = onnx.load(str(self.prepared_path))
        self.macs = node_macs(self.prepared)
        self.stats = _collect(self.prepared, reader, _calibrated_tensors(self.prepared))

    def ranges(self, method: str, target: str = "tensorrt") -> dict[str, tuple[float, float]]:
        """``(rmin, rmax)`` of every calibrated tensor: ``(-t, t)`` for the TensorRT target, the observed
        ``[min, max]`` clipped to ``[-t, t]`` for the CPU target (uint8, asymmetric)."""
        check_choice("calibration method", method, METHODS)
        check_choice("INT8 target", target, TARGETS)
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
