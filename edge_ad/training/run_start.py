"""What every family's bundle training does before its trainer runs: the good images and their hold-out, the
synthetic validation set, the run's data fingerprint and its checkpoint folder, kept in one :class:`TrainingRun`
record that :func:`~edge_ad.training.finish.finish_bundle` takes whole at the end.

Why one module: SimpleNet's :func:`~edge_ad.models.simplenet.pipeline.train_bundle` and NSA's
:func:`~edge_ad.models.nsa.trainer.train_nsa_bundle` must split, log, validate and refuse a stale checkpoint the
same way, or a bundle of one family would record its hold-out or its validation set differently from the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.data.layout import resolve_category, train_images
from edge_ad.progress import console
from edge_ad.training.checkpoints import CHECKPOINT_NAME, split_holdout
from edge_ad.training.epoch_validation import EpochValidation, OnEpoch, prepare_validation

__all__ = [
    "GoodSplit",
    "TrainingRun",
    "checkpoint_dir_for",
    "data_fingerprint",
    "split_good_images",
    "start_run",
    "synthetic_validation",
]


@dataclass
class GoodSplit:
    """One category's good training images, split into those trained on and those held out (threshold and
    synthetic validation)."""

    category_dir: Path
    category: str
    paths: list[Path]
    train_idx: list[int]
    hold_idx: list[int]


@dataclass
class TrainingRun:
    """One bundle training's shared state, from its start to the sealed bundle: what every family's trainer used to
    hand :func:`~edge_ad.training.finish.finish_bundle` as fourteen separate arguments."""

    split: GoodSplit
    out_dir: Path
    preprocessing: Any
    train_cfg: Any
    device: str
    checkpoint_dir: Path
    keep_checkpoint: bool
    validation: EpochValidation | None = None
    validation_record: dict[str, Any] | None = None

    def validate(self, on_epoch: OnEpoch | None, **options: Any) -> EpochValidation:
        """Prepare the per-epoch synthetic validation on the held-out images (``options`` as for
        :func:`synthetic_validation`) and keep it, with its record, for the bundle."""
        self.validation, self.validation_record = synthetic_validation(
            self.split, self.preprocessing, self.train_cfg, on_epoch, **options
        )
        return self.validation


def start_run(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    category: str | None,
    preprocessing: Any,
    train_cfg: Any,
    device: str,
    resume: bool,
    keep_checkpoint: bool,
) -> TrainingRun:
    """Split the category's good images (logged) and claim the checkpoint folder (an earlier run's checkpoint is
    refused unless ``resume``), before anything is trained."""
    out_dir = Path(out_dir)
    split = split_good_images(data_dir, category, train_cfg)
    checkpoint_dir = checkpoint_dir_for(out_dir, resume)
    return TrainingRun(split, out_dir, preprocessing, train_cfg, device, checkpoint_dir, keep_checkpoint)


def split_good_images(data_dir: str | Path, category: str | None, train_cfg: Any) -> GoodSplit:
    """Resolve the category and split its good images by ``train_cfg``'s seed and hold-out share; logs the split."""
    category_dir = resolve_category(data_dir, category)
    paths = train_images(category_dir)
    train_idx, hold_idx = split_holdout(len(paths), train_cfg)
    console.log(f"{category_dir}: {len(train_idx)} training images, {len(hold_idx)} held out for the threshold")
    return GoodSplit(category_dir, category or category_dir.name, paths, train_idx, hold_idx)


def synthetic_validation(
    split: GoodSplit, preprocessing: Any, train_cfg: Any, on_epoch: OnEpoch | None, **options: Any
) -> tuple[EpochValidation, dict[str, Any]]:
    """The per-epoch synthetic validation on the held-out images and its record for the bundle. ``options`` go to
    :func:`prepare_validation` (NSA passes its workers and the held-out images it has already read)."""
    vset, record = prepare_validation(
        [split.paths[i] for i in split.hold_idx],
        preprocessing,
        split.category,
        train_cfg.kind,
        seed=train_cfg.seed,
        per_image=train_cfg.synthetic_per_image,
        **options,
    )
    validation = EpochValidation(
        vset, select=train_cfg.select, every=train_cfg.validate_every, on_epoch=on_epoch, status=record["status"]
    )
    return validation, record


def data_fingerprint(paths: list[Path]) -> str:
    """The training images' names and bytes, hashed: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def checkpoint_dir_for(out_dir: Path, resume: bool) -> Path:
    """``OUT/.training``; an earlier run's checkpoint there is refused unless the run resumes it."""
    checkpoint_dir = out_dir / ".training"
    if not resume and (checkpoint_dir / CHECKPOINT_NAME).exists():
        raise FileExistsError(
            f"{checkpoint_dir / CHECKPOINT_NAME} exists from an earlier run: pass --resume to continue it, "
            "or delete it to start again"
        )
    return checkpoint_dir
