"""Pluggable anomaly sources: one interface over Perlin blends of SDAS samples or textures, and NSA patches.

Why one interface: a family's trainer (RealNet's first) asks for "an anomalous version of good image i" and must not
care whether it came from a diffusion model's samples, a texture folder or NSA. Every source returns a
:class:`~edge_ad.synthesis.nsa.Synthetic` (image, label, mask) from ``example(index, rng)``; :class:`SourceMix` keeps
a share of images normal (RealNet: half) and picks a source for the rest.

The blend is RealNet's: ``A = (1 - M) I + (1 - delta) M I + delta M P`` with M a Perlin mask (on the object only,
for object categories) and delta the opacity drawn from the source's range (SDAS 0.5-1.0, textures 0.2-1.0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from edge_ad.synthesis.foreground import estimate_background, foreground_mask
from edge_ad.synthesis.generator import NsaGenerator
from edge_ad.synthesis.nsa import Synthetic, _check_image
from edge_ad.synthesis.params import AUTO, Background, Kind, NsaParams, params_for
from edge_ad.synthesis.patterns import CategoryPatterns, FolderPatterns, PatternSource
from edge_ad.synthesis.perlin import MAX_SCALE, perlin_mask

__all__ = [
    "SDAS_DELTA",
    "TEXTURE_DELTA",
    "AnomalySource",
    "NsaSource",
    "PerlinBlendSource",
    "SourceMix",
    "anomaly_mix",
    "blend",
    "object_background",
]

#: Opacity ranges of the reference configuration: SDAS samples 0.5-1.0, DTD textures 0.2-1.0.
SDAS_DELTA = (0.5, 1.0)
TEXTURE_DELTA = (0.2, 1.0)


class AnomalySource(Protocol):
    """Anomalous versions of a fixed set of good images."""

    def __len__(self) -> int: ...

    def example(self, index: int, rng: np.random.Generator) -> Synthetic: ...


def blend(image: np.ndarray, pattern: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    """``A = (1 - M) I + (1 - delta) M I + delta M P``, rounded to uint8 (``mask`` 0/1 ``H x W``, delta in [0, 1])."""
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    if pattern.shape != image.shape or mask.shape != image.shape[:2]:
        raise ValueError(f"image {image.shape}, pattern {pattern.shape} and mask {mask.shape} must agree")
    i = image.astype(np.float32)
    m = (mask != 0).astype(np.float32)[..., None]
    a = (1 - m) * i + (1 - delta) * m * i + delta * m * pattern.astype(np.float32)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def object_background(
    images: Sequence[np.ndarray], category: str | None, kind: Kind | None = None
) -> Background | None:
    """The (level, threshold) that separates an object from its background, or None for a texture: the NSA table's
    value for a known category, else estimated from ``images``' borders (see :mod:`edge_ad.synthesis.foreground`)."""
    bg = params_for(category, kind).background
    return estimate_background(images) if bg == AUTO else bg


def _check_range(name: str, lo_hi: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in lo_hi)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"{name} must satisfy 0 <= low <= high <= 1, got {lo_hi}")
    return lo, hi


class PerlinBlendSource:
    """Perlin-masked blends of ``patterns`` into ``images`` with opacity drawn uniformly from ``delta``.

    With ``background`` (an object category) the mask is cut to the object's foreground, computed once per image.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        patterns: PatternSource,
        delta: tuple[float, float],
        *,
        background: Background | None = None,
        max_scale: int = MAX_SCALE,
    ) -> None:
        if not images:
            raise ValueError("no good images to blend into")
        for i, im in enumerate(images):
            _check_image(im, f"image {i}")
        self.images = list(images)
        self.patterns = patterns
        self.delta = _check_range("delta", delta)
        self.max_scale = max_scale
        self.foregrounds = None if background is None else [foreground_mask(im, background) for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def example(self, index: int, rng: np.random.Generator) -> Synthetic:
        image = self.images[index]
        fg = None if self.foregrounds is None else self.foregrounds[index]
        mask = perlin_mask(image.shape[:2], rng, foreground=fg, max_scale=self.max_scale)
        delta = float(rng.uniform(*self.delta))
        out = blend(image, self.patterns.pattern(image.shape[:2], rng), mask, delta)
        return Synthetic(image=out, label=mask.astype(np.float32), mask=mask)


class NsaSource:
    """The project's NSA generator behind the same interface (patches of other good images, Poisson-blended)."""

    def __init__(self, generator: NsaGenerator) -> None:
        self.generator = generator

    def __len__(self) -> int:
        return len(self.generator)

    def example(self, index: int, rng: np.random.Generator) -> Synthetic:
        return self.generator.example(index, rng)


class SourceMix:
    """``normal_share`` of the examples stay the good image ``images[index]`` (empty mask); the rest come from one
    of ``sources`` (each over the same images), drawn in proportion to its weight. RealNet keeps half normal."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        sources: Sequence[tuple[AnomalySource, float]],
        normal_share: float = 0.5,
    ) -> None:
        if not sources:
            raise ValueError("SourceMix needs at least one anomaly source")
        sizes = {len(s) for s, _ in sources}
        if sizes != {len(images)}:
            raise ValueError(f"every source must cover the {len(images)} good images, got sizes {sorted(sizes)}")
        weights = np.array([float(w) for _, w in sources])
        if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 with a positive sum, got {weights.tolist()}")
        if not 0.0 <= normal_share < 1.0:
            raise ValueError(f"normal_share must be in [0, 1), got {normal_share}")
        self.images = list(images)
        self.sources = [s for s, _ in sources]
        self.weights = weights / weights.sum()
        self.normal_share = float(normal_share)

    def __len__(self) -> int:
        return len(self.images)

    def example(self, index: int, rng: np.random.Generator) -> Synthetic:
        if rng.random() < self.normal_share:
            image = self.images[index]
            zeros = np.zeros(image.shape[:2], np.uint8)
            return Synthetic(image=image.copy(), label=zeros.astype(np.float32), mask=zeros)
        pick = int(rng.choice(len(self.sources), p=self.weights))
        return self.sources[pick].example(index, rng)


def anomaly_mix(
    images: Sequence[np.ndarray],
    *,
    background: Background | None,
    sdas: str | os.PathLike[str] | None = None,
    textures: str | os.PathLike[str] | None = None,
    nsa: NsaParams | None = None,
    normal_share: float = 0.5,
) -> SourceMix:
    """RealNet's training anomalies over ``images``, from what the user gave, each source weighted equally:

    - ``sdas``: a folder of SDAS/SIA samples, Perlin-blended with opacity 0.5-1.0;
    - ``textures``: a texture folder (turned and mirrored), opacity 0.2-1.0; with neither folder the category's own
      images stand in for textures, so training needs no download;
    - ``nsa``: NSA patches with these parameters, beside the blends.

    ``background`` cuts the masks to the object (see :func:`object_background`; None for textures).
    """
    sources: list[tuple[AnomalySource, float]] = []
    if sdas is not None:
        sources.append((PerlinBlendSource(images, FolderPatterns(sdas), SDAS_DELTA, background=background), 1.0))
    if textures is not None or sdas is None:
        patterns = CategoryPatterns(images) if textures is None else FolderPatterns(textures, jitter=True)
        sources.append((PerlinBlendSource(images, patterns, TEXTURE_DELTA, background=background), 1.0))
    if nsa is not None:
        sources.append((NsaSource(NsaGenerator(images, nsa)), 1.0))
    return SourceMix(images, sources, normal_share=normal_share)
