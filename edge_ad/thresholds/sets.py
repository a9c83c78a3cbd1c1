"""The images that choose the INT8 recipe and set each artifact's own threshold, read and preprocessed once.

Torch-free; the threshold rule is the bundle's own (:func:`edge_ad.thresholds.rules.good_statistics`).

By default no label is read: the recipe is chosen, and an exported artifact's verdict threshold derived, on the
bundle's **held-out good images** -- ``training.holdout_images`` of ``training.data``'s ``train/good``, the images that
set the bundle's own threshold and that calibration never uses (:mod:`.calibration_data`). A bundle that held none out
(too few images) falls back to its training images, as its own threshold did, and says so (``threshold_source``
starts with "training images"); a bundle that records no training data (imported) holds out a seeded share of the
calibration source instead (:func:`split_source`). Labels are read only from an explicit ``--eval-data`` folder
(:func:`labelled_set`). A bundle that describes a synthetic validation set (``training.synthetic_validation``: NSA
anomalies on those same held-out images, fixed by a seed) has it rebuilt (:func:`synthetic_set`): its anomalies are
the only extra images run, its good part is the held-out set itself.

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
from edge_ad.data.layout import Sample, test_samples
from edge_ad.data.preprocess import Preprocessing
from edge_ad.evaluation.evaluate import Scored, metrics_by_defect, sample_mask
from edge_ad.evaluation.metrics import auroc, pixel_auroc
from edge_ad.progress import progress_bar
from edge_ad.runtimes.base import Runtime
from edge_ad.runtimes.scoring import score_batches
from edge_ad.thresholds.basis import HOLDOUT, TRAINING_FALLBACK, ThresholdBasis, bundle_holdout, threshold_basis
from edge_ad.thresholds.rules import (
    SYNTHETIC_F1,
    good_statistics,
    recorded_sigmas,
    refuse_flagging_every_good_image,
    rule_statistics,
)

__all__ = [
    "HOLDOUT",
    "MIN_SELECTION",
    "TRAINING_FALLBACK",
    "ThresholdSets",
    "ImageSet",
    "Outputs",
    "bundle_holdout",
    "good_set",
    "labelled_set",
    "run_model",
    "split_source",
    "synthetic_metrics",
    "synthetic_set",
    "basis_statistics",
    "bundle_threshold_sets",
    "threshold_sets",
    "threshold_sigmas",
]

SYNTHETIC = "synthetic validation"
MIN_SELECTION = 2  # a standard deviation needs two scores
SELECTION_SHARE = 0.1  # as the trainer's default holdout


@dataclass
class ImageSet:
    """Preprocessed images held in memory, with labels and masks when they come from --eval-data or are the
    anomalies of a synthetic validation set (``synthetic``: its description; ``anomalies``/``note`` on the held-out
    good set: its synthetic anomalies, or why there are none; ``threshold``: the images and rule behind the bundle's
    current threshold, which may be other images than these)."""

    kind: str  # HOLDOUT, TRAINING_FALLBACK, "calibration-source images held out", "--eval-data", or SYNTHETIC
    folder: str
    paths: list[Path]
    data: np.ndarray  # float32 [N, 3, S, S]
    samples: list[Sample] | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    synthetic: dict[str, Any] | None = None
    anomalies: ImageSet | None = None
    note: str = ""
    threshold: ThresholdSets | None = None  # on the selection set: what an artifact's own threshold comes from

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def summary(self) -> str:
        """One line for reports: which data, how many images, whether labels were used."""
        if self.synthetic is not None:
            d = self.synthetic
            return (
                f"synthetic validation: {d['n_good']} held-out good images and {d['n_anomalous']} NSA anomalies, "
                f"seed {d['seed']}"
            )
        if self.labels is not None:
            return f"--eval-data {self.folder}, labels ({len(self.paths)} images, {int(self.labels.sum())} anomalous)"
        return f"{self.kind}, {len(self.paths)}, no labels (`{self.folder}`)"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data": self.kind,
            "folder": self.folder,
            "images": len(self.paths),
            "labels": self.labelled and self.synthetic is None,  # the user's labels (--eval-data)
            "summary": self.summary(),
            "names": [p.name for p in self.paths],
            "skipped": list(self.skipped),
        }
        if self.labels is not None:
            out["anomalous"] = int(self.labels.sum())
        if self.synthetic is not None:
            out["synthetic"] = dict(self.synthetic)
        return out


@dataclass
class Outputs:
    """One model's outputs on one set; ``stats`` (threshold and map statistics) for good-image sets only."""

    scores: np.ndarray
    maps: np.ndarray
    stats: dict[str, Any] | None = None


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
    return recorded_sigmas(info.training if info is not None else None)


