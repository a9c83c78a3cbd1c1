"""The images that choose the INT8 recipe and set each artifact's own threshold, read and preprocessed once.

Torch-free; the threshold rule is the bundle's own (:func:`edge_ad.thresholds.good_image_statistics`).

By default no label is read: the recipe is chosen, and an exported artifact's verdict threshold derived, on the
bundle's **held-out good images** -- ``training.holdout_images`` of ``training.data``'s ``train/good``, the images that
set the bundle's own threshold and that calibration never uses (:mod:`.calibration_data`). A bundle that held none out
(too few images) falls back to its training images, as its own threshold did, and says so (``threshold_source``
starts with "training images"); a bundle that records no training data (imported) holds out a seeded share of the
calibration source instead (:func:`split_source`). Labels are read only from an explicit ``--eval-data`` folder
(:func:`labelled_set`).

Each set is read and preprocessed once and kept in memory (0.6 MB per image at 224x224, plus a mask per labelled
image), so every candidate model runs on the same tensors and no file is read twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bundle import BundleInfo
from edge_ad.data.images import ImageError, read_image
from edge_ad.data.layout import DatasetError, Sample, test_samples, train_images
from edge_ad.data.preprocess import Preprocessing
from edge_ad.evaluate import Scored, metrics_by_defect, sample_mask
from edge_ad.progress import progress_bar
from edge_ad.runtimes.base import Runtime
from edge_ad.thresholds import good_image_statistics

__all__ = [
    "HOLDOUT",
    "MIN_SELECTION",
    "ImageSet",
    "Outputs",
    "bundle_holdout",
    "good_set",
    "labelled_set",
    "run_model",
    "split_source",
    "threshold_sigmas",
]

HOLDOUT = "held-out good images"
TRAINING_FALLBACK = "training images (the bundle held none out: the threshold is optimistic)"
MIN_SELECTION = 2  # a standard deviation needs two scores
SELECTION_SHARE = 0.1  # as the trainer's default holdout


@dataclass
class ImageSet:
    """Preprocessed images held in memory, with labels and masks when (and only when) they come from --eval-data."""

    kind: str  # HOLDOUT, TRAINING_FALLBACK, "calibration-source images held out", or "--eval-data"
    folder: str
    paths: list[Path]
    data: np.ndarray  # float32 [N, 3, S, S]
    samples: list[Sample] | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def summary(self) -> str:
        """One line for reports: which data, how many images, whether labels were used."""
        if self.labels is not None:
            return f"--eval-data {self.folder}, labels ({len(self.paths)} images, {int(self.labels.sum())} anomalous)"
        return f"{self.kind}, {len(self.paths)}, no labels (`{self.folder}`)"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data": self.kind,
            "folder": self.folder,
            "images": len(self.paths),
            "labels": self.labelled,
            "summary": self.summary(),
            "names": [p.name for p in self.paths],
            "skipped": list(self.skipped),
        }
        if self.labels is not None:
            out["anomalous"] = int(self.labels.sum())
        return out


@dataclass
class Outputs:
    """One model's outputs on one set; ``stats`` (threshold and map statistics) for good-image sets only."""

    scores: np.ndarray
    maps: np.ndarray
    stats: dict[str, Any] | None = None


def bundle_holdout(info: BundleInfo) -> tuple[str, str, list[Path]] | None:
    """``(kind, folder, paths)`` of the good images behind the bundle's threshold; None if it records none."""
    data = info.training.get("data")
    names = list(info.training.get("holdout_images") or [])
    kind = HOLDOUT
    if not names:
        names, kind = list(info.training.get("train_images") or []), TRAINING_FALLBACK
    if not data or not names:
        return None
    try:
        available = train_images(data)
    except DatasetError as exc:
        raise ValueError(f"the {kind} of bundle {info.path} are not available: {exc}") from exc
    by_name = {p.name: p for p in available}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"{available[0].parent}: {len(missing)} of the bundle's {len(names)} {kind} are missing (e.g. {missing[0]})"
        )
    return kind, str(available[0].parent), [by_name[n] for n in names]


