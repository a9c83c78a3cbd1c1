"""The one loop that runs many images through a model in batches. Torch-free.

Every place that scores a set of images (the detector, evaluation, INT8 calibration's measurements, re-threshold,
the bundle's threshold at the end of training, the checkpoint import, the engine check) calls
:func:`score_batches`, so batching, the empty case and the output types are decided once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from typing import TypeVar

import numpy as np

from edge_ad.data.prefetch import prefetched

__all__ = ["BATCH_SIZE", "Predict", "score_batches"]

BATCH_SIZE = 8  # what every command scores at a time unless told otherwise

Item = TypeVar("Item")
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _stack(chunk: Sequence[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(list(chunk)), dtype=np.float32)


def score_batches(
    predict: Predict,
    items: Sequence[Item],
    to_batch: Callable[[Sequence[Item]], np.ndarray] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], object] | None = None,
    read_ahead: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(image_score[N] float32, anomaly_map[N,H,W] float32)`` of ``items`` scored ``batch_size`` at a time.

    ``predict``: a runtime's ``predict`` (or any function of a normalised NCHW batch). ``to_batch`` turns a chunk of
    items into that batch (default: the items are already preprocessed CHW arrays, stacked). ``on_batch(n)`` is
    called after each chunk with its size (a progress bar's ``advance``). ``read_ahead=1`` builds the next batch in a
    worker thread while ``predict`` runs this one (:func:`edge_ad.data.prefetch.prefetched`: same batches, same
    order, a ``to_batch`` error raised at its chunk); callers whose ``to_batch`` reads files pass it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    make = to_batch or _stack
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    chunks = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
    with closing(prefetched(chunks, make, ahead=read_ahead)) as batches:  # a predict error stops the reader too
        for chunk, batch in zip(chunks, batches, strict=True):
            s, m = predict(batch)
            scores.append(np.asarray(s, dtype=np.float32).reshape(-1))
            maps.append(np.asarray(m, dtype=np.float32))
            if on_batch is not None:
                on_batch(len(chunk))
    if not scores:
        return np.zeros((0,), np.float32), np.zeros((0, 0, 0), np.float32)
    return np.concatenate(scores), np.concatenate(maps)
