"""Where the object is: a background-intensity threshold, given per category or estimated from good images.

Why: for object categories NSA keeps patches on the part (a patch of empty background pasted on empty background is
no anomaly). The rule is the reference's: foreground where the channel mean is further than a threshold from the
background intensity, then a 7x7 median filter against grain.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["estimate_background", "foreground_mask"]

# Share of each side read as "border" when estimating the background (the part sits inside the frame).
_BORDER = 0.06
# Threshold = spread of the border's intensity times this, within these bounds (the reference uses 20 and 60).
_SPREAD_FACTOR = 3.0
_THRESHOLD_RANGE = (10.0, 100.0)


def foreground_mask(image: np.ndarray, background: tuple[float, float]) -> np.ndarray:
    """uint8 0/1 ``H x W`` mask of the object: ``|mean(RGB) - level| > threshold``, median-filtered (7x7)."""
    level, threshold = background
    grey = image.mean(axis=-1)
    mask = (np.abs(grey - level) > threshold).astype(np.uint8)
    return cv2.medianBlur(mask, 7)


def _border_pixels(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    by, bx = max(1, round(h * _BORDER)), max(1, round(w * _BORDER))
    grey = image.mean(axis=-1)
    parts = (grey[:by], grey[-by:], grey[by:-by, :bx], grey[by:-by, -bx:])
    return np.concatenate([a.ravel() for a in parts])


def estimate_background(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """``(level, threshold)`` from the frame borders of good images: their median intensity and 3x their robust
    spread (1.4826 x MAD, within 10..100 grey levels).

    Raises ValueError when the estimate cannot hold (the border is not one background: the object would cover
    under 1 % or over 95 % of the median image), so a texture or an object touching the frame is not silently
    masked wrong; then give the background by hand or none.
    """
    if not images:
        raise ValueError("no images to estimate the background from")
    border = np.concatenate([_border_pixels(im) for im in images])
    level = float(np.median(border))
    spread = 1.4826 * float(np.median(np.abs(border - level)))
    threshold = float(np.clip(_SPREAD_FACTOR * spread, *_THRESHOLD_RANGE))
    share = float(np.median([foreground_mask(im, (level, threshold)).mean() for im in images]))
    if not 0.01 <= share <= 0.95:
        raise ValueError(
            f"cannot estimate the background from the image borders (intensity {level:.0f} +- {threshold:.0f} "
            f"leaves {share:.0%} of the image as object); give it as LEVEL,THRESHOLD, or 'none' for a texture"
        )
    return round(level, 1), round(threshold, 1)
