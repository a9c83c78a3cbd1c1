"""Export: one entry, ``edge_ad.export.export(model, format, precision, ...)`` (``entry``); torch -> ONNX
(``onnx_export``), the TensorRT builder and its options, engine verification, Triton and DeepStream writers.

Installed as ``edge_ad.export`` (the top-level ``export/`` folder of the repository).
"""

from edge_ad.export.entry import FORMATS, ExportResult, export

__all__ = ["FORMATS", "ExportResult", "export"]
