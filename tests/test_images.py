"""edge_ad.data.images: decoding, colour/bit-depth conversion, masks and folder listing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data import layout
from edge_ad.data.gate import InputLimits, InputRejected
from edge_ad.data.images import IMAGE_EXTENSIONS, ImageError, list_images, read_image, read_mask
from tests.layering import assert_runs_without

# The conversion tests use tiny, uniform images: they test the decode rules with the gate's size and blank-frame
# checks switched off on purpose (the gate itself is tested in test_gate.py and below, with its defaults).
_NO_FRAME_CHECKS = InputLimits(min_side=1, flat_std=0.0)


def _write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img), path
    return path


def _bgr_test_image() -> np.ndarray:
    img = np.zeros((6, 8, 3), np.uint8)
    img[..., 0] = 10  # B
    img[..., 1] = 20  # G
    img[..., 2] = 200  # R
    img[0, 0] = (1, 2, 3)
    return img


# ----------------------------------------------------------------------------- conversions
def test_colour_png_is_rgb(tmp_path: Path) -> None:
    out = read_image(_write(tmp_path / "c.png", _bgr_test_image()), _NO_FRAME_CHECKS)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert tuple(out[1, 1]) == (200, 20, 10)
    assert tuple(out[0, 0]) == (3, 2, 1)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    out = read_image(_write(tmp_path / "g.png", gray), _NO_FRAME_CHECKS)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_alpha_is_dropped_not_composited(tmp_path: Path) -> None:
    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., :3] = (30, 60, 90)  # B, G, R
    bgra[..., 3] = 0  # fully transparent: colours are still used as stored
    bgra[0, 0, 3] = 255
    out = read_image(_write(tmp_path / "a.png", bgra), _NO_FRAME_CHECKS)
    assert out.shape == (3, 4, 3)
    assert (out == np.array([90, 60, 30], np.uint8)).all()


def test_16bit_is_scaled_by_257(tmp_path: Path) -> None:
    vals = np.array([[0, 257, 65535, 1000, 128, 129]], np.uint16)
    out = read_image(_write(tmp_path / "d.png", vals), _NO_FRAME_CHECKS)
    expected = np.rint(vals / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    assert list(expected[0]) == [0, 1, 255, 4, 0, 1]


def test_16bit_colour_is_scaled_and_rgb(tmp_path: Path) -> None:
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[..., 0] = 257 * 10
    bgr[..., 2] = 65535
    out = read_image(_write(tmp_path / "d3.png", bgr), _NO_FRAME_CHECKS)
    assert tuple(out[0, 0]) == (255, 0, 10)


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path) -> None:
    f = np.array([[0.0, 0.5, 1.0, -0.2]], np.float32)
    out = read_image(_write(tmp_path / "f.tiff", f), _NO_FRAME_CHECKS)
    assert out.dtype == np.uint8
    assert list(out[0, :, 0]) == [0, 128, 255, 0]


def test_float_tiff_in_0_255_range_is_clipped(tmp_path: Path) -> None:
    f = np.array([[0.0, 12.4, 254.6, 300.0, -5.0]], np.float32)
    out = read_image(_write(tmp_path / "f255.tif", f), _NO_FRAME_CHECKS)
    assert list(out[0, :, 1]) == [0, 12, 255, 255, 0]


def test_jpeg_and_uppercase_extension(tmp_path: Path) -> None:
    img = np.full((8, 8, 3), 128, np.uint8)
    p = _write(tmp_path / "x.jpg", img)
    upper = p.rename(tmp_path / "X.JPG")
    out = read_image(upper, _NO_FRAME_CHECKS)
    assert out.shape == (8, 8, 3)
    assert np.abs(out.astype(int) - 128).max() <= 2


def test_unicode_path(tmp_path: Path) -> None:
    d = tmp_path / "données_é"
    d.mkdir()
    p = d / "image_ü.png"
    ok, buf = cv2.imencode(".png", _bgr_test_image())
    assert ok
    p.write_bytes(buf.tobytes())
    assert read_image(p, _NO_FRAME_CHECKS).shape == (6, 8, 3)
    assert read_image(str(p), _NO_FRAME_CHECKS).shape == (6, 8, 3)


# ----------------------------------------------------------------------------- errors
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "folder.png"
    d.mkdir()
    with pytest.raises(ImageError, match="folder.png"):
        read_image(d)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        read_image(p)


def test_text_file_renamed_png(tmp_path: Path) -> None:
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageError, match="notes.png"):
        read_image(p)


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert ok
    p = tmp_path / "trunc.png"
    p.write_bytes(buf.tobytes()[: len(buf) // 3])
    with pytest.raises(ImageError, match="trunc.png"):
        read_image(p)


def test_read_image_goes_through_the_gate_with_its_defaults(tmp_path: Path) -> None:
    black = _write(tmp_path / "dead_camera.png", np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(InputRejected, match=r"dead_camera\.png: blank or flat frame"):
        read_image(black)
    tiny = _write(tmp_path / "thumb.png", _bgr_test_image())
    with pytest.raises(InputRejected, match=r"thumb\.png: 6x8 \(HxW\) is too small"):
        read_image(tiny)
    assert read_image(black, _NO_FRAME_CHECKS).shape == (256, 256, 3)


def test_error_is_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        read_image(tmp_path / "missing.jpg")


# ----------------------------------------------------------------------------- masks
def test_mask_threshold_and_shape(tmp_path: Path) -> None:
    m = np.array([[0, 127, 128, 255]], np.uint8)
    out = read_mask(_write(tmp_path / "m_mask.png", m), (1, 4))
    assert out.dtype == bool
    assert list(out[0]) == [False, False, True, True]


def test_mask_16bit_scaled_first(tmp_path: Path) -> None:
    m = np.array([[0, 127 * 257, 128 * 257, 65535]], np.uint16)
    out = read_mask(_write(tmp_path / "m16.png", m), (1, 4))
    assert list(out[0]) == [False, False, True, True]


def test_mask_colour_any_channel(tmp_path: Path) -> None:
    m = np.zeros((2, 2, 3), np.uint8)
    m[0, 0, 2] = 255
    out = read_mask(_write(tmp_path / "mc.png", m), (2, 2))
    assert out.tolist() == [[True, False], [False, False]]


def test_all_black_mask_of_a_good_image_is_read(tmp_path: Path) -> None:
    out = read_mask(_write(tmp_path / "good_mask.png", np.zeros((256, 256), np.uint8)), (256, 256))
    assert out.shape == (256, 256) and not out.any()  # masks are not frames: no blank-frame or size rule


def test_mask_missing(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"mask missing.*gone_mask\.png"):
        read_mask(tmp_path / "gone_mask.png", (4, 4))


def test_mask_wrong_size_names_both_shapes(tmp_path: Path) -> None:
    p = _write(tmp_path / "small_mask.png", np.zeros((5, 7), np.uint8))
    with pytest.raises(ImageError, match="small_mask.png") as info:
        read_mask(p, (10, 12))
    msg = str(info.value)
    assert "5x7" in msg and "10x12" in msg


def test_mask_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "bad_mask.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="bad_mask.png"):
        read_mask(p, (4, 4))


# ----------------------------------------------------------------------------- listing
def test_list_images_sorted_non_recursive_by_extension(tmp_path: Path) -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    for name in ("b.png", "a.JPG", "c.bmp", "d.tiff"):
        _write(tmp_path / name.lower(), img)
    (tmp_path / "a.jpg").rename(tmp_path / "a.JPG")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "._b.png").write_bytes(b"\x00\x05")  # macOS resource fork
    sub = tmp_path / "sub"
    sub.mkdir()
    _write(sub / "e.png", img)
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.bmp", "d.tiff"]


def test_list_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nope"):
        list_images(tmp_path / "nope")


def test_extensions() -> None:
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    # layout.py keeps its own copy so it needs nothing beyond pathlib; they must agree.
    assert set(layout._IMAGE_EXTENSIONS) == set(IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------- no torch
def test_data_modules_do_not_import_torch() -> None:
    assert_runs_without(
        "import edge_ad.data.gate, edge_ad.data.images, edge_ad.data.preprocess, edge_ad.data.layout", ["torch"]
    )
