"""Anomaly-map post-processing in numpy: the reference the torch/ONNX head and the CUDA kernel are held to.

``patch_scores[N, h, w] -> (image_score[N], anomaly_map[N, H, W])`` with (SIMPLENET_SPEC.md section 8)

* image score = max (SimpleNet) or mean (NSA) of the raw patch-score map (before resize and smoothing);
* anomaly map = bilinear resize to ``(H, W)`` with torch's ``align_corners=False`` convention, then a
  separable Gaussian (sigma 4, truncate 4: 33 taps) with scipy's ``mode="reflect"`` boundary
  (``d c b a | a b c d``, the edge sample repeated; numpy's ``np.pad(mode="symmetric")``).

Both steps are linear and separable, so along each axis "resize, then smooth" is one fixed matrix
``M = G @ R`` (``[H, h]``: :func:`head_matrix`), and the whole map is ``M_y @ P @ M_x^T``: two small
matrix products per image (28 -> 224: 1.6 M multiply-adds, ~0.1 ms) instead of a 224 x 224 resize and two
33-tap passes over it (~7 ms). :func:`postprocess` computes that, in float32 for float32 input (matrices built in
float64, rounded once); it equals the step-by-step form (:func:`resize_bilinear` then :func:`gaussian_smooth`,
kept as the literal reference, float64 accumulation) to below 1e-6 of the map's range (measured 1e-7 to 6e-7),
and the tests hold it to 1e-5 (``HEAD_TOLERANCE`` in tests/test_postprocess.py). The torch/ONNX head
(:mod:`edge_ad.postprocess.torch_ops`) uses the same matrices as two MatMuls.

numpy only (no torch, no scipy), so it runs wherever an exported model runs. The resize is computed with
explicit interpolation matrices rather than ``cv2.resize``: OpenCV's INTER_LINEAR uses the same half-pixel
convention but differs from torch by ~2e-6 (upsampling) to ~1e-5 (downsampling) on float32 maps.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_radius, gaussian_taps, min_map_size

__all__ = [
    "apply_head_matrices",
    "gaussian_smooth",
    "head_matrix",
    "postprocess",
    "resize_bilinear",
    "resize_matrix",
    "smoothing_matrix",
]


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


def smoothing_matrix(size: int, sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    """``[size, size]`` float64 matrix of the 1-D Gaussian with scipy's "reflect" boundary (one reflection).

    Row ``i`` holds the taps of output ``i``, folded back onto the samples they read: tap ``k`` reads sample
    ``reflect(i + k)`` (``-j - 1`` below 0, ``2 size - 1 - j`` past the end), exactly as :func:`gaussian_smooth`
    pads. Raises ``ValueError`` when ``size < radius + 1`` (see :func:`min_map_size`).
    """
    _check_size((size, size), sigma, truncate)
    taps = gaussian_taps(sigma, truncate)
    radius = (len(taps) - 1) // 2
    rows = np.repeat(np.arange(size), len(taps))
    src = rows + np.tile(np.arange(-radius, radius + 1), size)
    src = np.where(src < 0, -src - 1, np.where(src >= size, 2 * size - 1 - src, src))
    matrix = np.zeros((size, size), dtype=np.float64)
    np.add.at(matrix, (rows, src), np.tile(taps, size))
    return matrix


@lru_cache(maxsize=32)
def _head_matrix(in_size: int, out_size: int, sigma: float, truncate: float, dtype: str) -> np.ndarray:
    matrix = resize_matrix(in_size, out_size)
    if sigma > 0:
        matrix = smoothing_matrix(out_size, sigma, truncate) @ matrix
    matrix = matrix.astype(dtype)
    matrix.flags.writeable = False  # shared by every caller through the cache
    return matrix


def head_matrix(
    in_size: int, out_size: int, sigma: float = SIGMA, truncate: float = TRUNCATE, dtype: str = "float64"
) -> np.ndarray:
    """``[out_size, in_size]`` matrix of "bilinear resize, then Gaussian" along one axis: ``G @ R``.

    ``R`` is :func:`resize_matrix`, ``G`` :func:`smoothing_matrix` (left out for ``sigma == 0``). Built in float64,
    then cast to ``dtype``; cached and read-only.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return _head_matrix(int(in_size), int(out_size), float(sigma), float(truncate), str(np.dtype(dtype)))


# OpenBLAS runs a GEMM of at most M * N * K = 4 * 65536 multiply-adds on the calling thread (its default
# GEMM_MULTITHREAD_THRESHOLD); a larger one wakes its worker threads, which on a busy 2-core machine costs a scheduler
# wait (measured 10-50 ms for this head at batch 1, against 0.03-0.3 ms on one thread). The head's products are split
# into row blocks under that size, run as one stacked matmul: same arithmetic, same result to the bit.
_ONE_THREAD_GEMM_MACS = 4 * 65536


def _row_block(rows: int, macs_per_row: int) -> int:
    """Largest divisor of ``rows`` whose block of rows stays a one-thread GEMM (1 for none: an empty batch)."""
    limit = max(1, _ONE_THREAD_GEMM_MACS // max(macs_per_row, 1))
    return next((d for d in range(min(rows, limit), 0, -1) if rows % d == 0), 1)


def apply_head_matrices(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ maps[n] @ cols.T`` for every map of ``[N, h, w]``: ``[N, H, W]`` in the matrices' dtype.

    Both products run as stacks of small GEMMs (blocks of output rows, see ``_ONE_THREAD_GEMM_MACS``).
    """
    n, h, w = maps.shape
    height, width = rows.shape[0], cols.shape[0]
    maps = maps.astype(rows.dtype, copy=False)
    block = _row_block(height, h * w)
    tall = np.matmul(rows.reshape(height // block, block, h), maps[:, None]).reshape(n, height, w)
    block = _row_block(n * height, w * width)
    return np.matmul(tall.reshape(n * height // block, block, w), cols.T).reshape(n, height, width)


def postprocess(
    patch_scores: np.ndarray,
    out_size: tuple[int, int],
    sigma: float = SIGMA,
    truncate: float = TRUNCATE,
    image_score: str = "max",
) -> tuple[np.ndarray, np.ndarray]:
    """``patch_scores[N, h, w]`` (or ``[N, 1, h, w]``) -> ``(image_score[N], anomaly_map[N, H, W])``.

    The image score is the ``image_score`` ("max", SimpleNet's; "mean", NSA's) of the raw patch map; the anomaly
    map is ``gaussian_smooth(resize_bilinear(patch_scores, out_size))``, or only the resize for ``sigma=0``,
    computed as ``M_y @ P @ M_x^T`` with the :func:`head_matrix` of each axis (within 1e-6 of the map's range of
    the step-by-step form). The arguments are what a graph declares
    (:class:`~edge_ad.postprocess.image_score.HeadDeclaration`).
    """
    if image_score not in ("max", "mean"):
        raise ValueError(f"image_score must be max or mean, got {image_score!r}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    arr = _as_maps(patch_scores)
    flat = arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2])  # explicit: an empty batch reshapes too
    scores = flat.max(axis=1) if image_score == "max" else flat.mean(axis=1, dtype=np.float64)
    size = (int(out_size[0]), int(out_size[1])) if sigma == 0 else _check_size(out_size, sigma, truncate)
    dtype = _out_dtype(arr)
    rows = head_matrix(arr.shape[1], size[0], sigma, truncate, dtype)
    cols = head_matrix(arr.shape[2], size[1], sigma, truncate, dtype)
    return scores.astype(dtype, copy=False), apply_head_matrices(arr, rows, cols)
