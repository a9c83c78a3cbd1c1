"""The one runtime contract every backend implements (torch, onnxruntime, TensorRT), and the graph interface the torch
backends run (what every model family's inference graph provides). Torch-free."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    """``predict(batch[N,3,H,W] float32, normalised) -> (image_score[N], anomaly_map[N,H,W])``."""

    name: str
    image_size: int

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class InferenceGraph(Protocol):
    """The fused graph a family exports and every runtime runs (a ``torch.nn.Module``).

    ``forward(images[N,3,H,W] normalised) -> (image_score[N], anomaly_map[N,H,W], patch_scores[N,1,h,w])``;
    ``patch_scores(images)`` is the network up to the head and ``head(patch_scores)`` the post-processing (resize,
    smoothing with ``smoothing_sigma``, the ``image_score`` reduction: ``"max"`` or ``"mean"``).
    ``int8_layout`` names the graph's parts by ONNX node patterns and the INT8 recipes to try.
    """

    image_score: str
    smoothing_sigma: float
    int8_layout: dict[str, Any]

    def __call__(self, images: Any) -> tuple[Any, Any, Any]: ...

    def patch_scores(self, images: Any) -> Any: ...

    def head(self, patch_scores: Any) -> tuple[Any, Any]: ...


@runtime_checkable
class AnomalyModel(Protocol):
    """A family's trainable torch model as the bundle, the runtimes and export see it."""

    family: str
    image_size: int
    config: Any  # the family's config dataclass (``to_dict``/``from_dict``)

    def inference_graph(self) -> InferenceGraph: ...


def check_batch(batch: np.ndarray, image_size: int) -> np.ndarray:
    """Validate a preprocessed batch before it reaches a backend, with an error a user can act on."""
    arr = np.asarray(batch)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2:] != (image_size, image_size):
        raise ValueError(
            f"expected a preprocessed batch of shape [N, 3, {image_size}, {image_size}], got {tuple(arr.shape)}"
        )
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)
