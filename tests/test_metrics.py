"""edge_ad.evaluation.metrics against scikit-learn and a slow, direct AUPRO reference (scipy labelling)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import f1_score, roc_auc_score

from edge_ad.evaluation.metrics import aupro, auroc, f1_max, image_and_pixel_metrics, pixel_auroc

# --------------------------------------------------------------------------------------------------
# helpers


def _random_masks(rng: np.random.Generator, n: int = 3, size: int = 16) -> np.ndarray:
    """n images with 1-3 random rectangular/elliptic blobs each (blobs may touch or merge)."""
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.integers(1, 4, 2)
            if rng.random() < 0.5:
                masks[i, max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx] = True
            else:
                masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return masks


def _random_maps(rng: np.random.Generator, masks: np.ndarray, decimals: int = 1) -> np.ndarray:
    """Noisy maps that favour anomalous pixels; rounding creates many ties."""
    maps = rng.random(masks.shape) + 0.6 * masks
    return np.round(maps, decimals)


def _ref_partial_area(xs: list[float], ys: list[float], limit: float) -> float:
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (limit - x0)
    return area


def _ref_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3, thresholds: np.ndarray | None = None) -> float:
    """Textbook AUPRO: one pass over the images per threshold."""
    masks = masks.astype(bool)
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks
    if thresholds is None:
        thresholds = np.unique(maps)
    xs, ys = [0.0], [0.0]
    for t in np.sort(thresholds)[::-1]:
        pred = maps >= t
        xs.append((pred & normal).sum() / normal.sum())
        ys.append(float(np.mean([pred[i][r].mean() for i, r in regions])))
    return _ref_partial_area(xs, ys, limit) / limit


def _brute_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    return max(f1_score(labels, scores >= t) for t in np.unique(scores))


# --------------------------------------------------------------------------------------------------
# AUROC / F1-max


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # heavy ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(labels.astype(int), scores.astype(np.float32)) == pytest.approx(
        roc_auc_score(labels, scores.astype(np.float32)), abs=1e-12
    )


def test_auroc_extremes() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auroc(labels, np.ones(4)) == 0.5
    assert auroc(labels, np.array([1, 2, 3, 4], dtype=np.uint8)) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 200))
    labels = rng.random(n) < 0.4
    labels[0] = True
    scores = np.round(rng.random(n) + 0.3 * labels, 1)
    best, thr = f1_max(labels, scores)
    assert best == pytest.approx(_brute_f1(labels, scores), abs=1e-12)
    assert f1_score(labels, scores >= thr) == pytest.approx(best, abs=1e-12)
    assert thr in scores


def test_f1_max_ties_share_threshold() -> None:
    # All samples tie: the only threshold flags everything.
    best, thr = f1_max(np.array([1, 0, 0, 0]), np.zeros(4))
    assert best == pytest.approx(2 * 0.25 / 1.25)
    assert thr == 0.0
    # Perfect separation: F1 = 1 at the lowest anomalous score (highest threshold reaching it).
    best, thr = f1_max(np.array([0, 1, 0, 1]), np.array([0.1, 0.7, 0.3, 0.9]))
    assert (best, thr) == (1.0, 0.7)


# --------------------------------------------------------------------------------------------------
# pixel AUROC


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pixel_auroc_matches_sklearn(dtype: type) -> None:
    rng = np.random.default_rng(7)
    masks = _random_masks(rng, n=6, size=32)
    maps = _random_maps(rng, masks, decimals=2).astype(dtype)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_auroc_accepts_255_masks_and_single_image() -> None:
    rng = np.random.default_rng(8)
    masks = _random_masks(rng, n=1, size=20)
    maps = _random_maps(rng, masks)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks.astype(np.uint8) * 255, maps) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(masks[0], maps[0]) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# AUPRO


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_reference(seed: int, limit: float) -> None:
    rng = np.random.default_rng(200 + seed)
    masks = _random_masks(rng)
    maps = _random_maps(rng, masks, decimals=int(rng.integers(1, 3)))
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(_ref_aupro(masks, maps, limit), abs=1e-10)


def test_aupro_with_normal_images_and_continuous_scores() -> None:
    rng = np.random.default_rng(300)
    masks = _random_masks(rng, n=4)
    masks[1] = False  # a good image only contributes normal pixels
    maps = rng.random(masks.shape) + 0.5 * masks
    assert aupro(masks, maps) == pytest.approx(_ref_aupro(masks, maps), abs=1e-10)


def test_aupro_uses_8_connectivity() -> None:
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # diagonal neighbours: one region with 8-connectivity
    masks[0, 6, 6] = True
    maps = np.zeros((1, 8, 8))
    maps[0, 1, 1] = maps[0, 6, 6] = 1.0  # half of region A, all of region B
    # At the top threshold PRO = (0.5 + 1) / 2 with two regions (it would be 2/3 with three).
    # FPR stays 0 there, then jumps to 1 at threshold 0: the curve is flat at 0.75 up to fpr_limit.
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.75 + 0.25 * 0.3 / 2)
    assert aupro(masks, maps) == pytest.approx(_ref_aupro(masks, maps), abs=1e-12)


def test_aupro_perfect_and_inverted() -> None:
    rng = np.random.default_rng(400)
    masks = _random_masks(rng)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, masks + 0.1 * rng.random(masks.shape)) == pytest.approx(1.0)
    assert aupro(masks, -masks.astype(float)) == pytest.approx(0.0)
    assert aupro(masks, -masks.astype(float) - 0.1 * rng.random(masks.shape)) == pytest.approx(0.0)
    assert aupro(masks, 1.0 - masks - rng.random(masks.shape)) < 0.2  # mostly inverted


@pytest.mark.parametrize("seed", range(3))
def test_aupro_num_thresholds(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    masks = _random_masks(rng)
    maps = rng.random(masks.shape) + 0.4 * masks
    thresholds = np.linspace(maps.min(), maps.max(), 50)
    approx = aupro(masks, maps, num_thresholds=50)
    assert approx == pytest.approx(_ref_aupro(masks, maps, thresholds=thresholds), abs=1e-10)
    assert aupro(masks, maps, num_thresholds=5000) == pytest.approx(aupro(masks, maps), abs=5e-3)


# --------------------------------------------------------------------------------------------------
# combined report


def test_image_and_pixel_metrics() -> None:
    rng = np.random.default_rng(600)
    masks = _random_masks(rng, n=5)
    masks[[0, 3]] = False
    labels = masks.reshape(5, -1).any(axis=1)
    maps = _random_maps(rng, masks)
    image_scores = maps.reshape(5, -1).max(axis=1)
    out = image_and_pixel_metrics(labels, image_scores, masks, maps)
    assert set(out) == {"image_auroc", "image_f1_max", "pixel_auroc", "pixel_f1_max", "aupro"}
    assert out["image_auroc"] == auroc(labels, image_scores)
    assert out["image_f1_max"] == f1_max(labels, image_scores)[0]
    assert out["pixel_auroc"] == pixel_auroc(masks, maps)
    assert out["pixel_f1_max"] == pytest.approx(_brute_f1(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out["aupro"] == aupro(masks, maps)


def test_image_and_pixel_metrics_without_anomalous_pixels() -> None:
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.4])
    masks = np.zeros((4, 8, 8), dtype=bool)
    maps = np.random.default_rng(0).random((4, 8, 8))
    for out in (
        image_and_pixel_metrics(labels, scores, masks, maps),
        image_and_pixel_metrics(labels, scores),
    ):
        assert set(out) == {"image_auroc", "image_f1_max"}
        assert out["image_auroc"] == 1.0


# --------------------------------------------------------------------------------------------------
# errors


def test_errors() -> None:
    ok_labels, ok_scores = np.array([0, 1, 0]), np.array([0.1, 0.5, 0.2])
    with pytest.raises(ValueError, match="one class"):
        auroc(np.ones(3), ok_scores)
    with pytest.raises(ValueError, match="one class"):
        auroc(np.zeros(3, dtype=bool), ok_scores)
    with pytest.raises(ValueError, match="same shape"):
        auroc(ok_labels, ok_scores[:2])
    with pytest.raises(ValueError, match="NaN"):
        auroc(ok_labels, np.array([0.1, np.nan, 0.2]))
    with pytest.raises(ValueError, match="0/1"):
        auroc(np.array([0, 2, 1]), ok_scores)
    with pytest.raises(ValueError, match="empty"):
        auroc(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="anomalous"):
        f1_max(np.zeros(3), ok_scores)
    with pytest.raises(ValueError, match="NaN"):
        f1_max(ok_labels, np.array([0.1, np.inf, 0.2]))

    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="one class"):
        pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match="without anomalous pixels"):
        aupro(masks, maps)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match="same shape"):
        aupro(masks, maps[:1])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        aupro(masks, maps, num_thresholds=1)
    with pytest.raises(ValueError, match="without normal pixels"):
        aupro(np.ones((1, 3, 3), dtype=bool), np.zeros((1, 3, 3)))
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aupro(masks, bad)
    with pytest.raises(ValueError, match="one class"):
        image_and_pixel_metrics(np.ones(3), ok_scores)
