"""How a family's graph turns its patch map into outputs (image score, smoothing), and whether the fused CUDA kernel
can stand in for it.

The CUDA post-processing kernel (``edge_ad/runtimes/kernels/anomaly_map.cu``, :mod:`edge_ad.runtimes.cuda_postprocess`)
computes SimpleNet's image score, the maximum of the patch map. A family whose graph scores an image otherwise
(NSA: the map's mean) declares it (``image_score`` on its inference graph, written into the ONNX metadata and
from there into an engine's sidecar), and every ``--postprocess cuda`` / ``--head cuda`` path refuses it here,
from that declaration, in one line. The map's smoothing sigma is declared the same way (``smoothing_sigma``):
SimpleNet's is 4, NSA's its config's (0, no smoothing, by the paper; 4 in the CPU demo preset), so the CUDA kernel
and the numpy reference head (:func:`edge_ad.postprocess.numpy_ops.postprocess`, what ``edge-ad bench`` times)
run with the sigma the graph was exported with. numpy-free and torch-free: it runs wherever an exported model runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGE_SCORES",
    "IMAGE_SCORE_KEY",
    "KERNEL_IMAGE_SCORE",
    "SMOOTHING_SIGMA_KEY",
    "HeadDeclaration",
    "check_cuda_postprocess",
    "image_score_of",
    "smoothing_sigma_of",
]

IMAGE_SCORE_KEY = "image_score"  # the ONNX metadata key (and the graph's class attribute)
IMAGE_SCORES = ("max", "mean")
KERNEL_IMAGE_SCORE = "max"  # anomaly_map_image_max
LEGACY_IMAGE_SCORE = "max"  # exports from before the key was written were SimpleNet's, scored by their maximum
SMOOTHING_SIGMA_KEY = "smoothing_sigma"
LEGACY_SMOOTHING_SIGMA = 4.0  # ... and smoothed with SimpleNet's sigma 4


def image_score_of(metadata: Mapping[str, str], where: str = "the model") -> str:
    """The image-score kind an artifact's metadata declares (``"max"`` when it predates the declaration)."""
    kind = metadata.get(IMAGE_SCORE_KEY) or LEGACY_IMAGE_SCORE
    if kind not in IMAGE_SCORES:
        raise ValueError(f"{where} declares image_score {kind!r}; this edge-ad knows {', '.join(IMAGE_SCORES)}")
    return kind


def smoothing_sigma_of(metadata: Mapping[str, str], where: str = "the model") -> float:
    """The anomaly map's Gaussian sigma an artifact's metadata declares (0: none; 4 when it predates the key)."""
    text = metadata.get(SMOOTHING_SIGMA_KEY)
    if text is None or text == "":
        return LEGACY_SMOOTHING_SIGMA
    try:
        sigma = float(text)
    except (TypeError, ValueError):
        sigma = math.nan
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{where} declares smoothing_sigma {text!r}; it must be a number >= 0")
    return sigma


@dataclass(frozen=True)
class HeadDeclaration:
    """What a graph's head does after its patch map: ``image_score`` (max or mean of the raw map) and the
    ``smoothing_sigma`` of the anomaly map (0: none). Read from the graph itself or from an artifact's metadata."""

    image_score: str = LEGACY_IMAGE_SCORE
    smoothing_sigma: float = LEGACY_SMOOTHING_SIGMA

    @classmethod
    def of_metadata(cls, metadata: Mapping[str, str], where: str = "the model") -> HeadDeclaration:
        return cls(image_score_of(metadata, where), smoothing_sigma_of(metadata, where))

    @classmethod
    def of_graph(cls, graph: Any) -> HeadDeclaration:
        """From a family's inference graph (its ``image_score`` and ``smoothing_sigma`` attributes)."""
        return cls.of_metadata(cls.metadata_of_graph(graph), type(graph).__name__)

    @staticmethod
    def metadata_of_graph(graph: Any) -> dict[str, str]:
        """The metadata entries a graph declares; ValueError (one line) for a graph that declares neither."""
        kind, sigma = getattr(graph, "image_score", None), getattr(graph, "smoothing_sigma", None)
        if kind not in IMAGE_SCORES or not isinstance(sigma, (int, float)):
            raise ValueError(
                f"{type(graph).__name__} must declare image_score (one of {IMAGE_SCORES}) and smoothing_sigma"
            )
        return {IMAGE_SCORE_KEY: str(kind), SMOOTHING_SIGMA_KEY: repr(float(sigma))}


def check_cuda_postprocess(kind: str, where: str = "the model") -> None:
    """ValueError (one line) unless the CUDA kernel computes this image score."""
    if kind != KERNEL_IMAGE_SCORE:
        raise ValueError(
            f"{where} scores an image by the {kind} of its map, but the CUDA post-processing kernel computes the "
            f"{KERNEL_IMAGE_SCORE}: use the graph's own head (--postprocess torch, --head graph)"
        )
