"""A small procedural anomaly-detection dataset in MVTec AD layout (numpy + OpenCV only).

Why: the demo, the tests and the docs need a dataset that is always there (no download, no licence
question) and that is still a fair test of a detector trained on good images only. So the good images
vary the way real inspection images do (multi-scale texture, small shifts and rotations of the pattern
or part, lighting gradients, slight colour and exposure changes, optical blur, sensor noise), and the
defects are modest, soft-edged and blended into the surface (a stain keeps the texture under it) rather
than saturated patches that any random feature would flag. A defect's mean intensity stays inside the
range of good pixels, so a per-pixel intensity threshold does not solve the task.

Layout written by :func:`make_demo_dataset`::

    ROOT/<category>/train/good/000.png ...
    ROOT/<category>/test/good/000.png ...
    ROOT/<category>/test/<defect_type>/000.png ...
    ROOT/<category>/ground_truth/<defect_type>/000_mask.png    (uint8 0/255, same H x W as the image)

Every image is drawn from its own random stream derived from ``(seed, category, split, defect type,
index)``, so the same seed gives byte-identical PNGs, and changing one count does not change any other
image. Texture defects are centred in the middle 44 % of each side and the part stays well inside the
frame, so a centre crop (e.g. 256 -> 224) keeps every defect.
"""

from __future__ import annotations

import math
import operator
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from edge_ad.io import atomic_write_bytes

__all__ = [
    "DEFAULT_DEMO_CATEGORY",
    "DEMO_CATEGORIES",
    "DEMO_DEFECT_TYPES",
    "make_demo_dataset",
    "render_demo_sample",
]

# Smallest image side that still leaves room for the weave period, thin defects and the part's bevels.
_MIN_IMAGE_SIZE = 64
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


# --------------------------------------------------------------------------------------------------
# Scenes: a good surface before lighting, plus what a defect needs to know about it
# --------------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """Reflectance of a good sample (float RGB in [0, 1], before illumination and sensor)."""

    albedo: np.ndarray
    extra: dict[str, object] = field(default_factory=dict)


_Defect = Callable[[np.random.Generator, _Scene], tuple[np.ndarray, np.ndarray]]


def _finish(rng: np.random.Generator, albedo: np.ndarray) -> np.ndarray:
    """Camera and light: illumination gradient, exposure, white balance, lens blur, sensor noise -> uint8."""
    s = albedo.shape[0]
    yy, xx = _grid(s)
    gx, gy = (float(g) for g in rng.uniform(-0.06, 0.06, size=2))
    light = 1.0 + gx * (xx / s - 0.5) + gy * (yy / s - 0.5) + 0.025 * _noise(rng, s, s, s / 2.5)
    light *= rng.uniform(0.97, 1.03)  # inspection stations control their lighting: small drift only
    wb = rng.normal(1.0, 0.006, size=3).astype(np.float32)
    img = albedo * light[:, :, None] * wb
    sigma = rng.uniform(0.4, 0.6)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    noise_sd = 0.004 + 0.01 * np.clip(img, 0.0, 1.0)
    img = img + noise_sd * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --- brushed metal (texture) ----------------------------------------------------------------------


