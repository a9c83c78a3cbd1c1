"""Reading images and ground-truth masks from disk (numpy + OpenCV only, no torch).

Every image that edge-ad trains on, evaluates or runs on goes through :func:`read_image`, so all
runtimes see the same pixels:

- the result is always ``uint8``, ``H x W x 3``, **RGB** channel order (OpenCV decodes to BGR; it is
  converted here once);
- grayscale images are replicated to three channels;
- an alpha channel is **dropped** (not composited onto a background): the colour channels are used as
  they are stored;
- 16-bit images are scaled to 8 bits with ``round(x / 257)`` (so 65535 -> 255, 257 -> 1);
- floating-point images (e.g. 32-bit TIFF) are taken as ``[0, 1]`` when their maximum is <= 1 and
  scaled by 255, otherwise as ``[0, 255]``; either way they are clipped to 0..255 and rounded, and NaN
  becomes 0;
- EXIF orientation is not applied (``IMREAD_UNCHANGED``): pixels are used as stored, the same way on
  every machine.

Files are read with ``np.fromfile`` + ``cv2.imdecode`` so paths with non-ASCII characters work on every
platform. Every failure raises :class:`ImageError` whose message names the offending file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageError", "list_images", "read_image", "read_mask"]

#: File suffixes treated as images (compared case-insensitively, with the leading dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image or mask file is missing, unreadable, corrupt or has an unsupported format."""


def _decode(path: Path, what: str) -> np.ndarray:
    """Decode ``path`` with ``IMREAD_UNCHANGED``; raise ImageError naming the file on any failure."""
    if not path.exists():
        raise ImageError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ImageError(f"{what} path is a directory, not a file: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"cannot read {what} file {path}: {exc}") from exc
    if data.size == 0:
        raise ImageError(f"{what} file is empty (0 bytes): {path}")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"cannot decode {what} file {path} (corrupt or not an image): {exc}") from exc
    if img is None:
        raise ImageError(f"cannot decode {what} file {path} (corrupt, truncated or not an image)")
    if img.size == 0 or img.ndim < 2 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"{what} file {path} decodes to an empty image (shape {img.shape})")
    return img


def _to_uint8(img: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Convert the decoded pixel values to uint8 (see the module docstring for the rules)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.rint(img.astype(np.float64) / 257.0).astype(np.uint8)
    if img.dtype in (np.float32, np.float64, np.float16):
        f = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        finite_max = float(f.max()) if f.size else 0.0
        if finite_max <= 1.0:
            f = f * 255.0
        return np.rint(np.clip(f, 0.0, 255.0)).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {img.dtype} in {what} file {path}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``uint8`` ``H x W x 3`` RGB.

    Grayscale is replicated to RGB, alpha is dropped, 16-bit and float images are converted to 8 bits.
    Raises :class:`ImageError` (naming the file) for a missing file, a directory, an empty or corrupt
    file, a zero-size image or an unsupported channel count / pixel type.
    """
    p = Path(path)
    img = _to_uint8(_decode(p, "image"), p, "image")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3:
        raise ImageError(f"unsupported image layout (shape {img.shape}) in {p}")
    channels = img.shape[2]
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        # Alpha is dropped on purpose (no compositing): the stored colour values are used as they are.
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported number of channels ({channels}) in image file {p}; expected 1, 3 or 4")


def read_mask(path: str | os.PathLike[str], expected_hw: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as a boolean ``H x W`` array (``True`` = anomalous).

    The mask is converted to 8 bits first (16-bit: ``round(x / 257)``; float in [0, 1]: ``x * 255``), then
    a pixel is anomalous when its value is > 127. A colour mask counts a pixel as anomalous when any
    colour channel is > 127 (alpha is ignored). ``expected_hw`` is the (height, width) of the image the
    mask belongs to; a different mask size raises :class:`ImageError` naming both shapes.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"mask missing: {p}")
    img = _to_uint8(_decode(p, "mask"), p, "mask")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels in (3, 4):
            img = img[:, :, :3].max(axis=2)
        else:
            raise ImageError(f"unsupported number of channels ({channels}) in mask file {p}")
    if img.ndim != 2:
        raise ImageError(f"unsupported mask layout (shape {img.shape}) in {p}")
    exp_h, exp_w = (int(v) for v in expected_hw)
    if img.shape != (exp_h, exp_w):
        raise ImageError(
            f"mask {p} has size {img.shape[0]}x{img.shape[1]} (HxW) but its image is {exp_h}x{exp_w} (HxW)"
        )
    return img > 127


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by file name.

    A file counts as an image when its suffix is in :data:`IMAGE_EXTENSIONS` (any case). Hidden files
    (names starting with ``.``, e.g. macOS ``._foo.png`` resource forks) are skipped.
    Raises :class:`ImageError` when ``folder`` does not exist or is not a directory.
    """
    d = Path(folder)
    if not d.is_dir():
        if d.exists():
            raise ImageError(f"not a folder: {d}")
        raise ImageError(f"image folder not found: {d}")
    found = [
        p for p in d.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    return sorted(found, key=lambda p: p.name)
