"""Explicit INT8 quantization of an exported fp32 graph, and the measured choice of its recipe. Torch-free.

The stages live in modules of their own and are re-exported here: which nodes form which part and what a recipe
keeps in float, as each family's graph declares it (:mod:`.graph_parts`); calibration statistics and ranges
(:mod:`.ranges`); the Q/DQ writer, :func:`quantize_int8` (:mod:`.int8_writer`).

Mixed precision: the graph's parts are named by node-name patterns of the exported graph, declared by its family
and read from the ONNX metadata (:func:`~.graph_parts.layout_of`; a graph that declares none is refused); a recipe
lists the parts kept in float. Measuring the recipes and choosing one --
on ``--eval-data``'s labels, else on the bundle's synthetic validation set, else without labels on its held-out good
images -- is :mod:`.recipes` (:func:`measure`, :func:`selection_sets`), with the rules in :mod:`.choice`.
"""

from __future__ import annotations

from .choice import DEFAULT_GOOD_TOLERANCE, DEFAULT_TOLERANCE, choose_candidate, choose_without_labels, output_deviation
from .graph_parts import (
    Exclusion,
    graph_parts,
    int8_mac_fraction,
    quantized_nodes,
    resolve_exclude,
    unquantized_layers,
)
from .int8_writer import INT8_NAME, QuantizationError, quantize_int8
from .ranges import DEFAULT_METHOD, METHODS, PERCENTILE, TARGETS, Calibration, prepare_calibration
from .ranges import NUM_BINS as NUM_BINS
from .ranges import _entropy_threshold as _entropy_threshold
from .recipes import Measurement, evaluation_samples, measure, measure_recipes, score_deviation, selection_sets
from .recipes import _evaluate as _evaluate

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_GOOD_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "INT8_NAME",
    "METHODS",
    "PERCENTILE",
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
