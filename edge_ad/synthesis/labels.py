"""Pixel labels of a synthetic anomaly: binary, continuous intensity change, or its logistic (the reference's three).

Why several: the paper's best localisation comes from the logistic label (a faint blend is a faint anomaly), the
binary one is what MVTec ground truth looks like, and the continuous one is the raw change.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_ad.synthesis.params import check_label

__all__ = ["disk_median", "make_label"]

_DISK_RADIUS = 5  # skimage.morphology.disk(5), as the reference filters the intensity label


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def disk_median(values: np.ndarray, radius: int = _DISK_RADIUS) -> np.ndarray:
    """Median over a disk footprint of a non-negative map, edges repeated (what the reference's skimage ``median``
    computes through ``scipy.ndimage.median_filter(mode="nearest")``).

    Why not everywhere: the median of a window is non-zero only when more than half of its values are, so only
    those pixels (found with one box count) are computed; the result is exact.
    """
    if values.ndim != 2 or (values < 0).any():
        raise ValueError("disk_median takes a non-negative H x W map")
    disk = _disk(radius)
    size = int(disk.sum())
    count = cv2.filter2D((values > 0).astype(np.float32), -1, disk.astype(np.float32), borderType=cv2.BORDER_REPLICATE)
    ys, xs = np.nonzero(count > size // 2 + 0.5)
    out = np.zeros(values.shape, dtype=np.float32)
    if ys.size == 0:
        return out
    padded = np.pad(values.astype(np.float32), radius, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, disk.shape)[ys, xs][:, disk]
    out[ys, xs] = np.partition(windows, size // 2, axis=-1)[:, size // 2]
    return out


def make_label(
    original: np.ndarray,
    blended: np.ndarray,
    patch_area: np.ndarray,
    mode: str,
    tol: float,
    logistic: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """``(label float32 H x W in [0, 1], mask uint8 0/1 H x W)``.

    The mask is the reference's: pixels inside the pasted patches whose mean absolute change is over ``tol`` grey
    levels, 5x5 median-filtered. ``continuous`` is the disk-median of the change inside that mask divided by 255;
    ``logistic`` is ``mask / (1 + exp(-k (change - x0)))`` on the same filtered change.
    """
    check_label(mode)
    change = np.abs(original.astype(np.float32) - blended.astype(np.float32)).mean(axis=-1)
    mask = ((patch_area > 0) & (change > tol)).astype(np.uint8)
    mask = cv2.medianBlur(mask, 5)
    if mode == "binary":
        return mask.astype(np.float32), mask
    filtered = disk_median(change * mask)
    if mode == "continuous":
        return np.clip(filtered / 255.0, 0.0, 1.0).astype(np.float32), mask
    k, x0 = logistic
    label = mask / (1.0 + np.exp(-k * (filtered - x0)))
    return label.astype(np.float32), mask
