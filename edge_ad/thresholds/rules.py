"""The verdict threshold rules. Torch-free: training, import, INT8/fp16 export and the re-derivation of a threshold
on new good images (``edge-ad threshold``) all use these functions, so one rule never exists twice.

Two rules, named in ``score_stats["image"]["rule"]`` with the figures behind the value:

* ``good-sigma`` (the default for training): from good images only, ``max(mean + k std, max)``.
* ``synthetic-f1``: the image-score threshold that maximises F1 on a synthetic validation set (good held-out images
  against NSA anomalies made on them, :mod:`edge_ad.synthesis.validation`). It looks at defects, but only at
  synthetic ones, so it can be re-derived on new good images without a labelled split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edge_ad.evaluation.metrics import f1_max

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "good_statistics",
    "image_score_threshold",
    "rule_statistics",
    "pixel_statistics",
    "synthetic_f1_threshold",
]

GOOD_SIGMA = "good-sigma"
SYNTHETIC_F1 = "synthetic-f1"
RULES = (GOOD_SIGMA, SYNTHETIC_F1)
DEFAULT_RULE = GOOD_SIGMA


DEFAULT_SIGMAS = 3.0  # every family's k in mean + k std unless its training says otherwise


def recorded_sigmas(training: Mapping[str, Any] | None) -> float:
    """The k of a bundle's ``mean + k std`` rule: as its training recorded it, else :data:`DEFAULT_SIGMAS`."""
    recorded = training.get("threshold_sigmas") if training is not None else None
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded)
    return DEFAULT_SIGMAS


def good_statistics(scores: np.ndarray, maps: np.ndarray, sigmas: float) -> dict[str, Any]:
    """The ``good-sigma`` threshold and the map statistics (heat-map levels) of already scored good images."""
    return {"image": image_score_threshold(scores, sigmas), "pixel": pixel_statistics(maps)}


def pixel_statistics(good_maps: np.ndarray) -> dict[str, float]:
    """Quantiles of good images' anomaly maps: the overlay's colour levels."""
    good_maps = np.asarray(good_maps)
    return {
        "good_p50": float(np.quantile(good_maps, 0.5)),
        "good_p99": float(np.quantile(good_maps, 0.99)),
        "good_max": float(good_maps.max()),
    }


def image_score_threshold(scores: np.ndarray, sigmas: float) -> dict[str, Any]:
    """Verdict threshold from good images only: mean + k*std, never below their maximum."""
    scores = np.asarray(scores, dtype=np.float64)
    mean, std = float(scores.mean()), float(scores.std())
    return {
        "threshold": max(mean + sigmas * std, float(scores.max())),
        "rule": GOOD_SIGMA,
        "sigmas": float(sigmas),
        "good_mean": mean,
        "good_std": std,
        "good_max": float(scores.max()),
        "good_count": int(scores.size),
    }


def synthetic_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """The threshold with the best F1 on a synthetic validation set (labels: 0 good, 1 synthetic anomaly).

    :func:`~edge_ad.evaluation.metrics.f1_max` flags ``score >= t``, a verdict flags ``score > threshold``; so the
    stored value lies halfway between ``t`` and the next lower score of the set, which makes both flag the same images
    and keeps a margin on either side. ``good_flagged`` counts the good images it calls anomalous: all of them means the
    model does not separate these anomalies from good images (F1 of flagging everything is ``2p / (1 + p)``, high when
    anomalies outnumber good images), and the caller should refuse the value. Raises ``ValueError`` without both
    classes.
    """
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.all() or not labels.any():
        raise ValueError("the synthetic-f1 threshold needs good images and synthetic anomalies, both")
    f1, flag_at = f1_max(labels, scores)
    below = scores[scores < flag_at]
    threshold = (flag_at + float(below.max())) / 2 if below.size else float(np.nextafter(flag_at, -np.inf))
    flagged = scores > threshold
    tp = int((flagged & labels).sum())
    good = scores[~labels]
    return {
        "threshold": float(threshold),
        "rule": SYNTHETIC_F1,
        "f1": float(f1),
        "precision": tp / max(int(flagged.sum()), 1),
        "recall": tp / int(labels.sum()),
        "good_mean": float(good.mean()),
        "good_std": float(good.std()),
        "good_max": float(good.max()),
        "good_count": int(good.size),
        "good_flagged": int((flagged & ~labels).sum()),
        "anomalous_count": int(labels.sum()),
    }


def refuse_flagging_every_good_image(image: dict[str, Any], context: str, advice: str) -> None:
    """ValueError when a synthetic-f1 cut calls every good image anomalous: the model does not tell the synthetic
    anomalies from good images, so the rule has nothing to offer. ``context`` names the data, ``advice`` the way out."""
    if image["good_flagged"] == image["good_count"]:
        raise ValueError(
            f"synthetic-f1 on {context}: the best F1 ({image['f1']:.3f}) calls every good image anomalous, so the "
            f"model does not tell the synthetic anomalies from the good images; {advice}"
        )


def rule_statistics(
    rule: str,
    good_scores: np.ndarray,
    good_maps: np.ndarray,
    sigmas: float | None = None,
    anomaly_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """``{"image", "pixel"}`` of already scored good images by ``rule``: good-sigma with k ``sigmas``, or
    synthetic-f1 with ``anomaly_scores`` (the synthetic anomalies made on those good images). The map statistics
    always come from the good images. Raises ``ValueError`` when the rule lacks what it needs."""
    if rule == GOOD_SIGMA:
        if sigmas is None:
            raise ValueError("the good-sigma rule needs its k (sigmas)")
        return good_statistics(good_scores, good_maps, sigmas)
    if rule != SYNTHETIC_F1:
        raise ValueError(f"unknown threshold rule {rule!r}; choose {' or '.join(RULES)}")
    if anomaly_scores is None:
        raise ValueError("the synthetic-f1 rule needs the scores of its synthetic anomalies")
    good = np.asarray(good_scores, np.float64).reshape(-1)
    bad = np.asarray(anomaly_scores, np.float64).reshape(-1)
    labels = np.r_[np.zeros(good.size, np.int64), np.ones(bad.size, np.int64)]
    return {"image": synthetic_f1_threshold(labels, np.r_[good, bad]), "pixel": pixel_statistics(good_maps)}
