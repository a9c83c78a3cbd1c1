"""How an INT8 candidate is chosen among the measured (method, recipe) pairs. Torch-free, numpy only.

Three rules, by the data the choice can look at (the calibration report names which one was used):

* labels of an explicit ``--eval-data`` folder: :func:`choose_candidate`;
* the bundle's synthetic validation set (NSA anomalies on its held-out good images): :func:`choose_on_synthetic`,
  the default when the bundle describes one;
* nothing but held-out good images: :func:`choose_without_labels` (closeness to fp32).

Every rule gates on a loss against fp32, then prefers speed, then closeness to fp32. None maximises AUROC: on a few
dozen images a rounding that happens to raise AUROC is noise, not a gain, and fp32 is the model that was validated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_GOOD_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "SAME_SPEED",
    "auroc_losses",
    "choose_candidate",
    "choose_on_synthetic",
    "choose_without_labels",
    "good_fidelity",
    "output_deviation",
    "within_good_tolerance",
]

DEFAULT_TOLERANCE = 0.01  # AUROC points / 100: the accepted INT8 loss of image and of pixel AUROC (labels, synthetic)
# Without labels: the accepted mean change of image scores and of maps on held-out good images, as a share of the
# fp32 maps' range there (see choose_without_labels; measured values in the calibration report).
DEFAULT_GOOD_TOLERANCE = 0.02
SAME_SPEED = 0.01  # recipes whose INT8 share of the MACs differs by less than this count as equally fast


def output_deviation(
    fp32_scores: np.ndarray, fp32_maps: np.ndarray, scores: np.ndarray, maps: np.ndarray
) -> dict[str, float]:
    """How far a model moved the outputs: max/mean absolute change of image scores and of anomaly maps, raw and
    as a fraction of the fp32 range (max - min) of each; ``image_score_mean_per_map_range`` puts the score
    change on the maps' range (an image score is a map's maximum: same units, and a few good images' score
    range is too narrow and too noisy to divide by)."""
    d_score = np.abs(scores.astype(np.float64) - fp32_scores)
    d_map = np.abs(maps.astype(np.float64) - fp32_maps)
    score_range = max(float(np.ptp(fp32_scores)), 1e-12)
    map_range = max(float(np.ptp(fp32_maps)), 1e-12)
    return {
        "image_score_max_abs": float(d_score.max()),
        "image_score_mean_abs": float(d_score.mean()),
        "map_max_abs": float(d_map.max()),
        "map_mean_abs": float(d_map.mean()),
        "fp32_image_score_range": score_range,
        "fp32_map_range": map_range,
        "image_score_mean_rel": float(d_score.mean() / score_range),
        "map_mean_rel": float(d_map.mean() / map_range),
        "image_score_mean_per_map_range": float(d_score.mean() / map_range),
    }


def auroc_losses(fp32: dict[str, float], int8: dict[str, float]) -> dict[str, float]:
    """fp32 minus INT8 (positive: INT8 is worse) for each metric both have."""
    return {k: float(fp32[k] - int8[k]) for k in ("image_auroc", "pixel_auroc", "aupro") if k in fp32 and k in int8}


def _fastest_then_closest(
    passing: Sequence[dict[str, Any]], fidelity: Callable[[dict[str, Any]], float]
) -> dict[str, Any]:
    fastest = max(c["int8_mac_fraction"] for c in passing)
    fast = [c for c in passing if c["int8_mac_fraction"] >= fastest - SAME_SPEED]
    return min(fast, key=lambda c: (fidelity(c), -c["int8_mac_fraction"]))


def _worst_loss(losses: dict[str, float]) -> float:
    return max(losses.get("image_auroc", 0.0), losses.get("pixel_auroc", 0.0))


def choose_candidate(candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The measured choice among (method, recipe) candidates on a labelled set (``--eval-data``).

    1. Gate: image AUROC loss and pixel AUROC loss (fp32 - INT8) both <= ``tolerance``.
    2. Speed: among those that pass, the ones whose INT8 share of the MACs is within :data:`SAME_SPEED` of the
       highest (e.g. quantizing the 1024 -> 1 scoring layer changes nothing measurable in speed).
    3. Fidelity: the smallest mean change of image scores plus maps, relative to the fp32 ranges.
    If nothing passes, the candidate with the smallest worst-case loss is returned (``within_tolerance``
    False in it).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    passing = [c for c in candidates if c["within_tolerance"]]

    def fidelity(c: dict[str, Any]) -> float:
        return c["deviation"]["image_score_mean_rel"] + c["deviation"]["map_mean_rel"]

    if not passing:
        return min(candidates, key=lambda c: (_worst_loss(c["loss"]), fidelity(c)))
    return _fastest_then_closest(passing, fidelity)


def choose_on_synthetic(candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """The choice on the bundle's synthetic validation set (held-out good images and NSA anomalies made on them).

    1. Gate: synthetic image AUROC loss and pixel AUROC loss (fp32 - INT8, ``synthetic_loss``) both <= ``tolerance``.
    2. Speed: the highest INT8 share of the MACs, within :data:`SAME_SPEED`.
    3. Ties: the closest to fp32 on the held-out good images (:func:`good_fidelity`), the images whose scores set
       each artifact's threshold.
    If nothing passes: the smallest worst synthetic loss, then the closest on good images (``within_tolerance``
    False in it).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    passing = [c for c in candidates if c["within_tolerance"]]
    if not passing:
        return min(candidates, key=lambda c: (_worst_loss(c["synthetic_loss"]), good_fidelity(c)))
    return _fastest_then_closest(passing, good_fidelity)


def good_fidelity(candidate: dict[str, Any]) -> float:
    """Mean change of image scores plus mean change of maps on good images, both over the fp32 maps' range."""
    d = candidate["good_deviation"]
    return d["image_score_mean_per_map_range"] + d["map_mean_rel"]


def within_good_tolerance(deviation: dict[str, float], tolerance: float) -> bool:
    return max(deviation["image_score_mean_per_map_range"], deviation["map_mean_rel"]) <= tolerance + 1e-12


def choose_without_labels(
    candidates: Sequence[dict[str, Any]], tolerance: float = DEFAULT_GOOD_TOLERANCE
) -> dict[str, Any]:
    """The choice without any label: how close each candidate stays to fp32 on held-out good images.

    1. Gate: the mean change of image scores and the mean change of anomaly maps, each as a share of the fp32
       maps' range on those images, both <= ``tolerance``.
    2. Speed: as :func:`choose_candidate` (the highest INT8 share of the MACs, within :data:`SAME_SPEED`).
    3. Fidelity: the smallest sum of the two changes (:func:`good_fidelity`).
    If nothing passes, the closest candidate is returned (``within_tolerance`` False in it).
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    passing = [c for c in candidates if c["within_tolerance"]]
    if not passing:
        return min(candidates, key=good_fidelity)
    return _fastest_then_closest(passing, good_fidelity)
