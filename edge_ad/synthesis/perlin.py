"""Perlin-noise masks: the region a blended anomaly covers (DRAEM's masks, which RealNet's SDAS blending reuses).

Why Perlin: thresholded smooth noise gives blobs of every size and outline, from one large stain to many small
specks, without a hand-made shape list. The mask is a pure function of the random generator passed in, so a
seeded generator (:func:`edge_ad.synthesis.example_rng`) gives the same mask every time.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MAX_SCALE", "THRESHOLD", "perlin_mask", "perlin_noise"]

#: Cells per side are ``2**k`` with ``k`` drawn from ``0 .. MAX_SCALE - 1`` per axis (DRAEM / RealNet: 6).
MAX_SCALE = 6
#: Noise above this is anomalous (DRAEM's and RealNet's value).
THRESHOLD = 0.5
#: Fresh noise drawn when the mask came out empty (e.g. no blob fell on the object).
_TRIES = 16


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise in about [-1, 1], float32 ``H x W``, ``cells`` = (rows, columns) of lattice cells."""
    h, w = (int(v) for v in shape)
    ry, rx = (int(v) for v in cells)
    if h < 1 or w < 1 or ry < 1 or rx < 1:
        raise ValueError(f"shape and cells must be positive, got {shape} and {cells}")
    angles = rng.uniform(0.0, 2.0 * np.pi, (ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    ys, xs = np.arange(h) * (ry / h), np.arange(w) * (rx / w)
    yi, xi = ys.astype(np.int64), xs.astype(np.int64)
    yf, xf = (ys - yi)[:, None], (xs - xi)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)

    u, v = _fade(xf), _fade(yf)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (np.sqrt(2.0) * (top * (1 - v) + bottom * v)).astype(np.float32)  # scaled to about [-1, 1]


def _one_mask(shape: tuple[int, int], rng: np.random.Generator, max_scale: int, threshold: float) -> np.ndarray:
    h, w = shape
    cells = (2 ** int(rng.integers(max_scale)), 2 ** int(rng.integers(max_scale)))
    noise = perlin_noise(shape, cells, rng)
    angle = float(rng.uniform(-90.0, 90.0))  # DRAEM rotates the noise, so blobs are not aligned to the lattice
    rot = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    noise = cv2.warpAffine(noise, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return (noise > threshold).astype(np.uint8)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    foreground: np.ndarray | None = None,
    max_scale: int = MAX_SCALE,
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """uint8 0/1 ``H x W`` mask: rotated Perlin noise over ``threshold``, kept only where ``foreground`` is non-zero.

    Noise is drawn again (at most 16 times) while the mask is empty; the last, possibly empty, draw is returned then
    (a foreground of a few pixels may never be hit).
    """
    h, w = (int(v) for v in shape)
    if not 1 <= max_scale <= 10:
        raise ValueError(f"max_scale must be in 1..10, got {max_scale}")
    if foreground is not None and foreground.shape[:2] != (h, w):
        raise ValueError(f"foreground is {foreground.shape[:2]}, the mask {(h, w)}")
    mask = np.zeros((h, w), np.uint8)
    for _ in range(_TRIES):
        mask = _one_mask((h, w), rng, max_scale, threshold)
        if foreground is not None:
            mask &= (foreground != 0).astype(np.uint8)
        if mask.any():
            break
    return mask
