"""The input gate: the one decode that every path uses (training, eval, predict, serve), and the checks that keep
frames a verdict cannot be trusted on away from the model (numpy + OpenCV only, no torch).

Why: a dead camera (an all-black or uniform frame), a 1x1 thumbnail or a 20000x20000 decompression bomb used to be
scored like any other image, and an all-black frame came out ``good``. The gate refuses such inputs with
:class:`InputRejected` (an :class:`ImageError`), whose one-line message names the source and the reason; a rejected
input is an error record, never a verdict.

What :func:`decode_image` does, in this order:

1. refuses more than ``max_bytes`` of encoded data;
2. reads (height, width) from the PNG / JPEG / BMP / TIFF / WebP header and refuses more than ``max_pixels``
   **before any pixel is decoded**; bytes in any other format are refused as undecodable (the gate only decodes what
   it can size first);
3. decodes with OpenCV (``IMREAD_UNCHANGED``: bit depth and alpha as stored, EXIF not applied by OpenCV; a TIFF's
   Orientation tag, which OpenCV's TIFF decoder would apply itself, is set to 1 in a copy first);
4. applies the EXIF orientation (all 8 values; JPEG APP1, PNG ``eXIf``, WebP ``EXIF`` chunk, TIFF's own
   Orientation tag), so the pixels are the picture as it is meant to be seen, the same rule for training and
   scoring; a missing or invalid tag means "as stored";
5. converts to ``uint8`` ``H x W x 3`` RGB: grayscale is replicated, alpha is dropped (not composited), 16-bit is
   scaled by ``round(x / 257)``, float images are taken as ``[0, 1]`` when their maximum is <= 1 (else ``[0, 255]``),
   clipped and rounded, NaN -> 0;
6. :func:`check_frame`: at least ``min_side`` pixels on each side, at most ``max_pixels``, and not blank.

The blank-frame rule: the luminance (``cv2.COLOR_RGB2GRAY``) is shrunk with area averaging to at most ``flat_side``
pixels on its longer side, which averages sensor noise away, and the frame is refused when the standard deviation of
that copy is below ``flat_std`` grey levels. Every demo category's good and defective images sit at 9 or more
(measured at 64, 96 and 256 pixels), a uniform or black frame at 0.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.data.errors import ImageError

__all__ = [
    "DEFAULT_LIMITS",
    "InputLimits",
    "InputRejected",
    "check_frame",
    "decode_image",
    "decode_pixels",
    "exif_orientation",
    "image_size_from_header",
    "to_rgb",
    "to_uint8",
]

FORMATS = "PNG, JPEG, BMP, TIFF or WebP"


class InputRejected(ImageError):
    """An input that cannot be trusted (too small, too many pixels or bytes, a blank frame); never given a verdict."""


@dataclass(frozen=True)
class InputLimits:
    """What the gate lets through. ``flat_std = 0`` turns the blank-frame rule off (e.g. for masks or tests)."""

    min_side: int = 32
    max_pixels: int = 40_000_000
    max_bytes: int = 64 * 1024 * 1024
    flat_std: float = 2.0  # grey levels, on the shrunk luminance
    flat_side: int = 64  # longer side of the shrunk copy the blank-frame rule measures

    def __post_init__(self) -> None:
        if self.min_side < 1 or self.max_pixels < 1 or self.max_bytes < 1 or self.flat_side < 1:
            raise ValueError(f"input limits must be positive: {self}")
        if not self.flat_std >= 0:  # also refuses NaN
            raise ValueError(f"flat_std must be >= 0, got {self.flat_std}")


DEFAULT_LIMITS = InputLimits()


# ----------------------------------------------------------------------------- headers
def _u16(data: bytes, at: int, order: str) -> int:
    return struct.unpack_from(order + "H", data, at)[0]


def _u32(data: bytes, at: int, order: str) -> int:
    return struct.unpack_from(order + "I", data, at)[0]


def _tiff_entries(block: bytes, wanted: tuple[int, ...]) -> dict[int, tuple[int, int, str]]:
    """(value, offset of the value, byte order) of the ``wanted`` integer tags in the first IFD of a TIFF structure
    (a TIFF file or an EXIF block)."""
    if len(block) < 8 or block[:4] not in (b"II*\x00", b"MM\x00*"):
        return {}
    order = "<" if block[:2] == b"II" else ">"
    ifd = _u32(block, 4, order)
    if ifd + 2 > len(block):
        return {}
    found: dict[int, tuple[int, int, str]] = {}
    for i in range(_u16(block, ifd, order)):
        at = ifd + 2 + 12 * i
        if at + 12 > len(block):
            break
        tag, kind = _u16(block, at, order), _u16(block, at + 2, order)
        if tag in wanted and kind in (3, 4):  # SHORT or LONG, stored in the entry itself
            value = _u16(block, at + 8, order) if kind == 3 else _u32(block, at + 8, order)
            found[tag] = (value, at + 8, order)
    return found


def _tiff_tags(block: bytes, wanted: tuple[int, ...]) -> dict[int, int]:
    return {tag: entry[0] for tag, entry in _tiff_entries(block, wanted).items()}


def _without_tiff_orientation(data: bytes) -> bytes:
    """A TIFF file's bytes with its Orientation set to 1: OpenCV's TIFF decoder applies the tag itself (5.0 does,
    even with IMREAD_UNCHANGED), so the gate neutralises it and applies its own rule, the same on every version."""
    entry = _tiff_entries(data, (0x0112,)).get(0x0112)
    if entry is None or entry[0] == 1:
        return data
    patched = bytearray(data)
    struct.pack_into(entry[2] + "H", patched, entry[1], 1)
    return bytes(patched)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of the JPEG segments before the scan data."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            return
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return
        yield marker, data[i + 4 : i + 2 + length]
        i += 2 + length


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, length) of each PNG chunk's data; only the 8-byte chunk headers are read."""
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        yield kind, i + 8, length
        if kind == b"IEND":
            return
        i += 12 + length


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, start, length) of each chunk of a WebP (RIFF) file."""
    i = 12
    while i + 8 <= len(data):
        length = int.from_bytes(data[i + 4 : i + 8], "little")
        yield data[i : i + 4], i + 8, length
        i += 8 + length + (length & 1)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _webp_size(data: bytes) -> tuple[int, int] | None:
    for fourcc, at, _ in _riff_chunks(data):
        chunk = data[at : at + 10]
        if fourcc == b"VP8X" and len(chunk) >= 10:
            w = int.from_bytes(chunk[4:7], "little") + 1
            return int.from_bytes(chunk[7:10], "little") + 1, w
        if fourcc == b"VP8L" and len(chunk) >= 5 and chunk[0] == 0x2F:
            bits = int.from_bytes(chunk[1:5], "little")
            return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
        if fourcc == b"VP8 " and len(chunk) >= 10 and chunk[3:6] == b"\x9d\x01\x2a":
            return int.from_bytes(chunk[8:10], "little") & 0x3FFF, int.from_bytes(chunk[6:8], "little") & 0x3FFF
        return None  # the first chunk decides
    return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG / JPEG / BMP / TIFF / WebP header, without decoding pixels; None if not recognised."""
    data = bytes(data)  # no copy for bytes; accepts bytearray, memoryview, a uint8 array
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for kind, at, _ in _png_chunks(data):
            if kind == b"IHDR" and at + 8 <= len(data):
                return int.from_bytes(data[at + 4 : at + 8], "big"), int.from_bytes(data[at : at + 4], "big")
            return None  # IHDR must come first
        return None
    if data[:3] == b"\xff\xd8\xff":
        for marker, payload in _jpeg_segments(data):
            if marker in _JPEG_SOF and len(payload) >= 5:
                h, w = int.from_bytes(payload[1:3], "big"), int.from_bytes(payload[3:5], "big")
                return (h, w) if h > 0 else None  # height 0: set later by a DNL marker, size unknown
        return None
    if data[:2] == b"BM" and len(data) >= 26:
        if _u32(data, 14, "<") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return _u16(data, 20, "<"), _u16(data, 18, "<")
        w, h = struct.unpack_from("<ii", data, 18)
        return abs(h), abs(w)  # negative height: rows stored top-down
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        tags = _tiff_tags(data, (256, 257))
        return (tags[257], tags[256]) if len(tags) == 2 else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return None