def _streak(a: np.ndarray, sigma_x: float) -> np.ndarray:
    """Smear noise along x (three box passes ~ a Gaussian of ``sigma_x``, much cheaper) with a slight
    vertical softening: the long grain left by an abrasive belt."""
    k = max(1, int(round(np.sqrt(4.0 * sigma_x * sigma_x + 1.0))))
    for _ in range(3):
        a = cv2.blur(a, (k, 1), borderType=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(a, (1, 3), sigmaX=0, sigmaY=0.5)


def _brushed_metal(rng: np.random.Generator, s: int) -> _Scene:
    """Brushed steel sheet: long oriented grain at several scales, mottling, anisotropic sheen band."""
    c = int(s * 1.5)
    fine = _streak(rng.standard_normal((c, c), dtype=np.float32), 30.0)
    streaks = _noise(rng, c, c, 2.2, 70.0)
    sparse = (rng.random((c, c)) < 0.0015).astype(np.float32) * rng.standard_normal((c, c), dtype=np.float32)
    sparse = _streak(sparse, 45.0)
    mottle = _fbm(rng, c, c, (c / 3, c / 8), (0.7, 0.3))
    tex = 0.05 * _standardise(fine) + 0.025 * streaks + 0.02 * _standardise(sparse) + 0.02 * mottle
    angle = rng.uniform(-4.0, 4.0)
    shift = rng.uniform(-0.1, 0.1, size=2) * s
    m = cv2.getRotationMatrix2D((c / 2 + shift[0], c / 2 + shift[1]), angle, 1.0)
    m[:, 2] += np.array([s / 2 - c / 2 - shift[0], s / 2 - c / 2 - shift[1]])
    tex = cv2.warpAffine(tex, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    yy, _ = _grid(s)
    band_y = rng.uniform(0.2, 0.8) * s
    sheen = 0.07 * np.exp(-(((yy - band_y) / (0.35 * s)) ** 2))
    grey = rng.uniform(0.5, 0.56) + tex + sheen
    tint = np.array([0.975, 0.995, 1.025], np.float32) * rng.normal(1.0, 0.005, size=3).astype(np.float32)
    return _Scene(albedo=grey[:, :, None] * tint, extra={"grey": grey})


def _metal_scratch(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Thin curved scratch across the grain; catches the light (brighter) or shades (darker)."""
    s = sc.albedo.shape[0]
    length = rng.uniform(0.3, 0.55) * s
    angle = rng.uniform(0.35, np.pi - 0.35)  # never parallel to the grain
    pts = _smooth_path(rng, _defect_centre(rng, s), length, angle, rng.uniform(-0.12, 0.12), 1.5 * s / 256)
    t = np.linspace(0, 1, len(pts))
    widths = max(1.3, rng.uniform(1.4, 2.4) * s / 256) * (0.45 + 0.55 * np.sin(np.pi * t) ** 0.4)
    a = _stroke_alpha(s, pts, widths)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    strength = (0.14 + 0.05 * rng.random()) * (0.8 + 0.2 * np.tanh(_noise(rng, s, s, 12.0)))
    out = sc.albedo + (sign * a * strength)[:, :, None]
    return out, a


def _metal_dent(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Shallow dent: shading from the bump's slope (lit rim / shaded rim) and smeared grain inside."""
    s = sc.albedo.shape[0]
    centre = _defect_centre(rng, s)
    ra, rb = rng.uniform(0.065, 0.1) * s, rng.uniform(0.055, 0.085) * s
    ang = rng.uniform(0, np.pi)
    yy, xx = _grid(s)
    dx, dy = xx - float(centre[0]), yy - float(centre[1])
    u = (math.cos(ang) * dx + math.sin(ang) * dy) / ra
    v = (-math.sin(ang) * dx + math.cos(ang) * dy) / rb
    d = np.sqrt(u * u + v * v) * (1.0 + 0.08 * _noise(rng, s, s, 0.5 * ra))
    h = np.clip(1.0 - d * d, 0.0, 1.0) ** 2
    gy, gx = np.gradient(h)
    light = rng.uniform(-np.pi, np.pi)
    slope = gx * math.cos(light) + gy * math.sin(light)
    shade = slope / (np.abs(slope).max() + 1e-6) * rng.uniform(0.13, 0.19)
    smeared = cv2.GaussianBlur(sc.albedo, (0, 0), sigmaX=2.5)
    inside = np.clip(h * 1.6, 0.0, 1.0)[:, :, None]
    out = sc.albedo * (1 - inside) + smeared * inside
    out = out * (1.0 - 0.05 * h)[:, :, None] + shade[:, :, None]
    a = np.clip((1.0 - d) / 0.2, 0.0, 1.0).astype(np.float32)
    return out, a


def _metal_stain(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Dried coolant / oil / rust stain: soft irregular tint, slightly darker rim; the grain stays visible."""
    s = sc.albedo.shape[0]
    r = rng.uniform(0.08, 0.125) * s
    a = _blob_alpha(rng, s, _defect_centre(rng, s), (r, r * rng.uniform(0.6, 1.0)), rng.uniform(0, np.pi), 0.3, 0.3)
    kind = int(rng.integers(0, 3))
    tint = (
        np.array([1.0, 0.87, 0.75]) * 0.95,  # rust-brown
        np.array([0.86, 0.83, 0.8]),  # oil film
        np.array([1.1, 1.09, 1.06]),  # whitish coolant residue
    )[kind].astype(np.float32)
    rim = 4.0 * a * (1.0 - a)
    k = np.clip(0.85 * a + 0.35 * rim, 0.0, 1.0)[:, :, None]
    blotch = 1.0 + 0.04 * _noise(rng, s, s, 6.0)[:, :, None]
    base = sc.albedo
    if kind == 2:  # a dried film evens out the grain under it (still faintly visible)
        filmed = cv2.GaussianBlur(base, (0, 0), sigmaX=2.0)
        base = base * (1 - 0.6 * k) + filmed * (0.6 * k)
    out = base * (1 - k) + base * tint * blotch * k
    return out, a


# --- woven fabric (texture) -----------------------------------------------------------------------


def _woven_fabric(rng: np.random.Generator, s: int) -> _Scene:
    """Plain-weave technical fabric: twisted yarns with fibre noise, jittered threads, per-yarn shade."""
    ss = 1.5  # supersampled then area-averaged, so yarn edges are antialiased
    n = int(round(s * ss))
    period = max(4.0, s / 30.0) * ss * rng.uniform(0.98, 1.02)
    yy, xx = _grid(n)
    ang = math.radians(rng.uniform(-2.5, 2.5))
    ox, oy = (float(o) for o in rng.uniform(0, 2 * period, size=2))
    xr = math.cos(ang) * xx + math.sin(ang) * yy + ox
    yr = -math.sin(ang) * xx + math.cos(ang) * yy + oy
    jitter = 0.09 * period
    xr += jitter * _noise(rng, n, n, 6 * period, 2.5 * period)
    yr += jitter * _noise(rng, n, n, 2.5 * period, 6 * period)
    u, v = xr / period, yr / period
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    iu_i, iv_i = iu.astype(np.int64), iv.astype(np.int64)
    warp_top = ((iu_i + iv_i) & 1) == 0

    fa = np.where(warp_top, fu, fv)  # coordinate across the yarn that is on top here
    fl = np.where(warp_top, fv, fu)  # and along it
    across = np.sqrt(np.clip(1.0 - ((fa - 0.5) * (1.0 / 0.47)) ** 2, 0.0, 1.0))
    h = across * (0.6 + 0.4 * np.sin(np.float32(np.pi) * fl))  # yarns dip under their neighbours at cell ends
    twist = 0.07 * np.sin(np.float32(2 * np.pi) * (3.0 * fl + 1.3 * fa))  # S-twist of the ply
    fib_w = _noise(rng, n, n, 7.0, 0.8)  # fibres run along the warp (vertical)
    fib_f = _noise(rng, n, n, 0.8, 7.0)  # and along the weft (horizontal)
    fib = np.where(warp_top, fib_w, fib_f)
    yarn_w = rng.normal(0.0, 0.035, size=64).astype(np.float32)
    yarn_f = rng.normal(0.0, 0.035, size=64).astype(np.float32)
    yarn = np.where(warp_top, yarn_w[iu_i & 63], yarn_f[iv_i & 63])
    side = 0.5 - fa  # lit from the upper left: that flank of each yarn is brighter
    shade = (0.45 + 0.55 * h**0.6) * (1.0 + 0.18 * side * h + 0.06 * fib + twist * h + yarn)
    shade = cv2.resize(shade.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
    h_small = cv2.resize(h.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
    colour = np.array([0.66, 0.63, 0.56], np.float32) * rng.normal(1.0, 0.007, size=3).astype(np.float32)
    mottle = 1.0 + 0.03 * _fbm(rng, s, s, (s / 2.5, s / 7), (0.7, 0.3))
    albedo = shade[:, :, None] * colour * mottle[:, :, None]
    return _Scene(albedo=albedo, extra={"height": h_small})


def _fabric_hole(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Torn hole: broken yarn remnants across it, loosened rim, the shadowed support visible through it."""
    s = sc.albedo.shape[0]
    r = rng.uniform(0.065, 0.09) * s
    centre = _defect_centre(rng, s)
    a = _blob_alpha(rng, s, centre, (r, r * rng.uniform(0.65, 1.0)), rng.uniform(0, np.pi), 0.25, 0.12)
    k = s / 256.0
    strands = np.maximum(_noise(rng, s, s, 9.0 * k, 1.0 * k), _noise(rng, s, s, 1.0 * k, 9.0 * k))
    strand = np.clip((strands - 1.1) / 0.5, 0.0, 1.0)  # sparse thin yarn remnants along warp / weft
    depth = np.clip(2.0 * cv2.GaussianBlur(a, (0, 0), sigmaX=2.5 * k) - 0.6, 0.0, 1.0)
    level = rng.uniform(0.36, 0.56)  # backing under the fabric: from darker to about the fabric's own level
    support = (level + 0.03 * _noise(rng, s, s, 8.0 * k)) * (0.7 + 0.3 * depth)
    support_rgb = support[:, :, None] * np.array([0.96, 0.98, 1.0], np.float32)
    rim = np.clip(4.0 * a * (1.0 - a), 0, 1)[:, :, None]  # loosened yarn around the rim, slightly lighter
    out = sc.albedo * (1.0 + 0.1 * rim)
    see_through = (a * (1.0 - 0.85 * strand))[:, :, None]
    out = out * (1 - see_through) + support_rgb * see_through
    return out, a


def _fabric_color(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Dye or oil spot soaked into the weave: tinted, stronger on yarn crowns, weave still visible."""
    s = sc.albedo.shape[0]
    r = rng.uniform(0.08, 0.12) * s
    a = _blob_alpha(rng, s, _defect_centre(rng, s), (r, r * rng.uniform(0.6, 1.0)), rng.uniform(0, np.pi), 0.3, 0.35)
    tints = (
        np.array([0.86, 0.8, 0.68]),  # machine oil
        np.array([0.84, 0.9, 1.08]),  # blue dye
        np.array([1.06, 0.85, 0.78]),  # red-brown dye
    )
    tint = tints[int(rng.integers(0, len(tints)))].astype(np.float32)
    h = sc.extra["height"]
    assert isinstance(h, np.ndarray)
    k = (a * (0.8 + 0.2 * h))[:, :, None]
    out = sc.albedo * (1 - k) + sc.albedo * tint * k
    return out, a


def _fabric_thread(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Loose foreign yarn lying on the fabric: rounded shading, fibre noise, a faint cast shadow."""
    s = sc.albedo.shape[0]
    length = rng.uniform(0.3, 0.5) * s
    pts = _smooth_path(
        rng, _defect_centre(rng, s), length, rng.uniform(0, np.pi), rng.uniform(-0.2, 0.2), 3.0 * s / 256
    )
    w = max(2.0, rng.uniform(4.2, 5.4) * s / 256)  # about one yarn diameter
    widths = np.full(len(pts), w)
    a = _stroke_alpha(s, pts, widths)
    hi = _stroke_alpha(s, pts - 0.25 * w, widths * 0.35)
    off = np.array([1.0, 1.5]) * s / 256
    shadow = cv2.GaussianBlur(_stroke_alpha(s, pts + off, widths), (0, 0), sigmaX=1.2 * s / 256)
    base = sc.albedo.reshape(-1, 3).mean(axis=0)
    tone = base * float(rng.choice([0.72, 1.22])) * np.array([1.0, 0.98, 0.95], np.float32)
    fib = 1.0 + 0.08 * _noise(rng, s, s, 1.0, 1.0)
    yarn = tone * ((0.78 + 0.3 * hi) * fib)[:, :, None]
    out = sc.albedo * (1.0 - 0.22 * shadow)[:, :, None]
    out = out * (1 - a[:, :, None]) + yarn * a[:, :, None]
    return out, a


# --- washer (object) ------------------------------------------------------------------------------


def _washer(rng: np.random.Generator, s: int) -> _Scene:
    """Turned steel washer on a dark matte conveyor: lathe rings, anisotropic sheen, bevels, drop shadow."""
    k = s / 256.0
    cx, cy = (s / 2 + float(o) * s for o in rng.uniform(-0.04, 0.04, size=2))
    ro = 0.36 * s * rng.uniform(0.985, 1.015)
    ri = ro * rng.uniform(0.47, 0.49)
    yy, xx = _grid(s)
    dx, dy = xx - cx, yy - cy
    r = np.sqrt(dx * dx + dy * dy)
    th = np.arctan2(dy, dx)
    cov = (np.clip(ro - r + 0.5, 0, 1) * np.clip(r - ri + 0.5, 0, 1)).astype(np.float32)

    radius_axis = np.arange(0.0, s, 0.25, dtype=np.float32)
    fine = cv2.GaussianBlur(rng.standard_normal((1, radius_axis.size), dtype=np.float32), (0, 0), 1.2).ravel()
    mid = cv2.GaussianBlur(rng.standard_normal((1, radius_axis.size), dtype=np.float32), (0, 0), 18.0).ravel()
    lathe = 0.03 * _standardise(np.interp(r, radius_axis, fine)) + 0.025 * _standardise(np.interp(r, radius_axis, mid))
    phi_light = math.radians(-135.0 + rng.uniform(-6, 6))
    sheen = 0.1 * np.cos(2 * (th - phi_light - np.pi / 2))
    ang_noise = 0.02 * _noise(rng, s, s, 30 * k)
    bw = 2.4 * k
    w_out = np.clip(1.0 - (ro - r) / bw, 0, 1)
    w_in = np.clip(1.0 - (r - ri) / bw, 0, 1)
    facing = np.cos(th - phi_light)
    bevel = 0.22 * (w_out - w_in) * facing - 0.05 * (w_out + w_in)
    grey = rng.uniform(0.56, 0.59) + lathe + sheen + ang_noise + bevel
    metal = grey[:, :, None] * (np.array([0.98, 0.995, 1.02], np.float32) * rng.normal(1, 0.006, 3).astype(np.float32))

    bg = 0.24 + _fbm(rng, s, s, (s / 3, 14 * k, 3 * k), (0.015, 0.012, 0.008))
    bg = bg[:, :, None] * np.array([0.94, 0.99, 1.04], np.float32)
    shadow_shift = np.array([2.5, 3.5]) * k
    scene = _Scene(albedo=np.empty(0), extra={})
    scene.extra.update(
        metal=metal.astype(np.float32),
        bg=bg.astype(np.float32),
        cov=cov,
        geom=(cx, cy, ro, ri),
        r=r,
        th=th,
        shadow_shift=shadow_shift,
        shadow_sigma=3.0 * k,
    )
    scene.albedo = _washer_compose(scene, cov)
    return scene


def _washer_compose(sc: _Scene, cov: np.ndarray, metal: np.ndarray | None = None) -> np.ndarray:
    """Part over background with a soft drop shadow cast by the (possibly damaged) part outline."""
    s = cov.shape[0]
    shift = sc.extra["shadow_shift"]
    sigma = sc.extra["shadow_sigma"]
    bg = sc.extra["bg"]
    assert isinstance(shift, np.ndarray) and isinstance(sigma, float) and isinstance(bg, np.ndarray)
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    shadow = cv2.warpAffine(cov, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigmaX=sigma)
    ground = bg * (1.0 - 0.5 * shadow)[:, :, None]
    part = sc.extra["metal"] if metal is None else metal
    assert isinstance(part, np.ndarray)
    return ground * (1 - cov[:, :, None]) + part * cov[:, :, None]


def _washer_arrays(sc: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """Typed access to the washer scene's arrays (cov, metal, r, theta, geometry)."""
    cov, metal, r, th, geom = (sc.extra[key] for key in ("cov", "metal", "r", "th", "geom"))
    assert isinstance(cov, np.ndarray) and isinstance(metal, np.ndarray)
    assert isinstance(r, np.ndarray) and isinstance(th, np.ndarray) and isinstance(geom, tuple)
    return cov, metal, r, th, geom


def _washer_crack(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Fatigue crack running from the bore or the rim across the face, with a side branch."""
    s = sc.albedo.shape[0]
    k = s / 256.0
    cov, metal, _, _, (cx, cy, ro, ri) = _washer_arrays(sc)
    a0 = rng.uniform(-np.pi, np.pi)
    from_inside = rng.random() < 0.6
    r0 = ri + 0.5 if from_inside else ro - 0.5
    start = np.array([cx + r0 * np.cos(a0), cy + r0 * np.sin(a0)])
    heading = a0 + (0.0 if from_inside else np.pi) + rng.uniform(-0.5, 0.5)
    length = rng.uniform(0.9, 1.3) * (ro - ri)
    main = _jagged_path(rng, start, heading, length, max(1.0, 3.0 * k))
    w = max(1.3, rng.uniform(1.6, 2.3) * k)
    t = np.linspace(0, 1, len(main))
    a = _stroke_alpha(s, main, w * (1.0 - 0.55 * t))
    j = int(rng.integers(len(main) // 3, max(len(main) // 3 + 1, 2 * len(main) // 3)))
    branch = _jagged_path(
        rng, main[j], heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0), 0.4 * length, max(1.0, 2.5 * k)
    )
    tb = np.linspace(0, 1, len(branch))
    a = np.maximum(a, _stroke_alpha(s, branch, w * (0.7 - 0.4 * tb)))
    inner = np.clip(cv2.erode(cov, np.ones((3, 3), np.uint8)), 0, 1)
    a = (a * inner).astype(np.float32)
    halo = cv2.GaussianBlur(a, (0, 0), sigmaX=1.5 * k)
    dark = np.clip(0.6 * a + 0.15 * halo, 0, 0.7)
    damaged = metal * (1.0 - dark)[:, :, None]
    return _washer_compose(sc, cov, damaged), a


def _washer_missing_piece(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Chipped edge: a rough bite out of the rim (or bore) with a dull fracture face; the shadow follows."""
    s = sc.albedo.shape[0]
    k = s / 256.0
    cov, metal, _, _, (cx, cy, ro, ri) = _washer_arrays(sc)
    ang = rng.uniform(-np.pi, np.pi)
    outer = rng.random() < 0.75
    rb = rng.uniform(0.09, 0.13) * s if outer else rng.uniform(0.07, 0.09) * s
    rc = ro + rng.uniform(-0.1, 0.25) * rb if outer else ri - rng.uniform(-0.1, 0.2) * rb
    centre = np.array([cx + rc * np.cos(ang), cy + rc * np.sin(ang)])
    bite = _blob_alpha(rng, s, centre, (rb, rb * rng.uniform(0.7, 1.0)), rng.uniform(0, np.pi), 0.12, 1.0 / rb)
    new_cov = (cov * (1.0 - bite)).astype(np.float32)
    face = np.clip(bite * 6.0, 0, 1) * (1.0 - bite)  # a narrow band along the break
    rough = 0.75 + 0.1 * _noise(rng, s, s, 1.5 * k)
    damaged = metal * (1.0 - face + face * rough)[:, :, None]
    a = np.clip(cov - new_cov, 0.0, 1.0).astype(np.float32)
    return _washer_compose(sc, new_cov, damaged), a


def _washer_rust(rng: np.random.Generator, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Rust spot on the face: orange-brown, pitted, soft-edged; the lathe rings show through."""
    s = sc.albedo.shape[0]
    cov, metal, _, _, (cx, cy, ro, ri) = _washer_arrays(sc)
    ang = rng.uniform(-np.pi, np.pi)
    rr = 0.5 * (ro + ri) + rng.uniform(-0.15, 0.15) * (ro - ri)
    centre = np.array([cx + rr * np.cos(ang), cy + rr * np.sin(ang)])
    rad = rng.uniform(0.065, 0.09) * s
    a = _blob_alpha(rng, s, centre, (rad, rad * rng.uniform(0.6, 1.0)), rng.uniform(0, np.pi), 0.35, 0.3)
    a = (a * np.clip(cv2.erode(cov, np.ones((3, 3), np.uint8)), 0, 1)).astype(np.float32)
    k = s / 256.0
    pits = 1.0 + 0.07 * _noise(rng, s, s, 1.8 * k) + 0.05 * _noise(rng, s, s, 6.0 * k)
    tint = np.array([1.0, 0.8, 0.63], np.float32) * 0.88
    density = 0.7 + 0.3 * np.tanh(_noise(rng, s, s, 9.0 * k))  # rust is blotchy, not a uniform coat
    kk = (np.clip(1.15 * a, 0, 1) * density)[:, :, None]
    corroded = cv2.GaussianBlur(metal, (0, 0), sigmaX=1.5 * k)  # the corrosion layer hides the lathe rings
    damaged = metal * (1 - kk) + corroded * tint * pits[:, :, None] * kk
    return _washer_compose(sc, cov, damaged), a


# --------------------------------------------------------------------------------------------------
# Registry and public API
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Category:
    render: Callable[[np.random.Generator, int], _Scene]
    defects: Mapping[str, _Defect]


_CATEGORIES: dict[str, _Category] = {
    "brushed_metal": _Category(_brushed_metal, {"scratch": _metal_scratch, "dent": _metal_dent, "stain": _metal_stain}),
    "woven_fabric": _Category(_woven_fabric, {"hole": _fabric_hole, "color": _fabric_color, "thread": _fabric_thread}),
    "washer": _Category(
        _washer, {"crack": _washer_crack, "missing_piece": _washer_missing_piece, "rust": _washer_rust}
    ),
}

#: Names of the procedural categories: two textures and one object on a background.
DEMO_CATEGORIES: tuple[str, ...] = tuple(_CATEGORIES)
#: The category the demo uses when none is given (a texture: defects can sit anywhere on it).
DEFAULT_DEMO_CATEGORY: str = "brushed_metal"
#: Defect types per category (the folder names under ``test/`` and ``ground_truth/``).
DEMO_DEFECT_TYPES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: tuple(cat.defects) for name, cat in _CATEGORIES.items()}
)

_SPLITS = {"train": 0, "test": 1}


def _check_category(name: str) -> _Category:
    """Look up a category, naming the valid ones in the error (a typo should not fail silently)."""
    if name not in _CATEGORIES:
        raise ValueError(f"unknown demo category {name!r}; choose from {', '.join(DEMO_CATEGORIES)}")
    return _CATEGORIES[name]


def _as_int(value: object, what: str) -> int:
    """Integers only (no floats, no bools), reported as ValueError like every other bad argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_size(image_size: int) -> int:
    size = _as_int(image_size, "image_size")
    if size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {size}")
    return size


def _rng(seed: int, category: str, split: str, defect_type: str, index: int) -> np.random.Generator:
    """Independent stream per image: same seed -> same image, whatever the other counts are."""
    key = [
        operator.index(seed) % 2**64,
        zlib.crc32(category.encode()),
        _SPLITS[split],
        zlib.crc32(defect_type.encode()),
        index,
    ]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_demo_sample(
    category: str,
    defect_type: str = "good",
    *,
    split: str = "test",
    index: int = 0,
    seed: int = 0,
    image_size: int = 256,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one sample in memory: ``(RGB uint8 H x W x 3, mask uint8 0/255 or None for good)``.

    It is exactly the image :func:`make_demo_dataset` writes as ``<split>/<defect_type>/<index>.png``
    with the same seed, so notebooks and tests can look at a sample without touching the disk.
    """
    cat = _check_category(category)
    size = _check_size(image_size)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if defect_type != "good" and defect_type not in cat.defects:
        kinds = ", ".join(("good", *cat.defects))
        raise ValueError(f"unknown defect type {defect_type!r} for {category!r}; choose from {kinds}")
    if split == "train" and defect_type != "good":
        raise ValueError("the train split holds only good images (defect_type='good')")
    _as_int(seed, "seed")
    idx = _as_int(index, "index")
    if idx < 0:
        raise ValueError(f"index must be >= 0, got {idx}")
    rng = _rng(seed, category, split, defect_type, idx)
    scene = cat.render(rng, size)
    if defect_type == "good":
        return _finish(rng, scene.albedo), None
    for _ in range(20):  # a defect is redrawn (deterministically) in the rare case nothing reaches alpha 0.5
        albedo, alpha = cat.defects[defect_type](rng, scene)
        mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
        if mask.any():
            return _finish(rng, albedo.astype(np.float32)), mask
    raise RuntimeError(f"could not draw a visible {defect_type!r} defect for {category!r}")  # pragma: no cover


def _png(img: np.ndarray) -> bytes:
    """PNG bytes of an RGB or single-channel uint8 image (OpenCV writes BGR, so convert first)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - encoding a valid uint8 array does not fail
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


_NUMBERED = re.compile(r"^(\d+)(_mask)?\.png$")


def _remove_stale(folder: Path, count: int) -> None:
    """Delete numbered PNGs beyond ``count`` left by an earlier, larger run (they would skew counts)."""
    for p in folder.iterdir():
        m = _NUMBERED.match(p.name)
        if m and int(m.group(1)) >= count and p.is_file():
            p.unlink()


def _write_split(folder: Path, count: int, write_one: Callable[[int], None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder, count)
    for i in range(count):
        write_one(i)


def make_demo_dataset(
    root: str | os.PathLike[str],
    categories: Sequence[str] | None = None,
    *,
    seed: int = 0,
    n_train: int = 60,
    n_test_good: int = 16,
    n_test_per_defect: int = 8,
    image_size: int = 256,
) -> list[Path]:
    """Write the procedural dataset under ``root`` in MVTec AD layout; return the category folders.

    ``categories`` defaults to all of :data:`DEMO_CATEGORIES` (a single name as a string is accepted).
    Deterministic in ``seed``; every PNG is written atomically (temporary file + ``os.replace``), and
    numbered PNGs left over from a larger earlier run in the same folders are removed. Raises
    ValueError for an unknown category, a count < 1 or an image size below 64.
    """
    if categories is None:
        names: list[str] = list(DEMO_CATEGORIES)
    elif isinstance(categories, str):
        names = [categories]
    else:
        names = list(dict.fromkeys(categories))
    if not names:
        raise ValueError("categories is empty; pass None for all demo categories")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"category names must be strings, got {name!r}")
        _check_category(name)
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
    for key, value in counts.items():
        if _as_int(value, key) < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    size = _check_size(image_size)
    _as_int(seed, "seed")

    base = Path(root)
    out: list[Path] = []
    for name in names:
        cat_dir = base / name

        def write(
            split: str, kind: str, folder: Path, mask_folder: Path | None, name: str = name
        ) -> Callable[[int], None]:
            def one(i: int) -> None:
                img, mask = render_demo_sample(name, kind, split=split, index=i, seed=seed, image_size=size)
                atomic_write_bytes(folder / f"{i:03d}.png", _png(img))
                if mask_folder is not None and mask is not None:
                    atomic_write_bytes(mask_folder / f"{i:03d}_mask.png", _png(mask))

            return one

        train_good = cat_dir / "train" / "good"
        _write_split(train_good, int(n_train), write("train", "good", train_good, None))
        test_good = cat_dir / "test" / "good"
        _write_split(test_good, int(n_test_good), write("test", "good", test_good, None))
        for kind in _CATEGORIES[name].defects:
            img_dir = cat_dir / "test" / kind
            gt_dir = cat_dir / "ground_truth" / kind
            gt_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale(gt_dir, int(n_test_per_defect))
            _write_split(img_dir, int(n_test_per_defect), write("test", kind, img_dir, gt_dir))
        out.append(cat_dir)
    return out
