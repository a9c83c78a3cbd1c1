"""Finding training images and test samples on disk (pathlib only: nothing here reads pixels).

Supported layouts:

- MVTec AD::

      CATEGORY/train/good/*.png
      CATEGORY/test/good/*.png                      -> label 0, no mask
      CATEGORY/test/<defect>/*.png                  -> label 1
      CATEGORY/ground_truth/<defect>/<stem>_mask.png

- a plain folder of good images (training only): ``FOLDER/*.png``.

A "category folder" is a folder with a ``train/`` or ``test/`` subfolder. Image files are recognised by
suffix (the same list as :data:`edge_ad.data.images.IMAGE_EXTENSIONS`, any case); hidden files and
folders (names starting with ``.``) are ignored. Every listing is sorted by name, so the order is the
same on every machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetError", "Sample", "categories", "resolve_category", "test_samples", "train_images"]

# Kept in sync with edge_ad.data.images.IMAGE_EXTENSIONS (a test checks it); duplicated so this module
# needs nothing beyond pathlib.
_IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

GOOD = "good"


class DatasetError(ValueError):
    """The dataset folder does not have the expected layout (the message says what is missing)."""


@dataclass(frozen=True)
class Sample:
    """One test image."""

    path: Path
    label: int  # 0 good, 1 anomalous
    defect: str  # "good" or the defect folder name
    mask_path: Path | None  # None for good images (and for defects without a mask when not required)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir() if _visible(p) and p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _visible(p) and p.is_dir()), key=lambda p: p.name)


def _is_category(folder: Path) -> bool:
    return (folder / "train").is_dir() or (folder / "test").is_dir()


def _require_dir(folder: Path, what: str) -> None:
    if not folder.is_dir():
        if folder.exists():
            raise DatasetError(f"{what} is not a folder: {folder}")
        raise DatasetError(f"{what} not found: {folder}")


def categories(data_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the subfolders of ``data_dir`` that look like categories (have ``train/`` or ``test/``)."""
    root = Path(data_dir)
    _require_dir(root, "data folder")
    return [p.name for p in _subfolders(root) if _is_category(p)]


def _available(root: Path) -> str:
    cats = categories(root)
    return ", ".join(cats) if cats else "(none found)"


def resolve_category(data_dir: str | os.PathLike[str], category: str | None) -> Path:
    """The folder holding one category's data.

    With ``category``: ``data_dir/category`` must be an existing folder. Without: ``data_dir`` itself must
    be a category folder (has ``train/`` or ``test/``) or a plain folder of images. Otherwise a
    :class:`DatasetError` lists the categories available under ``data_dir``.
    """
    root = Path(data_dir)
    _require_dir(root, "data folder")
    if category is not None:
        if not category or Path(category).name != category or category in (".", ".."):
            raise DatasetError(f"invalid category name {category!r}; available categories: {_available(root)}")
        cat_dir = root / category
        if not cat_dir.is_dir():
            raise DatasetError(f"category {category!r} not found in {root}; available categories: {_available(root)}")
        return cat_dir
    if _is_category(root) or _images_in(root):
        return root
    raise DatasetError(
        f"{root} is neither a category folder (with train/ or test/) nor a folder of images; "
        f"choose a category: available categories: {_available(root)}"
    )


def train_images(category_dir: str | os.PathLike[str]) -> list[Path]:
    """Good training images: ``train/good/*`` in the MVTec layout, else the images directly in the folder.

    Raises :class:`DatasetError` when none are found.
    """
    root = Path(category_dir)
    _require_dir(root, "category folder")
    train = root / "train"
    if train.is_dir():
        good = train / GOOD
        if not good.is_dir():
            raise DatasetError(f"{train} exists but has no '{GOOD}' subfolder (expected {good})")
        images = _images_in(good)
        if not images:
            raise DatasetError(f"no training images in {good}")
        return images
    images = _images_in(root)
    if not images:
        raise DatasetError(
            f"no training images in {root}: expected {train / GOOD} (MVTec layout) "
            "or image files directly in the folder"
        )
    return images


def test_samples(category_dir: str | os.PathLike[str], require_masks: bool = True) -> list[Sample]:
    """All test images of a category, sorted by defect folder name, then file name.

    ``test/good`` images get label 0 and no mask; images in any other ``test/<defect>`` folder get label 1
    and the mask path ``ground_truth/<defect>/<stem>_mask.png``. A missing mask raises
    :class:`DatasetError` naming the image and the expected mask path when ``require_masks`` is true;
    otherwise that sample's ``mask_path`` is None.
    """
    root = Path(category_dir)
    _require_dir(root, "category folder")
    test = root / "test"
    if not test.is_dir():
        raise DatasetError(f"no test folder in {root} (expected {test}/<good|defect>/*.png)")
    samples: list[Sample] = []
    for folder in _subfolders(test):
        defect = folder.name
        for img in _images_in(folder):
            if defect == GOOD:
                samples.append(Sample(path=img, label=0, defect=defect, mask_path=None))
                continue
            mask = root / "ground_truth" / defect / f"{img.stem}_mask.png"
            if not mask.is_file():
                if require_masks:
                    raise DatasetError(f"mask missing for test image {img}: expected {mask}")
                mask = None
            samples.append(Sample(path=img, label=1, defect=defect, mask_path=mask))
    if not samples:
        raise DatasetError(f"no test images in {test}")
    return samples


# The name starts with "test": tell pytest it is not a test when a test module imports it.
test_samples.__test__ = False  # type: ignore[attr-defined]
