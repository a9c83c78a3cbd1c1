"""INT8 calibration: good-image calibration data, explicit Q/DQ quantization, mixed-precision recipes chosen
by measurement, and a report of the accuracy cost. Torch-free (torch is imported only by :func:`calibrate`
when a bundle has no fp32 ONNX export yet).

Installed as ``edge_ad.calibration`` (the top-level ``calibration/`` folder of the repository).
"""

from __future__ import annotations

from .calibration_data import DEFAULT_COUNT, MIN_IMAGES, CalibrationReader
from .quantize import (
    DEFAULT_METHOD,
    DEFAULT_RECIPE,
    INT8_NAME,
    METHODS,
    PARTS,
    RECIPES,
    TARGETS,
    Calibration,
    QuantizationError,
    measure_recipes,
    prepare_calibration,
    quantize_int8,
    unquantized_layers,
)
from .report import calibrate, write_report

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_METHOD",
    "DEFAULT_RECIPE",
    "INT8_NAME",
    "METHODS",
    "MIN_IMAGES",
    "PARTS",
    "RECIPES",
    "TARGETS",
    "Calibration",
    "CalibrationReader",
    "QuantizationError",
    "calibrate",
    "measure_recipes",
    "prepare_calibration",
    "quantize_int8",
    "unquantized_layers",
    "write_report",
]
