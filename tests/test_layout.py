"""edge_ad.data.layout: MVTec AD and plain-folder datasets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

# Imported as a module: a bare ``test_samples`` name would look like a test to pytest.
from edge_ad.data import layout
from edge_ad.data.layout import DatasetError, Sample


def _img(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((size, size, 3), np.uint8))
    return path


def _mask(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size), 255, np.uint8))
    return path


def _mvtec_category(root: Path, name: str = "bottle", with_masks: bool = True) -> Path:
    cat = root / name
    for i in range(3):
        _img(cat / "train" / "good" / f"{i:03d}.png")
    (cat / "train" / "good" / "notes.txt").write_text("ignored")
    _img(cat / "test" / "good" / "000.png")
    _img(cat / "test" / "good" / "001.png")
    for defect in ("scratch", "broken_large"):
        for i in (1, 0):
            _img(cat / "test" / defect / f"{i:03d}.png")
            if with_masks:
                _mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    return cat


# ----------------------------------------------------------------------------- training images
def test_train_images_mvtec(tmp_path: Path) -> None:
    cat = _mvtec_category(tmp_path)
    imgs = layout.train_images(cat)
    assert [p.name for p in imgs] == ["000.png", "001.png", "002.png"]
    assert all(p.parent == cat / "train" / "good" for p in imgs)


def test_train_images_plain_folder(tmp_path: Path) -> None:
    d = tmp_path / "parts"
    _img(d / "b.jpg")
    _img(d / "a.png")
    _img(d / "nested" / "c.png")  # not recursive
    assert [p.name for p in layout.train_images(d)] == ["a.png", "b.jpg"]


def test_train_images_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no training images"):
        layout.train_images(empty)
    with pytest.raises(DatasetError, match="not found"):
        layout.train_images(tmp_path / "missing")
    cat = tmp_path / "cat"
    (cat / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no training images"):
        layout.train_images(cat)
    cat2 = tmp_path / "cat2"
    (cat2 / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="good"):
        layout.train_images(cat2)


# ----------------------------------------------------------------------------- test samples
def test_test_samples_with_masks(tmp_path: Path) -> None:
    cat = _mvtec_category(tmp_path)
    samples = layout.test_samples(cat)
    assert [(s.defect, s.path.name, s.label) for s in samples] == [
        ("broken_large", "000.png", 1),
        ("broken_large", "001.png", 1),
        ("good", "000.png", 0),
        ("good", "001.png", 0),
        ("scratch", "000.png", 1),
        ("scratch", "001.png", 1),
    ]
    for s in samples:
        assert isinstance(s, Sample)
        if s.label == 0:
            assert s.mask_path is None
        else:
            assert s.mask_path == cat / "ground_truth" / s.defect / f"{s.path.stem}_mask.png"
            assert s.mask_path.is_file()
    assert layout.test_samples(cat) == samples  # deterministic


def test_missing_mask_error_names_image_and_mask(tmp_path: Path) -> None:
    cat = _mvtec_category(tmp_path)
    (cat / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(DatasetError) as info:
        layout.test_samples(cat)
    msg = str(info.value)
    assert str(cat / "test" / "scratch" / "001.png") in msg
    assert str(cat / "ground_truth" / "scratch" / "001_mask.png") in msg


def test_missing_masks_allowed_when_not_required(tmp_path: Path) -> None:
    cat = _mvtec_category(tmp_path, with_masks=False)
    samples = layout.test_samples(cat, require_masks=False)
    assert len(samples) == 6
    assert all(s.mask_path is None for s in samples)
    assert sum(s.label for s in samples) == 4


def test_test_samples_errors(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    _img(d / "a.png")
    with pytest.raises(DatasetError, match="no test folder"):
        layout.test_samples(d)
    (d / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no test images"):
        layout.test_samples(d)


def test_test_samples_is_not_collected_by_pytest() -> None:
    assert layout.test_samples.__test__ is False


# ----------------------------------------------------------------------------- categories
def test_categories_and_resolve(tmp_path: Path) -> None:
    root = tmp_path / "mvtec"
    _mvtec_category(root, "bottle")
    _mvtec_category(root, "cable")
    (root / "not_a_category").mkdir()
    (root / ".cache" / "train").mkdir(parents=True)
    (root / "license.txt").write_text("x")
    assert layout.categories(root) == ["bottle", "cable"]
    assert layout.resolve_category(root, "cable") == root / "cable"
    assert layout.resolve_category(root / "bottle", None) == root / "bottle"


def test_resolve_unknown_category_lists_available(tmp_path: Path) -> None:
    root = tmp_path / "mvtec"
    _mvtec_category(root, "bottle")
    _mvtec_category(root, "cable")
    with pytest.raises(DatasetError, match="screw") as info:
        layout.resolve_category(root, "screw")
    assert "bottle, cable" in str(info.value)
    with pytest.raises(DatasetError, match="bottle, cable"):
        layout.resolve_category(root, None)  # root of several categories, none chosen
    with pytest.raises(DatasetError, match="bottle, cable"):
        layout.resolve_category(root, "../mvtec")


def test_resolve_plain_folder_and_missing_dirs(tmp_path: Path) -> None:
    d = tmp_path / "goods"
    _img(d / "x.png")
    assert layout.resolve_category(d, None) == d
    with pytest.raises(DatasetError, match="not found"):
        layout.resolve_category(tmp_path / "missing", None)
    with pytest.raises(DatasetError, match="none found"):
        layout.resolve_category(tmp_path / "goods", "bottle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="none found"):
        layout.resolve_category(empty, None)
    with pytest.raises(DatasetError, match="not found"):
        layout.categories(tmp_path / "missing")
