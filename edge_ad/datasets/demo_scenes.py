"""The demo dataset's scenes (:mod:`edge_ad.datasets.demo`): each category's good surface before lighting, the
camera that finishes it, and the defects drawn on it. numpy + OpenCV only."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_ad.datasets.demo_drawing import (
    _blob_alpha,
    _defect_centre,
    _fbm,
    _grid,
    _jagged_path,
    _noise,
    _smooth_path,
    _standardise,
    _stroke_alpha,
)

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


