"""Natural synthetic anomalies (Schlueter et al. 2021): patches of one good image, rescaled and Poisson-blended into
another, as the reference's ``patch_ex`` draws them.

Why this shape: a training loop calls :func:`synthesize` per image with its own ``numpy.random.Generator``, and a
validation set calls it with a generator seeded per example, so the same seed gives the same pixels (OpenCV's
``seamlessClone`` is deterministic). Departures from the reference, each because its code disagrees with its intent:

- ``seamlessClone`` places the *bounding box of the mask's non-zero pixels* at the given centre; the centre is
  computed from that box, so the pixels change exactly where the label says (the reference is one pixel off for odd
  widths);
- the label area of several patches is their union (the reference overwrites the first patch's box with the next);
- a patch is never taken from the destination image itself (the caller passes another image; see ``generator``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_ad.synthesis.foreground import foreground_mask
from edge_ad.synthesis.labels import make_label
from edge_ad.synthesis.params import AUTO, NsaParams

__all__ = ["Patch", "Synthetic", "synthesize"]

_ATTEMPTS = 200  # the reference's tries for a source patch and for a destination place
_MIN_MASK_PIXELS = 50  # seamlessClone fails on smaller masks (the reference's guard)
_CLONE = {"normal": cv2.NORMAL_CLONE, "mixed": cv2.MIXED_CLONE}


@dataclass(frozen=True)
class Patch:
    """One blended patch: where it was cut (source) and where it went (destination), ``(y, x, height, width)``."""

    source_box: tuple[int, int, int, int]
    dest_box: tuple[int, int, int, int]
    scale: float


@dataclass
class Synthetic:
    """A synthetic anomalous image: RGB uint8 ``H x W x 3``, label float32 ``H x W`` in [0, 1], mask uint8 0/1."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    patches: list[Patch] = field(default_factory=list)
    source_index: int | None = None

    @property
    def is_anomalous(self) -> bool:
        return bool(self.mask.any())


