"""``edge-ad synth``: synthetic anomalies of a category's good images written in MVTec AD layout, to look at.

Layout under ``OUT/<category>/``::

    test/synthetic/000.png                      the blended image (RGB PNG)
    ground_truth/synthetic/000_mask.png         binary mask, uint8 0/255 (what edge_ad.data.layout reads)
    ground_truth/synthetic/000_label.png        continuous / logistic label as 16-bit PNG (label * 65535)
    synthetic.json                              seed, parameters, and per example its destination, source, patches
    synthetic_preview.png                       the first 8: good image / synthetic / mask (or label)

Why a folder and not only memory: a user checks that the anomalies look like defects before trusting a model, a
threshold or a validation score built on them; ``edge-ad eval`` can read the folder like any MVTec category.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad.data.images import read_image
from edge_ad.data.layout import resolve_category, train_images
from edge_ad.io import atomic_write_bytes, atomic_write_json
from edge_ad.synthesis.generator import NsaGenerator
from edge_ad.synthesis.nsa import Synthetic
from edge_ad.synthesis.params import Background, Kind, check_label, params_for
from edge_ad.synthesis.sets import synthetic_set

__all__ = ["DEFECT", "SynthReport", "preview_grid", "write_synthetic"]

DEFECT = "synthetic"
_PREVIEW = 8
_CELL = 224  # preview cell height
_NUMBERED = re.compile(r"^\d+(_mask|_label)?\.png$")
_UNSET = object()


@dataclass(frozen=True)
class SynthReport:
    category_dir: Path
    count: int
    empty: int  # examples where no patch could be blended (their mask is empty)
    background: tuple[float, float] | None
    preview: Path


def _png(img: np.ndarray) -> bytes:
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - a valid uint8/uint16 array always encodes
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _label16(label: np.ndarray) -> np.ndarray:
    return np.round(np.clip(label, 0.0, 1.0) * 65535).astype(np.uint16)


def _clear_stale(folder: Path) -> None:
    """Numbered files of an earlier run would mix with this one's."""
    if folder.is_dir():
        for p in folder.iterdir():
            if _NUMBERED.match(p.name) and p.is_file():
                p.unlink()


def _cell(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * _CELL / h)), _CELL), interpolation=cv2.INTER_AREA) if h != _CELL else img


def preview_grid(goods: list[np.ndarray], examples: list[Synthetic], label: str = "binary") -> np.ndarray:
    """RGB grid, one column per example: the good image, the synthetic one, it with the mask's outline, the label."""
    cols = []
    for good, ex in zip(goods, examples, strict=True):
        outlined = ex.image.copy()
        contours, _ = cv2.findContours(ex.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outlined, contours, -1, (255, 0, 0), 1)
        shown = ex.mask.astype(np.float32) if label == "binary" else ex.label
        lab = cv2.cvtColor(np.round(shown * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        cells = [_cell(a) for a in (good, ex.image, outlined, lab)]
        gap = np.full((4, cells[0].shape[1], 3), 255, np.uint8)
        cols.append(np.concatenate([cells[0], gap, cells[1], gap, cells[2], gap, cells[3]]))
        cols.append(np.full((cols[-1].shape[0], 4, 3), 255, np.uint8))
    return np.concatenate(cols[:-1], axis=1)


def write_synthetic(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    n: int,
    *,
    category: str | None = None,
    seed: int = 0,
    label: str = "binary",
    kind: Kind | None = None,
    background: Background | object = _UNSET,
    workers: int = 0,
    blend: str = "auto",
) -> SynthReport:
    """Draw ``n`` NSA examples from the first ``max(n, 2)`` good images of ``data`` (``category``) and write them
    under ``out/<category>/`` in MVTec layout. ``background`` overrides the category's (a tuple, ``"auto"`` or None);
    ``blend`` its Poisson blending (``auto``: the reference's rule for its kind).
    """
    check_label(label)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of examples must be an integer >= 1, got {n!r}")
    cat_dir = resolve_category(data, category)
    name = category or cat_dir.name
    target = Path(out) / name
    if target.resolve() == cat_dir.resolve():
        raise ValueError(f"--out would write the synthetic split into the dataset itself ({cat_dir}); choose another")
    params = params_for(name, kind).replace(blend=blend)  # replace() checks the value
    if background is not _UNSET:
        params = params.replace(background=background)
    # the first max(n, 2) good images are the pool (destinations in turn, sources among the others): a large
    # folder of big photographs is not read whole to draw a handful of examples
    paths = train_images(cat_dir)[: max(n, 2)]
    images = [read_image(p) for p in paths]
    gen = NsaGenerator(images, params, label)
    examples = synthetic_set(gen, n, seed, workers=workers)

    img_dir, gt_dir = target / "test" / DEFECT, target / "ground_truth" / DEFECT
    for folder in (img_dir, gt_dir):
        _clear_stale(folder)
    width = max(3, len(str(len(examples) - 1)))
    records = []
    for i, ex in enumerate(examples):
        stem = f"{i:0{width}d}"
        atomic_write_bytes(img_dir / f"{stem}.png", _png(ex.image))
        atomic_write_bytes(gt_dir / f"{stem}_mask.png", _png(ex.mask * np.uint8(255)))
        record = {
            "image": f"test/{DEFECT}/{stem}.png",
            "mask": f"ground_truth/{DEFECT}/{stem}_mask.png",
            "destination": paths[i % len(paths)].name,
            "source": paths[ex.source_index].name if ex.source_index is not None else None,
            "patches": [{"source_box": p.source_box, "dest_box": p.dest_box, "scale": p.scale} for p in ex.patches],
        }
        if label != "binary":
            atomic_write_bytes(gt_dir / f"{stem}_label.png", _png(_label16(ex.label)))
            record["label"] = f"ground_truth/{DEFECT}/{stem}_label.png"
        records.append(record)
    shown = examples[:_PREVIEW]
    preview = target / "synthetic_preview.png"
    goods = [images[i % len(images)] for i in range(len(shown))]
    atomic_write_bytes(preview, _png(preview_grid(goods, shown, label)))
    atomic_write_json(
        target / "synthetic.json",
        {
            "generator": "nsa",
            "data": str(cat_dir),
            "seed": seed,
            "count": len(examples),
            "pool": [p.name for p in paths],
            "label": label,
            "label_png": "uint16, label * 65535" if label != "binary" else None,
            "params": gen.params.to_json(),
            "examples": records,
        },
    )
    empty = sum(not ex.is_anomalous for ex in examples)
    bg = gen.params.background
    return SynthReport(target, len(examples), empty, bg if isinstance(bg, tuple) else None, preview)
