"""INT8 calibration: good-image calibration data, explicit Q/DQ quantization, mixed-precision recipes chosen
by measurement -- without labels by default, on the bundle's held-out good images, which also give each INT8
model its own threshold -- and a report of the cost. Importing it loads no torch; running :func:`calibrate`
imports the trainer for the bundle's threshold rule (and the exporter when a bundle has no current fp32 ONNX).

Installed as ``edge_ad.calibration`` (the top-level ``calibration/`` folder of the repository).
"""

from __future__ import annotations

from edge_ad.thresholds.sets import ImageSet

from .calibration_data import DEFAULT_COUNT, MIN_IMAGES, CalibrationReader
from .choice import DEFAULT_GOOD_TOLERANCE, DEFAULT_TOLERANCE, choose_candidate, choose_without_labels
from .graph_parts import unquantized_layers
from .int8_writer import INT8_NAME, QuantizationError, quantize_int8
from .ranges import DEFAULT_METHOD, METHODS, TARGETS, Calibration, prepare_calibration
from .recipes import measure, measure_recipes, selection_sets
from .report import calibrate, write_report

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_GOOD_TOLERANCE",
    "DEFAULT_METHOD",
    "DEFAULT_TOLERANCE",
    "INT8_NAME",
    "METHODS",
    "MIN_IMAGES",
    "TARGETS",
    "Calibration",
    "CalibrationReader",
    "ImageSet",
    "QuantizationError",
    "calibrate",
    "choose_candidate",
    "choose_without_labels",
    "measure",
    "measure_recipes",
    "prepare_calibration",
    "quantize_int8",
    "selection_sets",
    "unquantized_layers",
    "write_report",
]