# ----------------------------------------------------------------------------- EXIF orientation
def _exif_block(data: bytes) -> bytes | None:
    """The TIFF structure that carries the EXIF tags, for each format that can hold one."""
    if data[:3] == b"\xff\xd8\xff":
        for marker, payload in _jpeg_segments(data):
            if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
                return payload[6:]
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for kind, at, length in _png_chunks(data):
            if kind == b"eXIf":
                return data[at : at + length]
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for fourcc, at, length in _riff_chunks(data):
            if fourcc == b"EXIF":
                block = data[at : at + length]
                return block[6:] if block[:6] == b"Exif\x00\x00" else block
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return data
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation (1..8) of an encoded image; 1 ("as stored") when absent or invalid."""
    block = _exif_block(bytes(data))
    value = _tiff_tags(block, (0x0112,)).get(0x0112, 1) if block else 1
    return value if 1 <= value <= 8 else 1


#: How to turn stored pixels (H, W, ...) upright for each EXIF orientation value.
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # needs 90 degrees clockwise
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transverse
    8: lambda a: np.rot90(a, 1),  # needs 90 degrees counter-clockwise
}


# ----------------------------------------------------------------------------- decoding
def decode_pixels(
    data: bytes, source: str, limits: InputLimits | None = None, what: str = "image"
) -> np.ndarray:
    """Byte and header pixel limits, decode as stored (any depth and channels), EXIF orientation applied.

    The first half of :func:`decode_image`, shared with mask reading, which needs the stored values.
    """
    limits = limits or DEFAULT_LIMITS
    data = bytes(data)
    if len(data) == 0:
        raise ImageError(f"{what} file is empty (0 bytes): {source}")
    if len(data) > limits.max_bytes:
        raise InputRejected(
            f"rejected {source}: {len(data)} bytes, over the input gate's limit of {limits.max_bytes} bytes"
        )
    hw = image_size_from_header(data)
    if hw is None:
        raise ImageError(f"cannot decode {what} {source}: not a {FORMATS} file (corrupt, truncated or not an image)")
    if hw[0] * hw[1] > limits.max_pixels:
        raise InputRejected(
            f"rejected {source}: {hw[0]}x{hw[1]} (HxW) is {hw[0] * hw[1]} pixels, over the input gate's limit of "
            f"{limits.max_pixels} (refused before decoding)"
        )
    orientation = exif_orientation(data)
    if orientation != 1 and data[:4] in (b"II*\x00", b"MM\x00*"):
        data = _without_tiff_orientation(data)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"cannot decode {what} {source} (corrupt or not an image): {message}") from exc
    if img is None:
        raise ImageError(f"cannot decode {what} {source} (corrupt, truncated or not an image)")
    if img.size == 0 or img.ndim < 2 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"{what} {source} decodes to an empty image (shape {img.shape})")
    return np.ascontiguousarray(_UPRIGHT[orientation](img))


def to_uint8(img: np.ndarray, source: str, what: str = "image") -> np.ndarray:
    """Decoded pixel values as uint8 (rules in the module docstring)."""
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
    raise ImageError(f"unsupported pixel type {img.dtype} in {what} {source}")


def to_rgb(img: np.ndarray, source: str) -> np.ndarray:
    """uint8 as decoded by OpenCV (gray, BGR or BGRA) -> ``H x W x 3`` RGB; alpha is dropped, not composited."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3:
        raise ImageError(f"unsupported image layout (shape {img.shape}) in {source}")
    channels = img.shape[2]
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported number of channels ({channels}) in image {source}; expected 1, 3 or 4")


