"""Evaluation metrics of the MVTec AD protocol: image/pixel AUROC, F1-max and the standard AUPRO.

Only numpy and OpenCV are used, so evaluating an exported model needs neither torch nor scikit-learn.
Every metric is exact: scores are sorted once and samples with equal score are treated as one
threshold (they are flagged together), which is what ``sklearn.metrics.roc_auc_score`` and
``precision_recall_curve`` do. A sample is flagged anomalous at threshold ``t`` when ``score >= t``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["aupro", "auroc", "f1_max", "image_and_pixel_metrics", "pixel_auroc"]


# --------------------------------------------------------------------------------------------------
# validation


def _as_scores(scores: np.ndarray, name: str) -> np.ndarray:
    """Flattened float scores; keeps float32/float64 as given so ties are exactly the caller's ties."""
    arr = np.asarray(scores)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    elif arr.dtype.itemsize < 4:  # float16: no native sort kernel worth using, widen
        arr = arr.astype(np.float32)
    arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Flattened boolean labels; only bool or 0/1 values are accepted so a wrong array fails loudly."""
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        return arr.reshape(-1)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be bool or 0/1, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    pos = flat == 1
    if not np.all(pos | (flat == 0)):
        raise ValueError(f"{name} must contain only 0/1 (or bool) values")
    return pos


def _check_pair(labels: np.ndarray, scores: np.ndarray, lname: str, sname: str) -> None:
    if np.shape(labels) != np.shape(scores):
        raise ValueError(f"{lname} and {sname} must have the same shape, got {np.shape(labels)} and {np.shape(scores)}")
    if np.size(labels) == 0:
        raise ValueError(f"{lname} is empty")


def _as_masks_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W) boolean masks (nonzero = anomalous, so 0/255 PNG masks work) and flattened scores."""
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    _check_pair(masks, maps, "masks", "maps")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks and maps must have shape (N, H, W) or (H, W), got {masks.shape}")
    return masks != 0, _as_scores(maps, "maps")


def _both_classes(pos: np.ndarray, what: str) -> tuple[int, int]:
    n_pos = int(np.count_nonzero(pos))
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "anomalous" if n_neg == 0 else "normal"
        raise ValueError(f"{what} is undefined when only one class is present (all {only})")
    return n_pos, n_neg


# --------------------------------------------------------------------------------------------------
# shared curve machinery


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices that sort scores from highest to lowest (one argsort, reused by every pixel metric)."""
    return np.argsort(scores)[::-1]


def _group_ends(sorted_desc: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal scores: one threshold per distinct score."""
    change = np.flatnonzero(sorted_desc[1:] != sorted_desc[:-1])
    return np.append(change, sorted_desc.size - 1)


def _clf_curve(
    pos: np.ndarray, scores: np.ndarray, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the true/false positive counts at each (integers, exact)."""
    if order is None:
        order = _descending_order(scores)
    s = scores[order]
    ends = _group_ends(s)
    tps = np.cumsum(pos[order], dtype=np.int64)[ends]
    fps = (ends + 1) - tps
    return s[ends], tps, fps


def _auc_from_counts(tps: np.ndarray, fps: np.ndarray) -> float:
    """Trapezoid ROC area in integer arithmetic: ties become diagonal steps, i.e. half credit."""
    tp = np.concatenate(([0], tps))
    fp = np.concatenate(([0], fps))
    twice_area = int(np.sum(np.diff(fp) * (tp[1:] + tp[:-1])))
    n_pos, n_neg = int(tp[-1]), int(fp[-1])
    return twice_area / (2 * n_pos * n_neg)


def _f1_from_counts(thresholds: np.ndarray, tps: np.ndarray, fps: np.ndarray) -> tuple[float, float]:
    n_pos = int(tps[-1])
    f1 = 2.0 * tps / (tps + fps + n_pos)  # = 2PR / (P + R), without 0/0 at the top thresholds
    best = int(np.argmax(f1))  # first maximum = highest threshold reaching the best F1
    return float(f1[best]), float(thresholds[best])


def _partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) for x in [0, limit]; x is nondecreasing from 0, the curve is
    interpolated linearly at exactly ``limit`` so the result does not depend on where points fall."""
    n = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:n], y[:n]
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1])) / 2.0)
    if n < x.size and xs[-1] < limit:
        x0, y0, x1, y1 = x[n - 1], y[n - 1], x[n], y[n]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_lim) * (limit - x0)
    return area


# --------------------------------------------------------------------------------------------------
# public metrics


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (equal to ``sklearn.metrics.roc_auc_score``): the probability that a random
    anomalous sample scores above a random normal one, ties counting one half.

    ``labels`` are bool or 0/1 (1 = anomalous); raises ValueError on shape mismatch, NaN/inf scores or
    a single class.
    """
    _check_pair(labels, scores, "labels", "scores")
    pos = _as_labels(labels, "labels")
    s = _as_scores(scores, "scores")
    _both_classes(pos, "AUROC")
    _, tps, fps = _clf_curve(pos, s)
    return _auc_from_counts(tps, fps)


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over every threshold and the threshold reaching it (``score >= threshold`` flags).

    Reported next to AUROC because it reflects a usable operating point. Equal scores share a
    threshold; among thresholds with the same best F1 the highest is returned. Needs at least one
    anomalous sample (F1 is 0 everywhere otherwise) and raises ValueError like :func:`auroc`.
    """
    _check_pair(labels, scores, "labels", "scores")
    pos = _as_labels(labels, "labels")
    s = _as_scores(scores, "scores")
    if not pos.any():
        raise ValueError("F1-max is undefined without anomalous samples")
    return _f1_from_counts(*_clf_curve(pos, s))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """AUROC over all pixels of all images pooled together (MVTec protocol), masks vs anomaly maps.

    ``masks`` (N,H,W): nonzero = anomalous; ``maps`` (N,H,W) float. float32 maps stay float32, so
    200 images of 224x224 need a few hundred MB at most (one argsort).
    """
    pos, s = _as_masks_maps(masks, maps)
    pos = pos.reshape(-1)
    _both_classes(pos, "pixel AUROC")
    _, tps, fps = _clf_curve(pos, s)
    return _auc_from_counts(tps, fps)


