"""Random fields and drawing helpers of the demo dataset (:mod:`edge_ad.datasets.demo`): noise, fractal sums,
antialiased strokes, smooth and jagged paths, soft blobs. numpy + OpenCV only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

# Supersampling factor for antialiased strokes (scratches, cracks, loose threads).
_SS = 4


# --------------------------------------------------------------------------------------------------
# Random fields and drawing helpers
# --------------------------------------------------------------------------------------------------


def _standardise(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit std, so the amplitude of every texture layer is set in one place."""
    a = a - a.mean()
    return (a / (a.std() + 1e-6)).astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Smooth random field whose features are about ``cell_y`` x ``cell_x`` pixels (anisotropic if differ).

    A Gaussian grid is upsampled bicubically with a random sub-cell offset; this is the building block of
    every texture (sums of these at several scales give fBm-like natural variation).
    """
    cell_x = cell_y if cell_x is None else cell_x
    gh = int(h / cell_y) + 4
    gw = int(w / cell_x) + 4
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    big = cv2.resize(grid, (int(gw * cell_x), int(gh * cell_y)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, big.shape[0] - h + 1))
    ox = int(rng.integers(0, big.shape[1] - w + 1))
    return _standardise(big[oy : oy + h, ox : ox + w])


def _fbm(rng: np.random.Generator, h: int, w: int, cells: Sequence[float], gains: Sequence[float]) -> np.ndarray:
    """Sum of noise octaves (cell sizes in pixels, one gain each): natural multi-scale mottling."""
    out = np.zeros((h, w), np.float32)
    for cell, gain in zip(cells, gains, strict=True):
        out += gain * _noise(rng, h, w, max(cell, 1.0))
    return out


def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as float32 arrays."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    return yy, xx


def _stroke_alpha(s: int, pts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Antialiased coverage in [0, 1] of a polyline with a width per point (pixels).

    Drawn at 4x resolution and area-averaged down, so a 1.5 px scratch gets honest partial coverage
    and the mask (coverage > 0.5) follows the visible line.
    """
    canvas = np.zeros((s * _SS, s * _SS), np.uint8)
    fixed = np.round(((pts + 0.5) * _SS - 0.5) * 16).astype(np.int64)  # 4 fractional bits (shift=4)
    for k in range(len(pts) - 1):
        t = max(1, int(round(0.5 * (widths[k] + widths[k + 1]) * _SS)))
        p0 = (int(fixed[k, 0]), int(fixed[k, 1]))
        p1 = (int(fixed[k + 1, 0]), int(fixed[k + 1, 1]))
        cv2.line(canvas, p0, p1, 255, thickness=t, lineType=cv2.LINE_AA, shift=4)
    return cv2.resize(canvas, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _smooth_path(
    rng: np.random.Generator, centre: np.ndarray, length: float, angle: float, bend: float, wobble: float
) -> np.ndarray:
    """Gently curved path (quadratic Bezier plus a low-frequency wobble): a scratch or a loose thread."""
    n = max(16, int(length / 2))
    t = np.linspace(0.0, 1.0, n)[:, None]
    d = np.array([np.cos(angle), np.sin(angle)])
    nrm = np.array([-d[1], d[0]])
    p0 = centre - d * length / 2
    p2 = centre + d * length / 2
    p1 = centre + nrm * bend * length
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    knots = rng.standard_normal(6)
    wob = np.interp(t[:, 0], np.linspace(0, 1, 6), knots) * wobble
    return pts + wob[:, None] * nrm


def _jagged_path(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float) -> np.ndarray:
    """Random walk that keeps its general heading: the zig-zag of a crack."""
    pts = [start.astype(np.float64)]
    ang = heading
    travelled = 0.0
    while travelled < length:
        ang = heading + float(np.clip(ang - heading + rng.normal(0.0, 0.5), -0.8, 0.8))
        seg = step * rng.uniform(0.6, 1.4)
        pts.append(pts[-1] + seg * np.array([np.cos(ang), np.sin(ang)]))
        travelled += seg
    return np.asarray(pts)


def _blob_alpha(
    rng: np.random.Generator,
    s: int,
    centre: np.ndarray,
    radii: tuple[float, float],
    angle: float,
    irregularity: float,
    softness: float,
) -> np.ndarray:
    """Soft irregular blob in [0, 1] (0.5 on its outline): stains, rust, holes, chips.

    The outline is an ellipse displaced by smooth noise; ``softness`` is the edge width relative to the
    radius, so stains fade out instead of ending in a hard contour.
    """
    yy, xx = _grid(s)
    dx, dy = xx - float(centre[0]), yy - float(centre[1])
    ca, sa = math.cos(angle), math.sin(angle)
    u = (ca * dx + sa * dy) / radii[0]
    v = (-sa * dx + ca * dy) / radii[1]
    r = np.sqrt(u * u + v * v)
    cell = max(2.0, 0.6 * min(radii))
    wiggle = 0.7 * _noise(rng, s, s, cell) + 0.3 * _noise(rng, s, s, cell / 2.5)
    f = 1.0 - r + irregularity * wiggle
    a = np.clip(f / softness + 0.5, 0.0, 1.0)
    a = a * a * (3 - 2 * a)  # smoothstep
    return (a * np.clip((1.9 - r) / 0.4, 0.0, 1.0)).astype(np.float32)


def _defect_centre(rng: np.random.Generator, s: int) -> np.ndarray:
    """Defect position in the central region, so a centre crop keeps the defect."""
    return rng.uniform(0.28 * s, 0.72 * s, size=2)


