"""edge-ad: anomaly detection trained on good parts only, deployed to NVIDIA edge hardware.

The package is layered so that running an exported model never imports torch: ``edge_ad.data`` (the input
path), ``edge_ad.postprocess`` (anomaly maps), ``edge_ad.runtimes`` (onnxruntime / TensorRT / Triton backends),
``edge_ad.artifacts`` (artifact names and metadata), ``edge_ad.detector`` (the small Python API) and
``edge_ad.serve`` are torch-free; the families in ``edge_ad.models``, ``edge_ad.training`` and the ONNX export in
``edge_ad.export`` need torch. ``tests/test_layering.py`` keeps the layers.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Bumped whenever a bundle written by this version cannot be read by an older one (or vice versa).
BUNDLE_FORMAT_VERSION = 1

__all__ = ["BUNDLE_FORMAT_VERSION", "__version__"]