def split_source(paths: Sequence[Path], seed: int, min_rest: int) -> tuple[list[Path], list[Path]]:
    """``(rest, held_out)``: a seeded share (10 %, at least 2) of a calibration source held out for selection."""
    n = len(paths)
    k = max(MIN_SELECTION, round(n * SELECTION_SHARE))
    if n - k < min_rest:
        raise ValueError(
            f"the bundle records no held-out good images, so {k} of the {n} calibration images are held out to "
            f"choose the recipe and set the INT8 threshold; at least {min_rest + k} good images are needed"
        )
    order = np.random.default_rng([seed, 1]).permutation(n)
    return [paths[i] for i in sorted(order[k:])], [paths[i] for i in sorted(order[:k])]


def good_set(paths: Sequence[Path], preprocessing: Preprocessing, kind: str, folder: str) -> ImageSet:
    """Read and preprocess good images once; unreadable ones are skipped and listed."""
    arrays, kept, skipped = [], [], []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        arrays.append(preprocessing(image))
        kept.append(Path(path))
    if len(kept) < MIN_SELECTION:
        raise ValueError(
            f"{folder}: only {len(kept)} readable {kind}; at least {MIN_SELECTION} are needed to choose the INT8 "
            "recipe and to set an artifact's threshold"
        )
    return ImageSet(kind, folder, kept, np.stack(arrays).astype(np.float32, copy=False), skipped=skipped)


def labelled_set(eval_data: str | os.PathLike[str], preprocessing: Preprocessing) -> ImageSet:
    """The labelled test split of ``eval_data`` (images, labels, masks), read once."""
    samples = test_samples(eval_data, require_masks=True)
    size = preprocessing.image_size
    data = np.empty((len(samples), 3, size, size), np.float32)
    masks = np.zeros((len(samples), size, size), bool)
    for i, sample in enumerate(samples):
        image = read_image(sample.path)
        data[i] = preprocessing(image)
        masks[i] = sample_mask(sample, image, preprocessing)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    return ImageSet("--eval-data", str(eval_data), [s.path for s in samples], data, samples, labels, masks)


def threshold_sigmas(info: BundleInfo | None) -> float:
    """The k of the bundle's ``mean + k std`` rule: as recorded at training, else the trainer's default."""
    recorded = info.training.get("threshold_sigmas") if info is not None else None
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return float(recorded)
    from edge_ad.training.trainer import TrainConfig  # imports torch; only for bundles that do not record it

    return float(TrainConfig().threshold_sigmas)


def run_model(
    runtime: Runtime, sets: Sequence[ImageSet], label: str, sigmas: float, batch_size: int = 8
) -> list[Outputs]:
    """Run one model once over each set, under one progress bar named ``label``.

    A good-image set also yields its threshold statistics (:func:`edge_ad.thresholds.good_image_statistics`) from
    the same pass.
    """
    results = []
    with progress_bar(total=sum(len(s.data) for s in sets), description=label) as bar:
        for image_set in sets:
            recorded: list[tuple[np.ndarray, np.ndarray]] = []

            def predict(batch: np.ndarray, into: list = recorded) -> tuple[np.ndarray, np.ndarray]:
                scores, maps = runtime.predict(batch)
                into.append((scores, maps))
                bar.advance(len(batch))
                return scores, maps

            data = image_set.data
            chunks = (data[i : i + batch_size] for i in range(0, len(data), batch_size))
            stats = None
            if image_set.labelled:
                for chunk in chunks:
                    predict(chunk)
            else:
                stats = good_image_statistics(predict, chunks, sigmas)
            scores = np.concatenate([r[0] for r in recorded]).astype(np.float32, copy=False)
            maps = np.concatenate([r[1] for r in recorded]).astype(np.float32, copy=False)
            results.append(Outputs(scores, maps, stats))
    return results


def labelled_metrics(image_set: ImageSet, outputs: Outputs) -> dict[str, dict[str, float]]:
    """Metrics (overall and per defect type) of one model's outputs on a labelled set."""
    if image_set.samples is None or image_set.labels is None or image_set.masks is None:
        raise ValueError("metrics need a labelled set (--eval-data)")
    scored = Scored(list(image_set.samples), image_set.labels, outputs.scores, outputs.maps, image_set.masks)
    return metrics_by_defect(scored)