@dataclass
class ThresholdSets:
    """The images an artifact's own threshold is derived on (:func:`edge_ad.thresholds.basis.threshold_basis`), read
    once: the good images and, for the synthetic-f1 rule, the NSA anomalies made on them (rebuilt by seed)."""

    basis: ThresholdBasis
    good: ImageSet
    anomalies: ImageSet | None = None

    @property
    def sets(self) -> list[ImageSet]:
        return [self.good] + ([self.anomalies] if self.anomalies is not None else [])


def bundle_threshold_sets(
    info: BundleInfo | None, preprocessing: Preprocessing, reuse: ImageSet | None = None
) -> ThresholdSets | None:
    """The sets behind ``info``'s current threshold, or None when it records no images (an imported bundle).

    ``reuse``: an already read good set (the held-out selection images); taken as it is when it holds the same
    files. Raises ``ValueError`` (one line) when the images are gone.
    """
    if info is None:
        return None
    basis = threshold_basis(info, default_sigmas=threshold_sigmas(info))
    return None if basis is None else threshold_sets(basis, preprocessing, reuse)


def threshold_sets(basis: ThresholdBasis, preprocessing: Preprocessing, reuse: ImageSet | None = None) -> ThresholdSets:
    """Read (or reuse) the good images of ``basis``; for synthetic-f1, rebuild the synthetic set made on them."""
    if basis.rule != SYNTHETIC_F1 or basis.synthetic is None:
        wanted = [p.resolve() for p in basis.paths]
        if reuse is not None and not reuse.labelled and [p.resolve() for p in reuse.paths] == wanted:
            return ThresholdSets(basis, reuse)
        return ThresholdSets(basis, good_set(basis.paths, preprocessing, basis.kind, basis.folder))
    from edge_ad.synthesis.validation import rebuild_validation_set

    try:
        vset = rebuild_validation_set(basis.synthetic, basis.folder, preprocessing.geometry)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the synthetic set behind the bundle's threshold cannot be rebuilt ({exc})") from None
    normalised = np.stack([preprocessing.normalize(im) for im in vset.images]).astype(np.float32, copy=False)
    good_index, bad_index = np.flatnonzero(vset.labels == 0), np.flatnonzero(vset.labels == 1)
    folder = Path(basis.folder)
    good = ImageSet(basis.kind, basis.folder, [folder / vset.names[i] for i in good_index], normalised[good_index])
    anomalies = ImageSet(
        SYNTHETIC,
        basis.folder,
        [folder / vset.names[i] for i in bad_index],
        normalised[bad_index],
        labels=np.ones(bad_index.size, np.int64),
        masks=vset.masks[bad_index] != 0,
        synthetic={**vset.describe(), "n_good": int(good_index.size), "n_anomalous": int(bad_index.size)},
    )
    return ThresholdSets(basis, good, anomalies)


def basis_statistics(sets: ThresholdSets, good: Outputs, anomalies: Outputs | None = None) -> dict[str, Any]:
    """The bundle's threshold rule on one model's outputs on ``sets``: its own ``score_stats`` (``image``, ``pixel``,
    ``threshold_rule``, ``threshold_basis``). Raises ``ValueError`` when synthetic-f1 would flag every good image."""
    basis = sets.basis
    stats = rule_statistics(
        basis.rule, good.scores, good.maps, basis.sigmas, anomalies.scores if anomalies is not None else None
    )
    image = stats["image"]
    if basis.rule == SYNTHETIC_F1:
        refuse_flagging_every_good_image(image, basis.summary(), "re-threshold the bundle with --rule good-sigma")
    return {**stats, "threshold_rule": basis.rule, "threshold_basis": basis.describe()}