def _check_image(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{what} must be a uint8 H x W x 3 RGB array, got {got}")
    if min(img.shape[:2]) < 32:
        raise ValueError(f"{what} is {img.shape[1]}x{img.shape[0]}: NSA needs at least 32 pixels a side")


def _half_width(rng: np.random.Generator, side: int, lo: int, hi: int, gamma: tuple[float, float, float]) -> int:
    shape, scale, offset = gamma
    return int(np.clip((offset + rng.gamma(shape, scale)) * side, lo, hi))


def _one_patch(
    canvas: np.ndarray,
    source: np.ndarray,
    dest_fg: np.ndarray | None,
    src_fg: np.ndarray | None,
    p: NsaParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, Patch] | None:
    """Blend one patch into ``canvas``; ``(new canvas, label area H x W, Patch)`` or None when none fits."""
    H, W = canvas.shape[:2]
    (lo_y, hi_y), (lo_x, hi_x) = p.width_bounds
    min_y, max_y = round(lo_y * H), round(hi_y * H)
    min_x, max_x = round(lo_x * W), round(hi_x * W)
    hw_y = _half_width(rng, H, min_y, max_y, p.gamma)
    hw_x = _half_width(rng, W, min_x, max_x, p.gamma)

    # source patch: centre anywhere (the box is clipped at the border), mostly object when there is a background
    for _ in range(_ATTEMPTS):
        cy, cx = int(rng.integers(min_y, H - min_y)), int(rng.integers(min_x, W - min_x))
        y0, y1 = max(0, cy - hw_y), min(H, cy + hw_y)
        x0, x1 = max(0, cx - hw_x), min(W, cx + hw_x)
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        if src_fg is None or src_fg[y0:y1, x0:x1].mean() > p.min_object_pct:
            break
    else:
        return None
    patch = source[y0:y1, x0:x1]
    patch_fg = None if src_fg is None else src_fg[y0:y1, x0:x1]
    h, w = patch.shape[:2]
    scale = 1.0
    if p.resize:  # aspect kept; the new full size is clipped to the half-width bounds, as the reference does
        scale = float(np.clip(rng.normal(1.0, 0.5), *p.resize_bounds))
        nh = float(np.clip(scale * h, min_y, max_y))
        nw = int(np.clip(int(nh / h * w), min_x, max_x))
        nh = int(np.clip(int(nw / w * h), min_y, max_y))
        if nh < 3 or nw < 3:
            return None
        patch = cv2.resize(patch, (nw, nh))
        if patch_fg is not None:
            patch_fg = cv2.resize(patch_fg, (nw, nh))
        h, w = nh, nw
    if h >= H - 2 or w >= W - 2:
        return None

    # destination: anywhere the patch fits; with a background its object must overlap the destination's object
    if patch_fg is not None and patch_fg.mean() <= p.min_object_pct:
        return None
    if not p.shift:  # the source's place (FPI-style); the reference checks no overlap then
        ty, tx = min(y0, H - h), min(x0, W - w)
    else:
        for _ in range(_ATTEMPTS):
            cy, cx = int(rng.integers(h // 2 + 1, H - h // 2 - 1)), int(rng.integers(w // 2 + 1, W - w // 2 - 1))
            ty, tx = cy - h // 2, cx - w // 2
            if patch_fg is None or dest_fg is None:
                break
            region_fg = dest_fg[ty : ty + h, tx : tx + w]
            if (region_fg & patch_fg).sum() / patch_fg.sum() > p.min_overlap_pct:
                break
        else:
            return None

    area = np.ones((h, w), dtype=np.uint8)
    clone_mask = area.copy()
    if patch_fg is not None and dest_fg is not None:
        region_fg = dest_fg[ty : ty + h, tx : tx + w]
        area &= patch_fg | region_fg
        # background on both sides joins the Poisson mask (no artefacts at the object's edge); it is not labelled
        clone_mask = area | ((1 - patch_fg) & (1 - region_fg))
    clone_mask = clone_mask * np.uint8(255)
    clone_mask[0, :] = clone_mask[-1, :] = 0
    clone_mask[:, 0] = clone_mask[:, -1] = 0
    ys, xs = np.nonzero(clone_mask)
    if ys.size < _MIN_MASK_PIXELS:
        return None
    by, bx = int(ys.min()), int(xs.min())
    bh, bw = int(ys.max()) - by + 1, int(xs.max()) - bx + 1
    centre = (tx + bx + bw // 2, ty + by + bh // 2)  # OpenCV centres the mask's bounding box here
    try:
        blended = cv2.seamlessClone(patch, canvas, clone_mask, centre, _CLONE[p.clone])
    except cv2.error:  # the reference skips a patch OpenCV refuses, too
        return None
    full_area = np.zeros((H, W), dtype=np.uint8)
    full_area[ty : ty + h, tx : tx + w] = area
    return blended, full_area, Patch((y0, x0, y1 - y0, x1 - x0), (ty, tx, h, w), round(scale, 4))


def synthesize(
    dest: np.ndarray,
    source: np.ndarray,
    params: NsaParams,
    rng: np.random.Generator,
    label: str = "binary",
    *,
    dest_fg: np.ndarray | None = None,
    src_fg: np.ndarray | None = None,
) -> Synthetic:
    """Blend 1..``num_patches`` patches of ``source`` into ``dest`` (both uint8 RGB; ``source`` is resized to
    ``dest``'s size if it differs).

    With a background in ``params`` the foreground masks are computed here unless given (a caller that reuses images
    passes them). ``params.background`` must be resolved (not ``"auto"``: see :func:`estimate_background`). When no
    patch fits, the image comes back unchanged with an empty mask (``is_anomalous`` is False), as in the reference.
    """
    _check_image(dest, "destination image")
    _check_image(source, "source image")
    if label not in ("binary", "continuous", "logistic"):
        raise ValueError(f"label must be binary, continuous or logistic, got {label!r}")
    if params.background == AUTO:
        raise ValueError("params.background is 'auto': estimate it first (estimate_background) or set it")
    if source.shape != dest.shape:
        source = cv2.resize(source, (dest.shape[1], dest.shape[0]), interpolation=cv2.INTER_AREA)
    if params.background is not None:
        dest_fg = foreground_mask(dest, params.background) if dest_fg is None else dest_fg
        src_fg = foreground_mask(source, params.background) if src_fg is None else src_fg
    else:
        dest_fg = src_fg = None
    canvas = dest
    area = np.zeros(dest.shape[:2], dtype=np.uint8)
    patches: list[Patch] = []
    for i in range(params.num_patches):
        if i > 0 and rng.integers(2) == 0:  # the first patch always, each further one on a coin flip
            continue
        done = _one_patch(canvas, source, dest_fg, src_fg, params, rng)
        if done is not None:
            canvas, patch_area, info = done
            area |= patch_area
            patches.append(info)
    lab, mask = make_label(dest, canvas, area, label, params.label_tol, params.logistic)
    image = canvas if canvas is not dest else dest.copy()
    return Synthetic(image=image, label=lab, mask=mask, patches=patches)