def decode_image(data: bytes, source: str, limits: InputLimits | None = None) -> np.ndarray:
    """Encoded bytes -> gated ``uint8`` ``H x W x 3`` RGB; the one decode every path uses.

    Raises :class:`ImageError` when the bytes cannot be decoded and :class:`InputRejected` when the input cannot be
    trusted (too many bytes or pixels, too small, blank); either message is one line naming ``source``.
    """
    limits = limits or DEFAULT_LIMITS
    rgb = to_rgb(to_uint8(decode_pixels(data, source, limits), source), source)
    check_frame(rgb, source, limits)
    return rgb


def flat_std(rgb: np.ndarray, side: int) -> float:
    """Standard deviation of the luminance after shrinking (area average) to at most ``side`` on the longer side."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    scale = side / max(gray.shape)
    if scale < 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return float(gray.std(dtype=np.float64))


def check_frame(rgb: np.ndarray, source: str, limits: InputLimits | None = None) -> None:
    """Size and blank-frame checks on an already decoded RGB frame (files after decoding, camera frames as they come).

    Raises :class:`InputRejected` with one line naming ``source`` and the reason.
    """
    limits = limits or DEFAULT_LIMITS
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputRejected(f"rejected {source}: expected a uint8 HxWx3 RGB frame, got {got}")
    h, w = rgb.shape[:2]
    if min(h, w) < limits.min_side:
        raise InputRejected(
            f"rejected {source}: {h}x{w} (HxW) is too small; the input gate needs at least {limits.min_side} "
            "pixels on each side"
        )
    if h * w > limits.max_pixels:
        raise InputRejected(
            f"rejected {source}: {h}x{w} (HxW) is {h * w} pixels, over the input gate's limit of {limits.max_pixels}"
        )
    if limits.flat_std > 0:
        spread = flat_std(rgb, limits.flat_side)
        if spread < limits.flat_std:
            raise InputRejected(
                f"rejected {source}: blank or flat frame (luminance std {spread:.2f} grey levels, below "
                f"{limits.flat_std:g}): a dead camera, a covered lens or an empty frame is never scored"
            )
