"""NSA examples from a set of good images: the source patch always comes from another image of the set.

Why a class: a training loop holds the good images once and asks for examples per batch with its own random
generator (:meth:`NsaGenerator.example`, :meth:`NsaGenerator.batch`); sets and streams fixed by a seed, with or
without worker processes, are in :mod:`edge_ad.synthesis.sets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_ad.synthesis.foreground import estimate_background, foreground_mask
from edge_ad.synthesis.nsa import Synthetic, _check_image, synthesize
from edge_ad.synthesis.params import AUTO, NsaParams, check_label

__all__ = ["NsaGenerator", "example_rng"]

#: Fresh sources tried when a blend left nothing labelled (only with ``require_anomaly``).
_RETRIES = 8

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def example_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream of one example: ``SeedSequence([seed, *key])`` (e.g. key = (example,) for a set,
    (batch, position) for a training stream), independent of every other example."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(k) for k in key)]))


class NsaGenerator:
    """Synthetic anomalies over ``images`` (uint8 RGB, two or more).

    ``params.background == "auto"`` is estimated once from ``images`` (see :attr:`params` for the value used).
    ``transform(image, rng)`` (e.g. a random crop) is applied to destination and source before blending, as the
    reference applies its augmentation to both. With ``require_anomaly`` an example whose blend labelled nothing is
    drawn again with another source (at most 8 times); the reference keeps such examples, with an empty label.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        params: NsaParams,
        label: str = "binary",
        *,
        transform: Transform | None = None,
        require_anomaly: bool = True,
    ) -> None:
        if len(images) < 2:
            raise ValueError(f"NSA needs at least 2 good images (patches come from another image), got {len(images)}")
        check_label(label)
        for i, im in enumerate(images):
            _check_image(im, f"image {i}")
        self.images = list(images)
        if params.background == AUTO:
            params = params.replace(background=estimate_background(self.images))
        self.params = params
        self.label = label
        self.transform = transform
        self.require_anomaly = require_anomaly
        bg = params.background
        self._fg = None if bg is None or transform is not None else [foreground_mask(im, bg) for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def _draw(self, index: int, rng: np.random.Generator) -> Synthetic:
        n = len(self.images)
        src = int(rng.integers(n - 1))
        if src >= index:  # uniform over the other images
            src += 1
        dest_img, src_img = self.images[index], self.images[src]
        dest_fg = src_fg = None
        if self.transform is not None:
            dest_img, src_img = self.transform(dest_img, rng), self.transform(src_img, rng)
        elif self._fg is not None:
            dest_fg, src_fg = self._fg[index], self._fg[src]
        if src_fg is not None and src_img.shape != dest_img.shape:
            src_fg = None  # resized inside synthesize; recomputed there
        out = synthesize(dest_img, src_img, self.params, rng, self.label, dest_fg=dest_fg, src_fg=src_fg)
        out.source_index = src
        return out

    def example(self, index: int, rng: np.random.Generator) -> Synthetic:
        """One synthetic anomaly on image ``index``."""
        if not 0 <= index < len(self.images):
            raise ValueError(f"index {index} out of range for {len(self.images)} images")
        out = self._draw(index, rng)
        for _ in range(_RETRIES if self.require_anomaly else 0):
            if out.is_anomalous:
                break
            out = self._draw(index, rng)
        return out

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(images N x H x W x 3 uint8, labels N x H x W float32)`` for a training step (same-size images)."""
        examples = [self.example(int(i), rng) for i in indices]
        return np.stack([e.image for e in examples]), np.stack([e.label for e in examples])
