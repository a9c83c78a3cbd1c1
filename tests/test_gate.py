"""edge_ad.data.gate: header sizes, the pixel limit before decoding, size and blank-frame checks, EXIF orientation."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data import gate
from edge_ad.data.gate import (
    DEFAULT_LIMITS,
    InputLimits,
    InputRejected,
    check_frame,
    decode_image,
    exif_orientation,
    image_size_from_header,
)
from edge_ad.data.images import ImageError, read_image
from tests.layering import assert_runs_without


# ----------------------------------------------------------------------------- builders
def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture with structure everywhere (passes the blank-frame rule, survives JPEG well)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _encode(rgb: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params or [])
    assert ok, ext
    return buf.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _black_1bit_png(h: int, w: int) -> bytes:
    """A valid all-black 1-bit grayscale PNG, built row by row: 20000x20000 is ~50 kB on disk, 400 MB decoded."""
    packer = zlib.compressobj(9)
    row = b"\x00" + bytes((w + 7) // 8)  # filter type 0, then zero bits
    idat = b"".join(packer.compress(row) for _ in range(h)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _exif_tiff(orientation: int, order: str = "<") -> bytes:
    """A TIFF structure with one IFD holding only the Orientation tag (0x0112, SHORT)."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 1) + entry + struct.pack(order + "I", 0)


