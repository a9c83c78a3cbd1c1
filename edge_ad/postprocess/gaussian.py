"""The 1-D Gaussian kernel of the anomaly-map smoothing, built exactly as scipy builds it. numpy only.

``scipy.ndimage.gaussian_filter(x, sigma, truncate=truncate)`` correlates each axis with
``exp(-x^2 / (2 sigma^2))`` for ``x`` in ``[-radius, radius]``, ``radius = int(truncate * sigma + 0.5)``,
normalised to sum 1. With the SimpleNet constants (sigma 4, truncate 4) that is a 33-tap kernel, radius 16.
Every implementation (numpy, torch/ONNX, CUDA) takes its taps from :func:`gaussian_taps`.
"""

from __future__ import annotations

import numpy as np

SIGMA = 4.0
TRUNCATE = 4.0

__all__ = ["SIGMA", "TRUNCATE", "gaussian_radius", "gaussian_taps", "min_map_size"]


def gaussian_radius(sigma: float = SIGMA, truncate: float = TRUNCATE) -> int:
    """Kernel radius as scipy computes it: ``int(truncate * sigma + 0.5)`` (16 for sigma 4, truncate 4)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if not truncate > 0:
        raise ValueError(f"truncate must be positive, got {truncate}")
    return int(truncate * float(sigma) + 0.5)


def gaussian_taps(sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    """Normalised Gaussian taps, float64, length ``2 * radius + 1``.

    Symmetric, so correlating and convolving with them are the same thing.
    """
    radius = gaussian_radius(sigma, truncate)
    x = np.arange(-radius, radius + 1)
    sigma2 = float(sigma) * float(sigma)
    phi = np.exp(-0.5 / sigma2 * x**2)
    return phi / phi.sum()


def min_map_size(sigma: float = SIGMA, truncate: float = TRUNCATE) -> int:
    """Smallest full-resolution map side every implementation accepts: ``radius + 1`` (17 for sigma 4).

    The "reflect" boundary is implemented as a single reflection of the edge (index ``-i-1`` / ``2n-1-i``),
    which is exact while the radius does not exceed the side. scipy reflects repeatedly for smaller maps;
    edge-ad does not support those and raises ``ValueError`` instead (anomaly maps are image-sized).
    """
    return gaussian_radius(sigma, truncate) + 1
