"""A small procedural anomaly-detection dataset in MVTec AD layout (numpy + OpenCV only).

Why: the demo, the tests and the docs need a dataset that is always there (no download, no licence
question) and that is still a fair test of a detector trained on good images only. So the good images
vary the way real inspection images do (multi-scale texture, small shifts and rotations of the pattern
or part, lighting gradients, slight colour and exposure changes, optical blur, sensor noise), and the
defects are modest, soft-edged and blended into the surface (a stain keeps the texture under it) rather
than saturated patches that any random feature would flag. A defect's mean intensity stays inside the
range of good pixels, so a per-pixel intensity threshold does not solve the task.

Layout written by :func:`make_demo_dataset`::

    ROOT/<category>/train/good/000.png ...
    ROOT/<category>/test/good/000.png ...
    ROOT/<category>/test/<defect_type>/000.png ...
    ROOT/<category>/ground_truth/<defect_type>/000_mask.png    (uint8 0/255, same H x W as the image)

Every image is drawn from its own random stream derived from ``(seed, category, split, defect type,
index)``, so the same seed gives byte-identical PNGs, and changing one count does not change any other
image. Texture defects are centred in the middle 44 % of each side and the part stays well inside the
frame, so a centre crop (e.g. 256 -> 224) keeps every defect.

The drawing helpers live in :mod:`edge_ad.datasets.demo_drawing`, the scenes and defects in
:mod:`edge_ad.datasets.demo_scenes`; this module holds the categories and writes the dataset.
"""

from __future__ import annotations

import operator
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from edge_ad.datasets.demo_scenes import (
    _brushed_metal,
    _Defect,
    _fabric_color,
    _fabric_hole,
    _fabric_thread,
    _finish,
    _metal_dent,
    _metal_scratch,
    _metal_stain,
    _Scene,
    _washer,
    _washer_crack,
    _washer_missing_piece,
    _washer_rust,
    _woven_fabric,
)
from edge_ad.io import atomic_write_bytes

__all__ = [
    "DEFAULT_DEMO_CATEGORY",
    "DEMO_CATEGORIES",
    "DEMO_DEFECT_TYPES",
    "make_demo_dataset",
    "render_demo_sample",
]

# Smallest image side that still leaves room for the weave period, thin defects and the part's bevels.
_MIN_IMAGE_SIZE = 64


# --------------------------------------------------------------------------------------------------
# Registry and public API
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Category:
    render: Callable[[np.random.Generator, int], _Scene]
    defects: Mapping[str, _Defect]


_CATEGORIES: dict[str, _Category] = {
    "brushed_metal": _Category(_brushed_metal, {"scratch": _metal_scratch, "dent": _metal_dent, "stain": _metal_stain}),
    "woven_fabric": _Category(_woven_fabric, {"hole": _fabric_hole, "color": _fabric_color, "thread": _fabric_thread}),
    "washer": _Category(
        _washer, {"crack": _washer_crack, "missing_piece": _washer_missing_piece, "rust": _washer_rust}
    ),
}

#: Names of the procedural categories: two textures and one object on a background.
DEMO_CATEGORIES: tuple[str, ...] = tuple(_CATEGORIES)
#: The category the demo uses when none is given (a texture: defects can sit anywhere on it).
DEFAULT_DEMO_CATEGORY: str = "brushed_metal"
#: Defect types per category (the folder names under ``test/`` and ``ground_truth/``).
DEMO_DEFECT_TYPES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: tuple(cat.defects) for name, cat in _CATEGORIES.items()}
)

_SPLITS = {"train": 0, "test": 1}


def _check_category(name: str) -> _Category:
    """Look up a category, naming the valid ones in the error (a typo should not fail silently)."""
    if name not in _CATEGORIES:
        raise ValueError(f"unknown demo category {name!r}; choose from {', '.join(DEMO_CATEGORIES)}")
    return _CATEGORIES[name]


