"""The one image preprocessing used by training, evaluation and every runtime (numpy + OpenCV, no torch).

Geometry (SIMPLENET_SPEC section 1):

- ``resize`` set (default 256, crop 224, as in the paper): the image is resized so its **shorter** side
  equals ``resize``, keeping the aspect ratio (the longer side becomes ``int(resize * long / short)``,
  as torchvision's ``Resize(int)`` computes it), then a centre crop of ``image_size x image_size`` is
  taken. The crop offset along each axis is ``(dim - image_size) // 2``; when ``dim - image_size`` is
  odd this puts the extra row/column at the bottom/right (torchvision rounds half to even instead,
  which only differs for odd differences; for square inputs and 256 -> 224 they agree).
- ``resize`` None ("texture mode"): the whole image is resized straight to ``image_size x image_size``
  with no crop, so defects near the border are kept (the reproduction report's choice for textures).

Interpolation is bilinear and antialiased: ``cv2.INTER_AREA`` along an axis that shrinks and
``cv2.INTER_LINEAR`` along an axis that grows (when one axis shrinks and the other grows, the two axes
are resized one after the other, each with its own rule).

Pixel values: ``uint8`` -> ``x / 255`` -> ``(x - mean) / std`` with the ImageNet statistics, returned as
``float32`` in channel-first layout ``3 x H x W``. Input images are RGB (see
:func:`edge_ad.data.images.read_image`).

Masks go through the same resize and crop as ``float32`` with ``cv2.INTER_LINEAR`` (bilinear) and are
then binarised at ``>= 0.5``. Note: the authors' code instead resizes masks bilinearly and counts only
the pixels that stay exactly 1 as anomalous, which shrinks every defect region slightly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _antialiased_interp(src: int, dst: int) -> int:
    return cv2.INTER_AREA if dst < src else cv2.INTER_LINEAR


def _resize_antialiased(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize with INTER_AREA on shrinking axes and INTER_LINEAR on growing ones."""
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()
    shrink_h, shrink_w = out_h <= h, out_w <= w
    grow_h, grow_w = out_h >= h, out_w >= w
    if shrink_h and shrink_w:
        return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if grow_h and grow_w:
        return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    # Mixed: one axis at a time, each with its own rule.
    img = cv2.resize(img, (out_w, h), interpolation=_antialiased_interp(w, out_w))
    return cv2.resize(img, (out_w, out_h), interpolation=_antialiased_interp(h, out_h))


def _resize_linear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (out_h, out_w):
        return img.copy()
    return cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Preprocessing.{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"Preprocessing.{name} must be positive, got {value}")
    return int(value)


