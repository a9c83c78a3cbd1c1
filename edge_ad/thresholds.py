"""The verdict threshold rule, from good images only. Torch-free: training, import, INT8/fp16 export and the
re-derivation of a threshold on new good images all use this one function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["good_image_statistics", "image_score_threshold"]


def good_image_statistics(
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], batches: Iterable[np.ndarray], sigmas: float
) -> dict[str, Any]:
    """Score good images (never test data) and derive the verdict threshold and map statistics from them."""
    scores, maps = zip(*(predict(batch) for batch in batches), strict=True)
    good_maps = np.concatenate(maps)
    return {
        "image": image_score_threshold(np.concatenate(scores), sigmas),
        "pixel": {
            "good_p50": float(np.quantile(good_maps, 0.5)),
            "good_p99": float(np.quantile(good_maps, 0.99)),
            "good_max": float(good_maps.max()),
        },
    }


def image_score_threshold(scores: np.ndarray, sigmas: float) -> dict[str, float]:
    """Verdict threshold from good images only: mean + k*std, never below their maximum."""
    scores = np.asarray(scores, dtype=np.float64)
    mean, std = float(scores.mean()), float(scores.std())
    return {
        "threshold": max(mean + sigmas * std, float(scores.max())),
        "good_mean": mean,
        "good_std": std,
        "good_max": float(scores.max()),
        "good_count": int(scores.size),
    }
