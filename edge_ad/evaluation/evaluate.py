"""Evaluation on an MVTec-layout test split: image AUROC, pixel AUROC, AUPRO, F1-max, per defect type.

Works with any runtime (torch, onnxruntime, TensorRT), so every deployed artifact is measured the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.data.images import read_image, read_mask
from edge_ad.data.layout import Sample, resolve_category, test_samples
from edge_ad.data.preprocess import Preprocessing
from edge_ad.evaluation.metrics import image_and_pixel_metrics
from edge_ad.progress import progress_bar
from edge_ad.runtimes.base import Runtime
from edge_ad.runtimes.scoring import score_batches


@dataclass
class Scored:
    """Scores and maps of a test split, with its labels and masks, in sample order."""

    samples: list[Sample]
    labels: np.ndarray
    image_scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray


def sample_mask(sample: Sample, image: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The sample's ground truth through the image's geometry (all False for a good image)."""
    if sample.mask_path is None:
        return np.zeros((preprocessing.image_size,) * 2, bool)
    return preprocessing.mask(read_mask(sample.mask_path, image.shape[:2]))


def score_samples(
    runtime: Runtime, samples: Sequence[Sample], preprocessing: Preprocessing, batch_size: int = 8
) -> Scored:
    """Run every test image through the runtime; masks go through the same geometry as the images."""
    size = preprocessing.image_size
    masks: list[np.ndarray] = []

    def to_batch(chunk: Sequence[Sample]) -> np.ndarray:
        images = [read_image(s.path) for s in chunk]
        masks.extend(sample_mask(s, img, preprocessing) for s, img in zip(chunk, images, strict=True))
        return preprocessing.batch(images)

    with progress_bar(total=len(samples), description="evaluate") as bar:
        scores, maps = score_batches(
            runtime.predict, samples, to_batch, batch_size=batch_size, on_batch=bar.advance, read_ahead=1
        )
    if not masks:
        maps = np.zeros((0, size, size), np.float32)
    mask_arr = np.stack(masks).astype(bool) if masks else np.zeros((0, size, size), bool)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    return Scored(list(samples), labels, scores, maps, mask_arr)


def metrics_by_defect(scored: Scored) -> dict[str, dict[str, float]]:
    """Metrics over the whole split ("overall") and for each defect type against all good images."""
    out = {"overall": image_and_pixel_metrics(scored.labels, scored.image_scores, scored.masks, scored.maps)}
    good = np.array([s.defect == "good" for s in scored.samples])
    for defect in sorted({s.defect for s in scored.samples} - {"good"}):
        sel = good | np.array([s.defect == defect for s in scored.samples])
        out[defect] = image_and_pixel_metrics(
            scored.labels[sel], scored.image_scores[sel], scored.masks[sel], scored.maps[sel]
        )
    return out


def evaluate(
    runtime: Runtime, category_dir: str | Path, preprocessing: Preprocessing, batch_size: int = 8
) -> dict[str, dict[str, float]]:
    """Score a category's test split and compute its metrics."""
    samples = test_samples(category_dir, require_masks=True)
    return metrics_by_defect(score_samples(runtime, samples, preprocessing, batch_size))


def evaluate_model(
    model: str | Path,
    data: str | Path,
    category: str | None = None,
    *,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Evaluate a bundle or an exported model on a category's test split; returns the JSON report."""
    from edge_ad.detector import Detector  # the detector picks the runtime; imported late (it imports runtimes)

    det = Detector.load(model, backend=backend, device=device, precision=precision)
    category_dir = resolve_category(data, category)
    metrics = evaluate(det.runtime, category_dir, det.preprocessing, batch_size=batch_size)
    return {
        "model": str(model),
        "data": str(category_dir),
        "backend": det.runtime.name,
        "precision": getattr(det.runtime, "precision", precision),
        "metrics": metrics,
    }
