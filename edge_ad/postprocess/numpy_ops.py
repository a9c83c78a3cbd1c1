"""Anomaly-map post-processing in numpy: the reference the torch/ONNX head and the CUDA kernel are held to.

``patch_scores[N, h, w] -> (image_score[N], anomaly_map[N, H, W])`` with (SIMPLENET_SPEC.md section 8)

* image score = max of the raw patch-score map (before resize and smoothing);
* anomaly map = bilinear resize to ``(H, W)`` with torch's ``align_corners=False`` convention, then a
  separable Gaussian (sigma 4, truncate 4: 33 taps) with scipy's ``mode="reflect"`` boundary
  (``d c b a | a b c d``, the edge sample repeated; numpy's ``np.pad(mode="symmetric")``).

numpy only (no torch, no scipy), so it runs wherever an exported model runs. The resize is computed with
explicit interpolation matrices rather than ``cv2.resize``: OpenCV's INTER_LINEAR uses the same half-pixel
convention but differs from torch by ~2e-6 (upsampling) to ~1e-5 (downsampling) on float32 maps.
Accumulation is float64; results are float32 for float32 input.
"""

from __future__ import annotations

import numpy as np

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_radius, gaussian_taps, min_map_size

__all__ = ["gaussian_smooth", "postprocess", "resize_bilinear", "resize_matrix"]


def _as_maps(maps: np.ndarray) -> np.ndarray:
    """Accept ``[N, h, w]`` or ``[N, 1, h, w]``; return ``[N, h, w]``."""
    arr = np.asarray(maps)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"expected maps of shape [N, h, w] or [N, 1, h, w], got {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def _out_dtype(arr: np.ndarray) -> np.dtype:
    return np.result_type(arr.dtype, np.float32)


def _check_size(size: tuple[int, int], sigma: float, truncate: float) -> tuple[int, int]:
    height, width = (int(s) for s in size)
    smallest = min_map_size(sigma, truncate)
    if height < smallest or width < smallest:
        raise ValueError(
            f"anomaly map size {(height, width)} is too small for sigma={sigma}, truncate={truncate}: "
            f"each side must be at least {smallest} (Gaussian radius + 1)"
        )
    return height, width


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float64 matrix of 1-D bilinear weights, torch ``align_corners=False``.

    Source coordinates follow torch's CPU kernel, in float32 as torch computes them:
    ``src = (in/out) * (dst + 0.5) - 0.5``, clamped at 0; neighbours ``i0 = floor(src)``,
    ``i1 = min(i0 + 1, in - 1)``; weights ``1 - l`` and ``l`` with ``l = src - i0``.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in={in_size}, out={out_size}")
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float64)
    lam0 = 1.0 - lam1
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, i0), lam0)
    np.add.at(weights, (rows, i1), lam1)
    return weights


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[N, h, w]`` (or ``[N, 1, h, w]``) maps to ``[N, H, W]``.

    Equal (to float32 rounding) to ``F.interpolate(mode="bilinear", align_corners=False)`` without
    antialiasing, for upsampling and downsampling alike.
    """
    arr = _as_maps(maps)
    height, width = (int(s) for s in size)
    wy = resize_matrix(arr.shape[1], height)  # [H, h]
    wx = resize_matrix(arr.shape[2], width)  # [W, w]
    out = np.matmul(np.matmul(wy, arr.astype(np.float64)), wx.T)  # [N, H, W]
    return out.astype(_out_dtype(arr), copy=False)


def _smooth_axis(arr: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float64 ``arr`` with ``taps`` along ``axis``; scipy "reflect" boundary, one reflection."""
    radius = (len(taps) - 1) // 2
    pad = [(0, 0)] * arr.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(arr, pad, mode="symmetric")  # numpy "symmetric" == scipy "reflect"
    n = arr.shape[axis]
    out = np.zeros_like(arr)
    for k, weight in enumerate(taps):
        out += weight * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def gaussian_smooth(maps: np.ndarray, sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    """Per-image separable Gaussian of ``[N, H, W]`` maps, as scipy's ``gaussian_filter(mode="reflect")``.

    Raises ``ValueError`` when a side is smaller than ``radius + 1`` (see :func:`min_map_size`).
    """
    arr = _as_maps(maps)
    _check_size(arr.shape[1:], sigma, truncate)
    taps = gaussian_taps(sigma, truncate)
    assert len(taps) == 2 * gaussian_radius(sigma, truncate) + 1
    out = _smooth_axis(arr.astype(np.float64), taps, axis=1)
    out = _smooth_axis(out, taps, axis=2)
    return out.astype(_out_dtype(arr), copy=False)


def postprocess(
    patch_scores: np.ndarray,
    out_size: tuple[int, int],
    sigma: float = SIGMA,
    truncate: float = TRUNCATE,
    image_score: str = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """``patch_scores[N, h, w]`` (or ``[N, 1, h, w]``) -> ``(image_score[N], anomaly_map[N, H, W])``.

    The image score is the ``image_score`` ("max", SimpleNet's; "mean", NSA's) of the raw patch map; the anomaly
    map is ``gaussian_smooth(resize_bilinear(patch_scores, out_size))``, or only the resize for ``sigma=0``. The
    arguments are what a graph declares (:class:`~edge_ad.postprocess.image_score.HeadDeclaration`).
    """
    if image_score not in ("max", "mean"):
        raise ValueError(f"image_score must be max or mean, got {image_score!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    arr = _as_maps(patch_scores)
    flat = arr.reshape(arr.shape[0], -1)
    scores = flat.max(axis=1) if image_score == "max" else flat.mean(axis=1, dtype=np.float64)
    if sigma == 0:
        size = (int(out_size[0]), int(out_size[1]))
        return scores.astype(_out_dtype(arr), copy=False), resize_bilinear(arr, size)
    size = _check_size(out_size, sigma, truncate)
    anomaly_map = gaussian_smooth(resize_bilinear(arr, size), sigma, truncate)
    return scores.astype(_out_dtype(arr), copy=False), anomaly_map