def _check_triplet(name: str, value: Any, positive: bool) -> tuple[float, float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"Preprocessing.{name} must be a sequence of 3 numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"Preprocessing.{name} must hold numbers, got {value!r}")
        f = float(v)
        if not math.isfinite(f) or (positive and f <= 0):
            bound = "positive finite" if positive else "finite"
            raise ValueError(f"Preprocessing.{name} values must be {bound}, got {value!r}")
        out.append(f)
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class Preprocessing:
    """Image geometry and normalisation, stored in every model bundle (see the module docstring).

    ``image_size``: side of the square network input. ``resize``: shorter side before the centre crop,
    or None to resize the whole image straight to ``image_size`` (texture mode, no crop).
    """

    image_size: int = 224
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _check_size("image_size", self.image_size))
        if self.resize is not None:
            resize = _check_size("resize", self.resize)
            if resize < self.image_size:
                raise ValueError(
                    f"Preprocessing.resize ({resize}) must be >= image_size ({self.image_size}) "
                    "so the centre crop fits; use resize=None to resize straight to image_size"
                )
            object.__setattr__(self, "resize", resize)
        object.__setattr__(self, "mean", _check_triplet("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _check_triplet("std", self.std, positive=True))

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (ints, None, lists of floats)."""
        return {
            "image_size": self.image_size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`.

        All four keys are required; unknown or missing keys and bad types raise ValueError.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"preprocessing must be a mapping, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names), key=str)
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {unknown}; expected {names}")
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"missing preprocessing keys: {missing}")
        return cls(image_size=d["image_size"], resize=d["resize"], mean=d["mean"], std=d["std"])

    # ----------------------------------------------------------------- geometry
    def _apply_geometry(self, img: np.ndarray, resize_fn: Callable[[np.ndarray, int, int], np.ndarray]) -> np.ndarray:
        h, w = img.shape[:2]
        s = self.image_size
        if self.resize is None:
            return resize_fn(img, s, s)
        r = self.resize
        if h <= w:
            new_h, new_w = r, int(r * w / h)
        else:
            new_h, new_w = int(r * h / w), r
        img = resize_fn(img, new_h, new_w)
        top = (new_h - s) // 2
        left = (new_w - s) // 2
        return np.ascontiguousarray(img[top : top + s, left : left + s])

    def geometry(self, image: np.ndarray) -> np.ndarray:
        """Resize (+ centre crop) ``uint8`` ``H x W x 3`` to ``uint8`` ``image_size x image_size x 3``."""
        _check_image(image)
        return self._apply_geometry(image, _resize_antialiased)

    def normalize(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``uint8`` ``H x W x 3`` RGB -> ``float32`` ``3 x H x W``: ``(x / 255 - mean) / std``.

        Computed as a lookup of the 256 possible values per channel (:func:`_normalize_table`, the formula in float32
        operation by operation, so the result is bit-identical to evaluating it on every pixel) in one OpenCV pass,
        then one copy into channel-first layout: ``out`` (a ``3 x H x W`` float32 array, e.g. one image of a batch)
        receives it when given.
        """
        _check_image(image)
        h, w = image.shape[:2]
        if out is None:
            out = np.empty((3, h, w), dtype=np.float32)
        elif out.shape != (3, h, w) or out.dtype != np.float32:
            raise ValueError(f"out must be a float32 array of shape {(3, h, w)}, got {out.dtype} {out.shape}")
        values = cv2.LUT(image, _normalize_table(self.mean, self.std))  # H x W x 3 float32
        for c in range(3):
            out[c] = values[:, :, c]
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Geometry then normalisation: ``uint8`` ``H x W x 3`` -> ``float32`` ``3 x S x S``."""
        return self.normalize(self.geometry(image))

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess several images (any sizes) into one ``float32`` ``N x 3 x S x S`` array."""
        s = self.image_size
        out = np.empty((len(images), 3, s, s), dtype=np.float32)
        for i, img in enumerate(images):
            self.normalize(self.geometry(img), out=out[i])
        return out

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Apply the same geometry to a boolean ``H x W`` mask -> boolean ``image_size x image_size``.

        The mask is resized as ``float32`` with ``cv2.INTER_LINEAR`` (bilinear), cropped like the image and
        binarised at ``>= 0.5``. (The authors' code keeps only pixels that stay exactly 1 after the
        bilinear resize, a slightly smaller region.)
        """
        m = np.asarray(mask)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
            raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
        resized = self._apply_geometry(m.astype(np.float32), _resize_linear)
        return resized >= 0.5

    def denormalize(self, chw: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize` for overlays: ``3 x H x W`` float -> ``uint8`` ``H x W x 3`` RGB."""
        x = np.asarray(chw, dtype=np.float32)
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W array, got shape {x.shape}")
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        rgb = (x * std + mean) * np.float32(255.0)
        return np.ascontiguousarray(np.rint(np.clip(rgb, 0.0, 255.0)).astype(np.uint8).transpose(1, 2, 0))


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    """``(v / 255 - mean) / std`` for every uint8 value ``v`` and channel, as a ``1 x 256 x 3`` float32 table
    (``cv2.LUT``'s layout), with the same float32 operations in the same order as the per-pixel formula."""
    values = np.arange(256, dtype=np.float32)[:, None]
    table = (values / np.float32(255.0) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    table.flags.writeable = False
    return np.ascontiguousarray(table.reshape(1, 256, 3))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {image.dtype} with shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
