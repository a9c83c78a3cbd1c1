"""How a family's image score is made from its map, and whether the fused CUDA kernel can stand in for it.

The CUDA post-processing kernel (``export/kernels/anomaly_map.cu``, :mod:`edge_ad.runtimes.cuda_postprocess`)
computes SimpleNet's image score, the maximum of the patch map. A family whose graph scores an image otherwise
(NSA: the map's mean) declares it (``image_score`` on its inference graph, written into the ONNX metadata and
from there into an engine's sidecar), and every ``--postprocess cuda`` / ``--head cuda`` path refuses it here,
from that declaration, in one line. numpy-free and torch-free: it runs wherever an exported model runs.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["IMAGE_SCORES", "IMAGE_SCORE_KEY", "KERNEL_IMAGE_SCORE", "check_cuda_postprocess", "image_score_of"]

IMAGE_SCORE_KEY = "image_score"  # the ONNX metadata key (and the graph's class attribute)
IMAGE_SCORES = ("max", "mean")
KERNEL_IMAGE_SCORE = "max"  # anomaly_map_image_max
LEGACY_IMAGE_SCORE = "max"  # exports from before the key was written were SimpleNet's, scored by their maximum


def image_score_of(metadata: Mapping[str, str], where: str = "the model") -> str:
    """The image-score kind an artifact's metadata declares (``"max"`` when it predates the declaration)."""
    kind = metadata.get(IMAGE_SCORE_KEY) or LEGACY_IMAGE_SCORE
    if kind not in IMAGE_SCORES:
        raise ValueError(f"{where} declares image_score {kind!r}; this edge-ad knows {', '.join(IMAGE_SCORES)}")
    return kind


def check_cuda_postprocess(kind: str, where: str = "the model") -> None:
    """ValueError (one line) unless the CUDA kernel computes this image score."""
    if kind != KERNEL_IMAGE_SCORE:
        raise ValueError(
            f"{where} scores an image by the {kind} of its map, but the CUDA post-processing kernel computes the "
            f"{KERNEL_IMAGE_SCORE}: use the graph's own head (--postprocess torch, --head graph)"
        )
