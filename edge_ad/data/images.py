"""Reading images and ground-truth masks from disk (numpy + OpenCV only, no torch).

Every image that edge-ad trains on, evaluates or runs on goes through :func:`read_image`, which reads the file's
bytes and hands them to the input gate, :func:`edge_ad.data.gate.decode_image` (the same call ``serve`` makes on an
HTTP body), so all paths and runtimes see the same pixels and refuse the same inputs:

- the result is always ``uint8``, ``H x W x 3``, **RGB** channel order (OpenCV decodes to BGR; it is
  converted once);
- grayscale images are replicated to three channels;
- an alpha channel is **dropped** (not composited onto a background): the colour channels are used as
  they are stored;
- 16-bit images are scaled to 8 bits with ``round(x / 257)`` (so 65535 -> 255, 257 -> 1);
- floating-point images (e.g. 32-bit TIFF) are taken as ``[0, 1]`` when their maximum is <= 1 and
  scaled by 255, otherwise as ``[0, 255]``; either way they are clipped to 0..255 and rounded, and NaN
  becomes 0;
- the **EXIF orientation is applied** (all 8 values, JPEG / PNG / WebP / TIFF), so a phone picture stored sideways
  with orientation 6 is scored upright, exactly as it would be trained on;
- the gate refuses (:class:`InputRejected`, an :class:`ImageError`) files over 64 MiB, more than 40 million pixels
  (read from the header, before decoding), images under 32 pixels on a side and blank or flat frames; pass
  ``limits`` to change that.

Files are read as bytes (so paths with non-ASCII characters work on every platform) and decoded from memory.
Every failure raises :class:`ImageError` whose message names the offending file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_ad.data.errors import ImageError
from edge_ad.data.gate import DEFAULT_LIMITS, InputLimits, InputRejected, decode_image, decode_pixels, to_uint8

__all__ = ["IMAGE_EXTENSIONS", "ImageError", "InputRejected", "list_images", "read_image", "read_mask"]

#: File suffixes treated as images (compared case-insensitively, with the leading dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Masks are all black for good images and may be tiny: only the byte and pixel limits apply to them.
_MASK_LIMITS = InputLimits(min_side=1, flat_std=0.0)


def _read_bytes(path: Path, what: str, limits: InputLimits) -> bytes:
    """The file's bytes; ImageError naming the file when it is missing, a folder or unreadable; the byte limit is
    checked from the file's size before anything is read."""
    if not path.exists():
        raise ImageError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ImageError(f"{what} path is a directory, not a file: {path}")
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InputRejected(
                f"rejected {path}: {size} bytes, over the input gate's limit of {limits.max_bytes} bytes"
            )
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {what} file {path}: {exc}") from exc


def read_image(path: str | os.PathLike[str], limits: InputLimits | None = None) -> np.ndarray:
    """Read an image file through the input gate as ``uint8`` ``H x W x 3`` RGB, EXIF orientation applied.

    Raises :class:`ImageError` (naming the file) for a missing file, a directory, an empty or corrupt file, a
    zero-size image or an unsupported format / channel count / pixel type, and :class:`InputRejected` (a subclass)
    for an input the gate does not trust (see :mod:`edge_ad.data.gate`; ``limits`` defaults to its defaults).
    """
    p = Path(path)
    limits = limits or DEFAULT_LIMITS
    return decode_image(_read_bytes(p, "image", limits), str(p), limits)


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
    img = to_uint8(decode_pixels(_read_bytes(p, "mask", _MASK_LIMITS), str(p), _MASK_LIMITS, "mask"), str(p), "mask")
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
