"""An evaluation set from real photographs that an installable package ships (numpy + OpenCV; no torch).

Why: the procedural demo cannot tell whether a recipe works on real surfaces. scikit-image's wheel carries three
512 x 512 greyscale texture photographs inside the package (``skimage/data/brick.png``, ``grass.png``,
``gravel.png``; read here as files, so nothing is fetched and scikit-image itself is not even imported). Install
it with ``pip install 'edge-ad[photos]'``.

Each photograph is cut into four horizontal bands of ``CROP`` rows. Bands 0 and 2 give the training crops, band 1
the **tune** split's test crops and band 3 the **report** split's: a test crop never shares a pixel with a training
crop, and the crops a recipe is tuned on never share a pixel with the ones it is reported on. Within a band the
crops sit at random columns (they may overlap each other). Layout written by :func:`make_photo_dataset`::

    ROOT/<split>/<category>/train/good/000.png ...         (the same training crops in both splits)
    ROOT/<split>/<category>/test/good/000.png ...
    ROOT/<split>/<category>/test/<defect>/000.png ...
    ROOT/<split>/<category>/ground_truth/<defect>/000_mask.png

Defects: ``nsa`` (an NSA patch from another crop of the same test band, Poisson-blended, see
:mod:`edge_ad.synthesis`) and four drawn ones (``scratch``, ``crack``, ``stain``, ``glue``). A drawn defect's mask is
exactly the set of pixels whose value changed. Defects are centred in the middle half of the crop so the default
centre crop (256 -> 224) keeps them. Every image comes from its own random stream keyed by
``(seed, category, split, defect, index)``: the same seed gives byte-identical PNGs.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.layout import DatasetError
from edge_ad.extras import EXTRA_BY_NAME, missing_extra_message, pip_line
from edge_ad.io import atomic_write_bytes
from edge_ad.synthesis import params_for, synthesize

__all__ = [
    "CROP",
    "DEFECTS",
    "INSTALL_HINT",
    "PHOTO_CATEGORIES",
    "SPLITS",
    "PhotosUnavailable",
    "crop_box",
    "draw_defect",
    "load_photo",
    "make_photo_dataset",
    "render_photo_sample",
]

INSTALL_HINT = pip_line("photos")
#: category -> file inside the scikit-image package's ``data`` folder
PHOTO_CATEGORIES: dict[str, str] = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png"}
SPLITS: tuple[str, ...] = ("tune", "report")
CROP = 128  # crop side in pixels of the photograph (= band height)
_BANDS: dict[str, tuple[int, ...]] = {"train": (0, 2), "tune": (1,), "report": (3,)}
_ROLE_KEYS = {"train": 1, "tune": 2, "report": 3}
Box = tuple[int, int, int, int]  # (y, x, height, width)


class PhotosUnavailable(DatasetError):
    """The package that ships the photographs is not installed (or lacks a file); the message says what to do."""


def _package_dir() -> Path:
    spec = importlib.util.find_spec("skimage")  # finds the package without importing it (and scipy with it)
    if spec is None or spec.origin is None:
        message = missing_extra_message(EXTRA_BY_NAME["photos"], "scikit-image", "demo-data --source photos")
        raise PhotosUnavailable(message)
    return Path(spec.origin).parent / "data"


def load_photo(category: str) -> np.ndarray:
    """The whole photograph of ``category`` as uint8 RGB (greyscale photographs get three equal channels)."""
    if category not in PHOTO_CATEGORIES:
        raise ValueError(f"unknown photo category {category!r}; choose from {', '.join(PHOTO_CATEGORIES)}")
    path = _package_dir() / PHOTO_CATEGORIES[category]
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None:
        raise PhotosUnavailable(f"{path} is missing or unreadable in this scikit-image install: {INSTALL_HINT}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _rng(seed: int, category: str, role: str, defect: str, index: int) -> np.random.Generator:
    key = [int(seed), zlib.crc32(category.encode()), _ROLE_KEYS[role], zlib.crc32(defect.encode()), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def crop_box(rng: np.random.Generator, role: str, width: int) -> Box:
    """A random ``CROP`` square inside one of ``role``'s bands of a photograph ``width`` pixels wide."""
    band = int(rng.choice(_BANDS[role]))
    x = int(rng.integers(0, width - CROP + 1))
    return band * CROP, x, CROP, CROP