def run_model(
    runtime: Runtime, sets: Sequence[ImageSet], label: str, sigmas: float, batch_size: int = 8
) -> list[Outputs]:
    """Run one model once over each set, under one progress bar named ``label``.

    A good-image set also yields its threshold statistics (:func:`edge_ad.thresholds.rules.good_statistics`) from
    the same pass.
    """
    results = []
    with progress_bar(total=sum(len(s.data) for s in sets), description=label) as bar:
        for image_set in sets:
            scores, maps = score_batches(runtime.predict, image_set.data, batch_size=batch_size, on_batch=bar.advance)
            stats = None if image_set.labelled else good_statistics(scores, maps, sigmas)
            results.append(Outputs(scores, maps, stats))
    return results


def labelled_metrics(image_set: ImageSet, outputs: Outputs) -> dict[str, dict[str, float]]:
    """Metrics (overall and per defect type) of one model's outputs on a labelled set."""
    if image_set.samples is None or image_set.labels is None or image_set.masks is None:
        raise ValueError("metrics need a labelled set (--eval-data)")
    scored = Scored(list(image_set.samples), image_set.labels, outputs.scores, outputs.maps, image_set.masks)
    return metrics_by_defect(scored)


def synthetic_set(
    info: BundleInfo | None, held_out: ImageSet, preprocessing: Preprocessing
) -> tuple[ImageSet | None, str]:
    """The NSA anomalies of the bundle's synthetic validation set, whose good part is ``held_out``; or None and
    the reason (one line for the report), so the caller falls back to the label-free rule."""
    description = info.training.get("synthetic_validation") if info is not None else None
    if held_out.kind != HOLDOUT:
        return None, f"the selection images are {held_out.kind}, not held-out good images a synthetic set is made on"
    if not isinstance(description, dict):
        return None, "the bundle records no synthetic validation set (trained by an older edge-ad, or imported)"
    status = str(description.get("status", "?"))
    if status != "ok":
        return None, f"the bundle's synthetic validation set was not made ({status})"
    if set(description.get("images") or []) != {p.name for p in held_out.paths}:
        return None, "the bundle's synthetic validation set describes other images than its held-out good images"
    from edge_ad.synthesis.validation import rebuild_validation_set

    try:
        vset = rebuild_validation_set(description, held_out.folder, preprocessing.geometry)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"the bundle's synthetic validation set could not be rebuilt ({exc})"
    index = np.flatnonzero(vset.labels == 1)
    if index.size == 0:
        return None, "the bundle's synthetic validation set has no anomalies"
    data = np.stack([preprocessing.normalize(vset.images[i]) for i in index]).astype(np.float32, copy=False)
    folder = Path(held_out.folder)
    return (
        ImageSet(
            SYNTHETIC,
            held_out.folder,
            [folder / vset.names[i] for i in index],
            data,
            labels=np.ones(index.size, np.int64),
            masks=vset.masks[index] != 0,
            synthetic={**vset.describe(), "n_good": len(held_out.paths), "n_anomalous": int(index.size)},
        ),
        "",
    )


def synthetic_metrics(good: Outputs, anomalies: Outputs, anomaly_set: ImageSet) -> dict[str, float]:
    """Image and pixel AUROC of one model on a synthetic validation set: its outputs on the held-out good images
    (label 0, empty masks) and on their synthetic anomalies."""
    if anomaly_set.masks is None:
        raise ValueError("synthetic metrics need the anomalies' masks")
    n = len(good.scores)
    labels = np.r_[np.zeros(n, np.int64), np.ones(len(anomalies.scores), np.int64)]
    masks = np.concatenate([np.zeros((n, *anomaly_set.masks.shape[1:]), bool), anomaly_set.masks])
    maps = np.concatenate([good.maps, anomalies.maps])
    if maps.shape != masks.shape:
        raise ValueError(f"anomaly maps {maps.shape[1:]} and masks {masks.shape[1:]} differ in size")
    return {
        "image_auroc": float(auroc(labels, np.concatenate([good.scores, anomalies.scores]))),
        "pixel_auroc": float(pixel_auroc(masks, maps)),
    }
