"""The one runtime contract every backend implements (torch, onnxruntime, TensorRT). Torch-free."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    """``predict(batch[N,3,H,W] float32, normalised) -> (image_score[N], anomaly_map[N,H,W])``."""

    name: str
    image_size: int

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


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