def _cut(photo: np.ndarray, box: Box) -> np.ndarray:
    y, x, h, w = box
    return np.ascontiguousarray(photo[y : y + h, x : x + w])


# --------------------------------------------------------------------------------------------------
# Drawn defects: an alpha map and a per-pixel change; the mask is where the uint8 image changed
# --------------------------------------------------------------------------------------------------

_SS = 4  # supersampling of strokes


def _strokes(size: int, paths: Sequence[np.ndarray], width: float) -> np.ndarray:
    """Antialiased coverage in [0, 1] of polylines (x, y pixel coordinates) ``width`` pixels wide."""
    canvas = np.zeros((size * _SS, size * _SS), np.uint8)
    thick = max(1, round(width * _SS))
    for pts in paths:
        fixed = np.round(((pts + 0.5) * _SS - 0.5) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [fixed], False, 255, thickness=thick, lineType=cv2.LINE_AA, shift=4)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _centre(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.uniform(0.3 * size, 0.7 * size, size=2)


def _curve(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gently bent line through the middle of the crop: a scratch."""
    c, length, angle = _centre(rng, size), rng.uniform(0.2, 0.45) * size, rng.uniform(0, np.pi)
    d, n = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    t = np.linspace(-0.5, 0.5, 24)[:, None]
    bend = rng.uniform(-0.15, 0.15) * length
    return c + t * length * d + (1 - 4 * t**2) * bend * n


def _jagged(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """A random-walk crack with one branch."""
    start, angle = _centre(rng, size), rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(10, 18))
    turns = np.cumsum(rng.normal(0, 0.45, steps)) + angle
    step = size * 0.025
    main = np.vstack([start, start + np.cumsum(np.stack([np.cos(turns), np.sin(turns)], 1) * step, 0)])
    k = int(rng.integers(2, steps - 2))
    b_turns = turns[k] + rng.choice([-1, 1]) * 0.9 + np.cumsum(rng.normal(0, 0.4, steps // 2))
    branch = np.vstack([main[k], main[k] + np.cumsum(np.stack([np.cos(b_turns), np.sin(b_turns)], 1) * step, 0)])
    return [main, branch]


def _blob(rng: np.random.Generator, size: int, radius: tuple[float, float], lobes: int) -> np.ndarray:
    """Soft-edged union of a few discs (a stain or a glue drop), coverage in [0, 1]."""
    canvas = np.zeros((size, size), np.float32)
    c = _centre(rng, size)
    for _ in range(lobes):
        p = c + rng.normal(0, radius[0] * 0.6, 2)
        r = rng.uniform(*radius)
        axes = (max(1, round(r)), max(1, round(r * rng.uniform(0.6, 1.0))))
        cv2.ellipse(canvas, (round(p[0]), round(p[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    return cv2.GaussianBlur(canvas, (0, 0), 1.2)


def _apply(img: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``target`` in with ``alpha`` (faint tails cut at 0.2); mask = pixels whose uint8 value changed."""
    a = np.where(alpha >= 0.2, alpha, 0.0)[..., None]
    out = np.clip(np.rint(img.astype(np.float32) * (1 - a) + target * a), 0, 255).astype(np.uint8)
    mask = (out != img).any(axis=2)
    return out, mask.astype(np.uint8) * 255


def _scratch(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = _strokes(img.shape[0], [_curve(rng, img.shape[0])], rng.uniform(1.0, 2.0))
    return _apply(img, alpha, img.astype(np.float32) + rng.uniform(45, 80))


def _crack(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alpha = _strokes(img.shape[0], _jagged(rng, img.shape[0]), rng.uniform(1.0, 1.8))
    return _apply(img, alpha, img.astype(np.float32) * rng.uniform(0.25, 0.45))


def _stain(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    alpha = _blob(rng, size, (0.04 * size, 0.09 * size), int(rng.integers(1, 4)))
    return _apply(img, alpha * rng.uniform(0.6, 0.9), img.astype(np.float32) * 0.45)


def _glue(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A glossy drop: the texture under it is smoothed away and lifted, with a highlight."""
    size = img.shape[0]
    alpha = np.clip(_blob(rng, size, (0.05 * size, 0.1 * size), int(rng.integers(2, 5))) * 1.5, 0, 1)
    smooth = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0) + rng.uniform(20, 40)
    light = cv2.GaussianBlur(alpha, (0, 0), 3.0)
    return _apply(img, alpha, smooth + 30 * (light > 0.8)[..., None])


_DRAWN: dict[str, Callable[[np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": _scratch,
    "crack": _crack,
    "stain": _stain,
    "glue": _glue,
}
DEFECTS: tuple[str, ...] = ("nsa", *_DRAWN)


def draw_defect(rng: np.random.Generator, img: np.ndarray, defect: str) -> tuple[np.ndarray, np.ndarray]:
    """One drawn defect on a uint8 RGB crop: ``(image, mask uint8 0/255)``; the mask is exactly the changed pixels."""
    if defect not in _DRAWN:
        raise ValueError(f"unknown drawn defect {defect!r}; choose from {', '.join(_DRAWN)}")
    for _ in range(20):  # redrawn (deterministically) in the rare case that nothing changed
        out, mask = _DRAWN[defect](rng, img)
        if mask.any():
            return out, mask
    raise RuntimeError(f"could not draw a visible {defect!r}")  # pragma: no cover


def _nsa(rng: np.random.Generator, img: np.ndarray, photo: np.ndarray, role: str) -> tuple[np.ndarray, np.ndarray]:
    """An NSA patch cut from another crop of the same test band (never a training crop), one patch per image."""
    params = params_for(None, "texture").replace(num_patches=1, width_bounds=((0.08, 0.25), (0.08, 0.25)))
    for _ in range(20):
        source = _cut(photo, crop_box(rng, role, photo.shape[1]))
        syn = synthesize(img, source, params, rng, label="binary")
        if syn.is_anomalous:
            return syn.image, syn.mask.astype(np.uint8) * 255
    raise RuntimeError("could not place an NSA patch")  # pragma: no cover


def render_photo_sample(
    category: str,
    defect: str = "good",
    *,
    split: str = "tune",
    role: str = "test",
    index: int = 0,
    seed: int = 0,
    photo: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, Box]:
    """One sample in memory: ``(RGB uint8, mask 0/255 or None, crop box in the photograph)``.

    ``role`` "train" gives a training crop (the same in both splits); "test" a crop of ``split``'s test band.
    It is exactly what :func:`make_photo_dataset` writes with the same seed.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if role not in ("train", "test"):
        raise ValueError(f"role must be train or test, got {role!r}")
    if defect != "good" and (role == "train" or defect not in DEFECTS):
        raise ValueError(f"defect must be 'good' for training crops, else one of {', '.join(DEFECTS)}: {defect!r}")
    photo = load_photo(category) if photo is None else photo
    band = "train" if role == "train" else split
    rng = _rng(seed, category, band, defect, index)
    box = crop_box(rng, band, photo.shape[1])
    crop = _cut(photo, box)
    if defect == "good":
        return crop, None, box
    if defect == "nsa":
        return (*_nsa(rng, crop, photo, band), box)
    return (*draw_defect(rng, crop, defect), box)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def make_photo_dataset(
    root: str | os.PathLike[str],
    categories: Sequence[str] | None = None,
    *,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    n_train: int = 40,
    n_test_good: int = 16,
    n_test_per_defect: int = 4,
) -> list[Path]:
    """Write ``ROOT/<split>/<category>`` in MVTec layout for each split and category; return the category folders.

    Raises :class:`PhotosUnavailable` (one line, with the install command) without scikit-image.
    """
    names = list(PHOTO_CATEGORIES) if not categories else list(dict.fromkeys(categories))
    for name in names:
        if name not in PHOTO_CATEGORIES:
            raise ValueError(f"unknown photo category {name!r}; choose from {', '.join(PHOTO_CATEGORIES)}")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    _check_counts(n_train=n_train, n_test_good=n_test_good, n_test_per_defect=n_test_per_defect)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    written: list[Path] = []
    for name in names:
        photo = load_photo(name)
        for split in splits:
            cat = Path(root) / split / name
            jobs = [("train/good", "good", "train", n_train), ("test/good", "good", "test", n_test_good)]
            jobs += [(f"test/{d}", d, "test", n_test_per_defect) for d in DEFECTS]
            for folder, defect, role, count in jobs:
                for i in range(count):
                    img, mask, _ = render_photo_sample(
                        name, defect, split=split, role=role, index=i, seed=seed, photo=photo
                    )
                    atomic_write_bytes(cat / folder / f"{i:03d}.png", _png(img))
                    if mask is not None:
                        atomic_write_bytes(cat / "ground_truth" / defect / f"{i:03d}_mask.png", _png(mask))
            written.append(cat)
    return written
