"""What a Perlin blend pastes (RealNet's P): images from a folder (SDAS/SIA samples, textures) or the category's own.

Why separate from the blend: the same mask-and-blend rule serves every kind of P; only where P comes from and how
it is jittered differs. A pattern is always returned at the destination's size, uint8 RGB.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_ad.data.gate import InputLimits
from edge_ad.data.images import list_images, read_image

__all__ = ["PATTERN_LIMITS", "CategoryPatterns", "FolderPatterns", "PatternSource", "resize_to"]

#: The input gate for pasted material: every check but the blank-frame rule. A smooth texture, a blurred crop or a
#: plain SDAS sample is a legitimate P (a smooth patch on busy texture is exactly the defect it should teach); the
#: blank-frame rule is there to refuse a verdict on a frame, and no verdict is given on a pattern.
PATTERN_LIMITS = InputLimits(flat_std=0.0)


class PatternSource(Protocol):
    """Gives one P image of a requested size."""

    def pattern(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray: ...


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` at ``shape`` = (H, W): area averaging when shrinking, bilinear when enlarging."""
    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    shrink = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A quarter turn (0-3) and a mirror, drawn: a texture or a good image pasted where it does not belong."""
    out = np.rot90(image, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class FolderPatterns:
    """P images read once from a folder the user gives (SDAS/SIA samples, or a texture set such as DTD).

    ``jitter`` turns and mirrors each draw (right for textures; SDAS samples are the category's own view and are
    pasted as they are, as the reference does).
    """

    def __init__(self, folder: str | os.PathLike[str], *, jitter: bool = False, limit: int | None = None) -> None:
        paths = list_images(folder)
        if not paths:
            raise ValueError(f"no images in {folder} (expected .png/.jpg/... files directly inside)")
        if limit is not None:
            paths = paths[:limit]
        self.folder = Path(folder)
        self.images = [read_image(p, PATTERN_LIMITS) for p in paths]
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.images)

    def pattern(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        image = self.images[int(rng.integers(len(self.images)))]
        if self.jitter:
            image = _jitter(image, rng)
        return resize_to(image, shape)


class CategoryPatterns:
    """P from the category's own good images, turned and mirrored: the no-download stand-in for a texture set.

    Why this works as an anomaly: the pasted region carries the part's own material but out of place (grain at the
    wrong angle, an edge where none belongs), so the model cannot learn "foreign colour" as the only cue.
    """

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        if not images:
            raise ValueError("CategoryPatterns needs at least one image")
        self.images = list(images)

    def pattern(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        image = _jitter(self.images[int(rng.integers(len(self.images)))], rng)
        return resize_to(image, shape)