def _components(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened global component id per pixel (0 = normal; 8-connectivity, numbered across images)
    and the pixel count of each id (index 0 = number of normal pixels)."""
    comp = np.zeros(masks.shape, dtype=np.int32)
    offset = 0
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        if n > 1:
            fg = lab > 0
            comp[i][fg] = lab[fg] + offset
            offset += n - 1
    flat = comp.reshape(-1)
    return flat, np.bincount(flat, minlength=offset + 1)


def _aupro(
    masks: np.ndarray,
    scores: np.ndarray,
    fpr_limit: float,
    num_thresholds: int | None,
    order: np.ndarray | None = None,
) -> float:
    comp, sizes = _components(masks)
    n_regions = sizes.size - 1
    n_normal = int(sizes[0])
    if n_regions == 0:
        raise ValueError("AUPRO is undefined without anomalous pixels in masks")
    if n_normal == 0:
        raise ValueError("AUPRO is undefined without normal pixels in masks")
    # Each pixel of region k adds 1/|k| to that region's overlap; PRO = sum of overlaps / n_regions.
    weight = np.zeros(sizes.size, dtype=np.float64)
    weight[1:] = 1.0 / sizes[1:]

    if num_thresholds is None:
        if order is None:
            order = _descending_order(scores)
        ends = _group_ends(scores[order])
        c = comp[order]
        fp = np.cumsum(c == 0, dtype=np.int64)[ends]
        pro = np.cumsum(weight[c])[ends]
    else:
        lo, hi = float(scores.min()), float(scores.max())
        thr = np.linspace(lo, hi, num_thresholds)
        # bin j holds pixels with thr[j] <= score < thr[j+1]; a pixel counts for every thr[i] <= score.
        b = np.searchsorted(thr, scores, side="right") - 1
        fp = np.cumsum(np.bincount(b[comp == 0], minlength=num_thresholds)[::-1])
        pro = np.cumsum(np.bincount(b, weights=weight[comp], minlength=num_thresholds)[::-1])

    fpr = np.concatenate(([0.0], fp / n_normal))
    pro = np.clip(np.concatenate(([0.0], pro / n_regions)), 0.0, 1.0)  # clip float summation noise
    return _partial_area(fpr, pro, fpr_limit) / fpr_limit


def aupro(
    masks: np.ndarray,
    maps: np.ndarray,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
) -> float:
    """Standard MVTec AUPRO: area under the per-region-overlap curve up to ``fpr_limit``, normalised so
    a perfect detector scores 1.0.

    Unlike pixel AUROC, every defect region weighs the same whatever its size, so small defects count.
    PRO(t) = mean over all 8-connected ground-truth regions of all images of the fraction of the region
    with ``score >= t``; FPR(t) = fraction of all normal pixels with ``score >= t``. The curve starts at
    (0, 0), is integrated with trapezoids and interpolated exactly at ``fpr_limit``.

    ``num_thresholds=None`` uses every distinct score (exact); an integer uses that many evenly spaced
    thresholds from min to max (faster: no full sort, approximate). Raises ValueError without anomalous
    (or without normal) pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2 (or None for exact), got {num_thresholds}")
    m, s = _as_masks_maps(masks, maps)
    return _aupro(m, s, fpr_limit, num_thresholds)


def image_and_pixel_metrics(
    labels: np.ndarray,
    image_scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics of one category: ``image_auroc``, ``image_f1_max`` and, when the masks hold both
    anomalous and normal pixels, ``pixel_auroc``, ``pixel_f1_max`` and ``aupro``.

    Pixel keys are *omitted* (not NaN) when masks/maps are None or the masks have no anomalous pixel,
    so a mean over categories never silently includes a meaningless value. Image metrics need both
    classes (ValueError otherwise). The pixels are sorted once for the three pixel metrics.
    """
    out = {"image_auroc": auroc(labels, image_scores), "image_f1_max": f1_max(labels, image_scores)[0]}
    if masks is None or maps is None:
        if masks is not None or maps is not None:
            raise ValueError("masks and maps must be given together")
        return out
    m, s = _as_masks_maps(masks, maps)
    pos = m.reshape(-1)
    n_pos = int(np.count_nonzero(pos))
    if n_pos == 0 or n_pos == pos.size:
        return out
    order = _descending_order(s)
    curve = _clf_curve(pos, s, order)
    out["pixel_auroc"] = _auc_from_counts(curve[1], curve[2])
    out["pixel_f1_max"] = _f1_from_counts(*curve)[0]
    del curve  # free the per-threshold counts before AUPRO allocates its own
    out["aupro"] = _aupro(m, s, fpr_limit, None, order)
    return out