def _jpeg_with_orientation(jpeg: bytes, orientation: int, order: str = "<") -> bytes:
    """Insert an APP1 Exif segment right after the SOI marker."""
    payload = b"Exif\x00\x00" + _exif_tiff(orientation, order)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _png_with_orientation(png: bytes, orientation: int) -> bytes:
    """Insert an eXIf chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + _png_chunk(b"eXIf", _exif_tiff(orientation)) + png[33:]


def _webp_with_orientation(webp_vp8l: bytes, h: int, w: int, orientation: int) -> bytes:
    """Extended WebP: VP8X (EXIF flag, canvas size) + the image chunk of a simple WebP + an EXIF chunk."""
    vp8x = bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    exif = _exif_tiff(orientation)
    pad = b"\x00" if len(exif) & 1 else b""
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x + webp_vp8l[12:] + b"EXIF" + struct.pack("<I", len(exif))
    body += exif + pad
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _rgb_tiff(rgb: np.ndarray, orientation: int) -> bytes:
    """A baseline uncompressed RGB TIFF (one strip) whose IFD carries ``orientation``."""
    h, w = rgb.shape[:2]
    pixels = np.ascontiguousarray(rgb).tobytes()
    n_tags = 11
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * n_tags + 4  # BitsPerSample values live after the IFD
    data_at = extra_at + 6
    entries = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, extra_at),
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, data_at),
        (274, 3, 1, orientation),
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),  # chunky
    ]
    ifd = struct.pack("<H", n_tags)
    for tag, kind, count, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + struct.pack("<HHH", 8, 8, 8) + pixels


#: What each EXIF orientation means, written independently of the gate: stored pixels -> upright picture.
_EXPECTED_UPRIGHT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.fliplr(np.rot90(a, -1)),  # mirror after rotating 90 clockwise = transpose
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.fliplr(np.rot90(a, 1)),  # mirror after rotating 90 counter-clockwise = transverse
    8: lambda a: np.rot90(a, 1),
}


# ----------------------------------------------------------------------------- headers
@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".png", []),
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".tiff", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy: VP8
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
    ],
)
def test_header_size_matches_the_decoded_image(ext: str, params: list[int]) -> None:
    data = _encode(_textured(37, 53), ext, params)
    assert image_size_from_header(data) == (37, 53)
    assert decode_image(data, "x", InputLimits(min_side=1)).shape == (37, 53, 3)


def test_header_size_of_extended_webp_and_raw_tiff() -> None:
    rgb = _textured(40, 56)
    webp = _webp_with_orientation(_encode(rgb, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), 40, 56, 1)
    assert webp[12:16] == b"VP8X" and image_size_from_header(webp) == (40, 56)
    assert image_size_from_header(_rgb_tiff(rgb, 1)) == (40, 56)


def test_unrecognised_bytes_are_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    gif = b"GIF89a" + bytes(100)
    assert image_size_from_header(gif) is None and image_size_from_header(b"hello") is None
    monkeypatch.setattr(gate.cv2, "imdecode", _must_not_decode)
    with pytest.raises(ImageError, match="anim.gif: not a PNG, JPEG") as info:
        decode_image(gif, "anim.gif")
    assert not isinstance(info.value, InputRejected)  # undecodable, not "untrusted"


def _must_not_decode(*args: object) -> None:
    raise AssertionError("cv2.imdecode was called")


# ----------------------------------------------------------------------------- limits before decoding
def test_a_20000x20000_png_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _black_1bit_png(20000, 20000)
    assert len(data) < 200_000 and image_size_from_header(data) == (20000, 20000)
    monkeypatch.setattr(gate.cv2, "imdecode", _must_not_decode)
    with pytest.raises(InputRejected, match=r"bomb\.png: 20000x20000 \(HxW\) is 400000000 pixels.*before decoding"):
        decode_image(data, "bomb.png")


def test_the_bomb_builder_makes_a_real_png() -> None:
    small = _black_1bit_png(40, 48)
    decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape == (40, 48) and decoded.max() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc (Linux only)")
def test_refusing_the_bomb_keeps_peak_memory_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_black_1bit_png(20000, 20000))
    # VmHWM (this process's own peak RSS, in kB), not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so
    # a child of a large pytest process would report the parent's peak.
    code = (
        "from edge_ad.data.gate import InputRejected\n"
        "from edge_ad.data.images import read_image\n"
        "try:\n"
        f"    read_image({str(path)!r})\n"
        "except InputRejected:\n"
        "    status = open('/proc/self/status').read()\n"
        "    print(next(line.split()[1] for line in status.splitlines() if line.startswith('VmHWM:')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    peak_mib = int(result.stdout) / 1024
    assert peak_mib < 250, f"peak {peak_mib:.0f} MiB: the 400-megapixel image was decoded"  # decoding it: ~800 MiB


def test_byte_limit(tmp_path: Path) -> None:
    data = _encode(_textured(64, 64), ".png")
    limits = InputLimits(max_bytes=len(data) - 1)
    with pytest.raises(InputRejected, match=rf"big\.png: {len(data)} bytes, over .* limit of {len(data) - 1}"):
        decode_image(data, "big.png", limits)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(InputRejected, match="big.png"):
        read_image(path, limits)
    assert read_image(path).shape == (64, 64, 3)


def test_defaults_are_the_documented_ones() -> None:
    assert (DEFAULT_LIMITS.min_side, DEFAULT_LIMITS.max_pixels, DEFAULT_LIMITS.max_bytes) == (
        32,
        40_000_000,
        64 * 1024 * 1024,
    )
    with pytest.raises(ValueError):
        InputLimits(min_side=0)
    with pytest.raises(ValueError):
        InputLimits(flat_std=float("nan"))


# ----------------------------------------------------------------------------- frame checks
@pytest.mark.parametrize(("h", "w"), [(1, 1), (31, 200), (200, 31)])
def test_too_small_is_refused(h: int, w: int) -> None:
    data = _encode(_textured(h, w), ".png")
    with pytest.raises(InputRejected, match=rf"tiny\.png: {h}x{w} \(HxW\) is too small"):
        decode_image(data, "tiny.png")


def test_smallest_allowed_size_passes() -> None:
    assert decode_image(_encode(_textured(32, 32), ".png"), "ok.png").shape == (32, 32, 3)


def _dead_frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    noisy = np.clip(rng.normal(3.0, 4.0, (480, 640, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    return {
        "black": np.zeros((256, 256, 3), np.uint8),
        "white": np.full((300, 200, 3), 255, np.uint8),
        "uniform colour": np.full((64, 64, 3), (90, 140, 30), np.uint8),
        "black with sensor noise": noisy,
    }


@pytest.mark.parametrize("name", list(_dead_frames()))
def test_blank_frames_are_refused(name: str) -> None:
    frame = _dead_frames()[name]
    with pytest.raises(InputRejected, match=r"camera-1: blank or flat frame"):
        check_frame(frame, "camera-1")
    with pytest.raises(InputRejected, match=r"frame\.png: blank or flat frame"):
        decode_image(_encode(frame, ".png"), "frame.png")


def test_blank_rule_can_be_switched_off() -> None:
    check_frame(np.zeros((64, 64, 3), np.uint8), "black", InputLimits(flat_std=0.0))


def test_every_demo_image_passes_the_gate(tmp_path: Path) -> None:
    from edge_ad.datasets.demo import DEMO_CATEGORIES, make_demo_dataset

    folders = make_demo_dataset(tmp_path, None, seed=0, n_train=3, n_test_good=2, n_test_per_defect=2, image_size=96)
    assert {f.name for f in folders} == set(DEMO_CATEGORIES)
    images = [p for f in folders for p in sorted(f.rglob("*.png")) if "ground_truth" not in p.parts]
    defect_dirs = {p.parent for p in images if p.parent.name != "good"}
    assert len(defect_dirs) >= 2 * len(folders)  # defective images of every category are included
    for path in images:
        rgb = read_image(path)  # default limits: raises if the gate refused it
        # with room to spare: measured >= 9.4 grey levels on every category at 64, 96 and 256 pixels
        assert gate.flat_std(rgb, DEFAULT_LIMITS.flat_side) > 3 * DEFAULT_LIMITS.flat_std, path


def test_check_frame_refuses_what_is_not_an_rgb_frame() -> None:
    with pytest.raises(InputRejected, match="cam: expected a uint8 HxWx3 RGB frame, got float32"):
        check_frame(np.zeros((64, 64, 3), np.float32), "cam")
    with pytest.raises(InputRejected, match="cam: expected a uint8 HxWx3"):
        check_frame(np.zeros((64, 64), np.uint8), "cam")


def test_rejection_is_an_image_error_and_one_line() -> None:
    with pytest.raises(ImageError) as info:
        check_frame(np.zeros((256, 256, 3), np.uint8), "dead.png")
    assert "\n" not in str(info.value) and "dead.png" in str(info.value)


# ----------------------------------------------------------------------------- EXIF orientation
def test_jpeg_orientation_6_is_scored_upright() -> None:
    upright = _textured(64, 96, seed=3)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # the camera stored it sideways (96x64)...
    jpeg = _jpeg_with_orientation(_encode(stored, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), 6)  # ...and said so
    assert exif_orientation(jpeg) == 6
    out = decode_image(jpeg, "phone.jpg")
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright.astype(int)).mean() < 3.0  # JPEG tolerance
    as_stored = decode_image(_encode(stored, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), "plain.jpg")
    assert as_stored.shape == (96, 64, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_opencvs_own_exif_rule(orientation: int) -> None:
    stored = _textured(40, 56, seed=orientation)
    jpeg = _jpeg_with_orientation(_encode(stored, ".jpg"), orientation)
    png = _png_with_orientation(_encode(stored, ".png"), orientation)
    for data in (jpeg, png):
        # OpenCV applies EXIF itself with IMREAD_COLOR (not with IMREAD_UNCHANGED, which keeps depth and alpha)
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(decode_image(data, "x"), reference)
    np.testing.assert_array_equal(decode_image(png, "x"), _EXPECTED_UPRIGHT[orientation](stored))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_in_tiff_and_webp(orientation: int) -> None:
    stored = _textured(40, 56, seed=10 + orientation)
    expected = _EXPECTED_UPRIGHT[orientation](stored)
    tiff = _rgb_tiff(stored, orientation)
    np.testing.assert_array_equal(decode_image(tiff, "scan.tif"), expected)
    # OpenCV's TIFF decoder would rotate by itself; the gate hands it the tag set to 1 so the rotation happens once
    neutral = gate._without_tiff_orientation(tiff)
    assert exif_orientation(neutral) == 1 and len(neutral) == len(tiff)
    as_stored = cv2.imdecode(np.frombuffer(neutral, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(as_stored, stored)
    webp = _webp_with_orientation(_encode(stored, ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), 40, 56, orientation)
    np.testing.assert_array_equal(decode_image(webp, "web.webp"), expected)


def test_big_endian_exif_and_invalid_values() -> None:
    jpeg = _encode(_textured(40, 56), ".jpg")
    assert exif_orientation(_jpeg_with_orientation(jpeg, 8, order=">")) == 8
    assert decode_image(_jpeg_with_orientation(jpeg, 8, order=">"), "x").shape == (56, 40, 3)
    for bad in (0, 9, 300):
        assert exif_orientation(_jpeg_with_orientation(jpeg, bad)) == 1
    assert exif_orientation(jpeg) == 1 and exif_orientation(b"") == 1


def test_training_and_scoring_read_the_same_upright_pixels(tmp_path: Path) -> None:
    stored = _textured(48, 64, seed=7)
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(_encode(stored, ".jpg"), 6))
    from_file = read_image(path)
    np.testing.assert_array_equal(from_file, decode_image(path.read_bytes(), str(path)))
    assert from_file.shape == (64, 48, 3)


# ----------------------------------------------------------------------------- layering
def test_gate_imports_no_torch() -> None:
    assert_runs_without("import edge_ad.data.gate, edge_ad.data.images", ["torch"])
