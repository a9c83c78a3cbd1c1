"""A synthetic-anomaly validation set: NSA anomalies on held-out good images, fixed by a seed.

Why: every choice that should look at defects (when to stop training, the INT8 recipe, the threshold) can look at
these instead of the labelled test split. The set is rebuilt from its description (held-out image names, seed,
parameters), so a bundle stores the description, never the pixels. numpy + OpenCV only (no torch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.evaluation.metrics import auroc, pixel_auroc
from edge_ad.synthesis.generator import NsaGenerator
from edge_ad.synthesis.params import NsaParams
from edge_ad.synthesis.sets import synthetic_set

__all__ = [
    "ValidationScores",
    "ValidationSet",
    "build_validation_set",
    "rebuild_validation_set",
    "score_validation_set",
    "scores_from_outputs",
    "VALIDATION_SEED_OFFSET",
]

#: The validation set's seed is the run's seed plus this, so it never shares a stream with training examples.
VALIDATION_SEED_OFFSET = 7919

#: A model's contract here: a float32 N x 3 x H x W batch in, (image scores N, maps N x H x W) out.
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ValidationSet:
    """Good held-out images first, then ``per_image`` synthetic anomalies of each.

    ``images`` are uint8 ``N x H x W x 3`` in the model's geometry (crop and resize done, not normalised),
    ``masks`` uint8 ``N x H x W`` (all zero for a good image), ``labels`` int ``N`` (0 good, 1 synthetic).
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_good(self) -> int:
        return int((self.labels == 0).sum())

    @property
    def n_anomalous(self) -> int:
        return int((self.labels == 1).sum())

    def describe(self) -> dict[str, Any]:
        """What a bundle stores: enough to rebuild the set from the same held-out images."""
        return {**self.meta, "n_good": self.n_good, "n_anomalous": self.n_anomalous}

    def summary(self) -> str:
        return (
            f"synthetic validation: {self.n_good} held-out good images and {self.n_anomalous} NSA anomalies on them "
            f"(seed {self.meta.get('seed')})"
        )


@dataclass(frozen=True)
class ValidationScores:
    """A model on a validation set: AUROCs (NaN when a class is missing) and the image scores, set order."""

    image_auroc: float
    pixel_auroc: float
    image_scores: np.ndarray

    def figures(self) -> dict[str, float]:
        """The JSON part (for progress, history and reports)."""
        return {"image_auroc": self.image_auroc, "pixel_auroc": self.pixel_auroc}


def build_validation_set(
    images: Sequence[np.ndarray],
    names: Sequence[str],
    params: NsaParams,
    *,
    seed: int,
    per_image: int = 2,
    workers: int = 0,
) -> ValidationSet:
    """NSA anomalies on ``images`` (uint8 RGB, same size, the model's geometry), patches from another of them.

    Needs two or more images (a patch always comes from another image); raises ``ValueError`` otherwise, so the
    caller can say that synthetic validation was skipped and why.
    """
    if len(images) != len(names):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    if len(images) < 2:
        raise ValueError(f"synthetic validation needs at least 2 held-out good images, got {len(images)}")
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise ValueError(f"per_image must be an integer >= 1, got {per_image!r}")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"validation images must share one size, got {sorted(shapes)}")
    generator = NsaGenerator(list(images), params, "binary", require_anomaly=True)
    examples = synthetic_set(generator, len(images) * per_image, seed, workers=workers)
    good = np.stack(list(images)).astype(np.uint8)
    h, w = good.shape[1:3]
    syn_images = np.stack([e.image for e in examples])
    syn_masks = np.stack([e.mask for e in examples]).astype(np.uint8)
    labels = np.array([0] * len(images) + [1 if m.any() else 0 for m in syn_masks], dtype=np.int64)
    syn_names = [f"{names[i % len(names)]}#nsa{i // len(names)}" for i in range(len(examples))]
    return ValidationSet(
        images=np.concatenate([good, syn_images]),
        masks=np.concatenate([np.zeros((len(images), h, w), np.uint8), syn_masks]),
        labels=labels,
        names=[*names, *syn_names],
        meta={
            "kind": "nsa-synthetic",
            "seed": int(seed),
            "per_image": int(per_image),
            "images": list(names),
            "params": generator.params.to_json(),
        },
    )


def rebuild_validation_set(
    description: dict[str, Any], good_dir: str | os.PathLike[str], geometry: Callable[[np.ndarray], np.ndarray]
) -> ValidationSet:
    """The set a bundle describes, from its held-out images in ``good_dir``; ``geometry`` is the bundle's
    ``Preprocessing.geometry``. Raises ``ValueError`` naming a missing image or a description of another kind."""
    from edge_ad.data.images import read_image

    if description.get("kind") != "nsa-synthetic":
        raise ValueError(f"not a synthetic validation set description: kind {description.get('kind')!r}")
    names = list(description["images"])
    folder = Path(good_dir)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder}: held-out images of the synthetic validation set are missing: {missing[:3]}")
    images = [geometry(read_image(folder / n)) for n in names]
    return build_validation_set(
        images,
        names,
        NsaParams.from_json(dict(description["params"])),
        seed=int(description["seed"]),
        per_image=int(description["per_image"]),
    )


def score_validation_set(
    predict: Predict,
    vset: ValidationSet,
    normalize: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int = 8,
) -> ValidationScores:
    """Image and pixel AUROC of ``predict`` on ``vset``; ``normalize`` maps one uint8 HWC image to float CHW.

    Maps are compared at the set's resolution (resized when the model's map is smaller). A set without both
    classes gives NaN figures rather than an error: the caller records it and carries on.
    """
    scores, maps = [], []
    for start in range(0, len(vset), batch_size):
        chunk = vset.images[start : start + batch_size]
        s, m = predict(np.stack([normalize(im) for im in chunk]).astype(np.float32))
        scores.append(np.asarray(s, np.float32).reshape(-1))
        maps.append(np.asarray(m, np.float32))
    return scores_from_outputs(vset, np.concatenate(scores), np.concatenate(maps))


def scores_from_outputs(vset: ValidationSet, image_scores: np.ndarray, score_maps: np.ndarray) -> ValidationScores:
    """Image and pixel AUROC of outputs already computed for ``vset`` (set order), e.g. by a trainer that runs
    only the trainable part of its graph on cached features. Same rules as :func:`score_validation_set`."""
    image_scores = np.asarray(image_scores, np.float32).reshape(-1)
    score_maps = np.asarray(score_maps, np.float32)
    if len(image_scores) != len(vset) or len(score_maps) != len(vset):
        raise ValueError(f"{len(image_scores)} scores and {len(score_maps)} maps for a set of {len(vset)}")
    h, w = vset.masks.shape[1:]
    if score_maps.shape[1:] != (h, w):
        import cv2

        score_maps = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in score_maps])
    image = pixel = float("nan")
    if 0 < vset.labels.sum() < len(vset.labels):
        image = float(auroc(vset.labels, image_scores))
    if vset.masks.any() and not vset.masks.all():
        pixel = float(pixel_auroc(vset.masks.astype(bool), score_maps))
    return ValidationScores(image_auroc=image, pixel_auroc=pixel, image_scores=image_scores)