def _as_int(value: object, what: str) -> int:
    """Integers only (no floats, no bools), reported as ValueError like every other bad argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_size(image_size: int) -> int:
    size = _as_int(image_size, "image_size")
    if size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {size}")
    return size


def _rng(seed: int, category: str, split: str, defect_type: str, index: int) -> np.random.Generator:
    """Independent stream per image: same seed -> same image, whatever the other counts are."""
    key = [
        operator.index(seed) % 2**64,
        zlib.crc32(category.encode()),
        _SPLITS[split],
        zlib.crc32(defect_type.encode()),
        index,
    ]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_demo_sample(
    category: str,
    defect_type: str = "good",
    *,
    split: str = "test",
    index: int = 0,
    seed: int = 0,
    image_size: int = 256,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one sample in memory: ``(RGB uint8 H x W x 3, mask uint8 0/255 or None for good)``.

    It is exactly the image :func:`make_demo_dataset` writes as ``<split>/<defect_type>/<index>.png``
    with the same seed, so notebooks and tests can look at a sample without touching the disk.
    """
    cat = _check_category(category)
    size = _check_size(image_size)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if defect_type != "good" and defect_type not in cat.defects:
        kinds = ", ".join(("good", *cat.defects))
        raise ValueError(f"unknown defect type {defect_type!r} for {category!r}; choose from {kinds}")
    if split == "train" and defect_type != "good":
        raise ValueError("the train split holds only good images (defect_type='good')")
    _as_int(seed, "seed")
    idx = _as_int(index, "index")
    if idx < 0:
        raise ValueError(f"index must be >= 0, got {idx}")
    rng = _rng(seed, category, split, defect_type, idx)
    scene = cat.render(rng, size)
    if defect_type == "good":
        return _finish(rng, scene.albedo), None
    for _ in range(20):  # a defect is redrawn (deterministically) in the rare case nothing reaches alpha 0.5
        albedo, alpha = cat.defects[defect_type](rng, scene)
        mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
        if mask.any():
            return _finish(rng, albedo.astype(np.float32)), mask
    raise RuntimeError(f"could not draw a visible {defect_type!r} defect for {category!r}")  # pragma: no cover


def _png(img: np.ndarray) -> bytes:
    """PNG bytes of an RGB or single-channel uint8 image (OpenCV writes BGR, so convert first)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - encoding a valid uint8 array does not fail
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


_NUMBERED = re.compile(r"^(\d+)(_mask)?\.png$")


def _remove_stale(folder: Path, count: int) -> None:
    """Delete numbered PNGs beyond ``count`` left by an earlier, larger run (they would skew counts)."""
    for p in folder.iterdir():
        m = _NUMBERED.match(p.name)
        if m and int(m.group(1)) >= count and p.is_file():
            p.unlink()


def _write_split(folder: Path, count: int, write_one: Callable[[int], None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder, count)
    for i in range(count):
        write_one(i)


def make_demo_dataset(
    root: str | os.PathLike[str],
    categories: Sequence[str] | None = None,
    *,
    seed: int = 0,
    n_train: int = 60,
    n_test_good: int = 16,
    n_test_per_defect: int = 8,
    image_size: int = 256,
) -> list[Path]:
    """Write the procedural dataset under ``root`` in MVTec AD layout; return the category folders.

    ``categories`` defaults to all of :data:`DEMO_CATEGORIES` (a single name as a string is accepted).
    Deterministic in ``seed``; every PNG is written atomically (temporary file + ``os.replace``), and
    numbered PNGs left over from a larger earlier run in the same folders are removed. Raises
    ValueError for an unknown category, a count < 1 or an image size below 64.
    """
    if categories is None:
        names: list[str] = list(DEMO_CATEGORIES)
    elif isinstance(categories, str):
        names = [categories]
    else:
        names = list(dict.fromkeys(categories))
    if not names:
        raise ValueError("categories is empty; pass None for all demo categories")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"category names must be strings, got {name!r}")
        _check_category(name)
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
    for key, value in counts.items():
        if _as_int(value, key) < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    size = _check_size(image_size)
    _as_int(seed, "seed")

    base = Path(root)
    out: list[Path] = []
    for name in names:
        cat_dir = base / name

        def write(
            split: str, kind: str, folder: Path, mask_folder: Path | None, name: str = name
        ) -> Callable[[int], None]:
            def one(i: int) -> None:
                img, mask = render_demo_sample(name, kind, split=split, index=i, seed=seed, image_size=size)
                atomic_write_bytes(folder / f"{i:03d}.png", _png(img))
                if mask_folder is not None and mask is not None:
                    atomic_write_bytes(mask_folder / f"{i:03d}_mask.png", _png(mask))

            return one

        train_good = cat_dir / "train" / "good"
        _write_split(train_good, int(n_train), write("train", "good", train_good, None))
        test_good = cat_dir / "test" / "good"
        _write_split(test_good, int(n_test_good), write("test", "good", test_good, None))
        for kind in _CATEGORIES[name].defects:
            img_dir = cat_dir / "test" / kind
            gt_dir = cat_dir / "ground_truth" / kind
            gt_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale(gt_dir, int(n_test_per_defect))
            _write_split(img_dir, int(n_test_per_defect), write("test", kind, img_dir, gt_dir))
        out.append(cat_dir)
    return out
