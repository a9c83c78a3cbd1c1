"""edge-ad: anomaly detection trained on good parts only, deployed to NVIDIA edge hardware.

The package is layered so that running an exported model never imports torch:
``edge_ad.data`` (images, preprocessing, datasets), ``edge_ad.postprocess`` (anomaly maps),
``edge_ad.runtimes`` (onnxruntime / TensorRT / torch backends) and ``edge_ad.detector`` (the small
Python API) are torch-free; ``edge_ad.models``, ``edge_ad.training`` and ``edge_ad.export`` need torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Bumped whenever a bundle written by this version cannot be read by an older one (or vice versa).
BUNDLE_FORMAT_VERSION = 1

__all__ = ["BUNDLE_FORMAT_VERSION", "__version__"]
