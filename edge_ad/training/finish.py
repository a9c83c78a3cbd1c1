"""The end of every family's training, once: threshold on held-out good images, training metadata, sealed bundle,
checkpoint clean-up, stale exports set aside, and the loud warning about a weak threshold.

Why one function: the two trainers had grown two copies of these steps, and a fix made to one would have missed
the other (ARCHITECTURE: no step exists twice). A family passes what only it knows (score statistics of its own,
extra training metadata, the backbone record); the rest is the same for all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file
from torch import nn

from edge_ad.bundle import WEIGHTS_NAME, artifact_weights_sha256, check_artifact_current, warn_threshold, write_config
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_with
from edge_ad.progress import console
from edge_ad.runtimes.scoring import score_batches
from edge_ad.runtimes.torch_runtime import TorchRuntime
from edge_ad.thresholds.rules import good_statistics
from edge_ad.training.run_start import TrainingRun

__all__ = ["finish_bundle", "set_aside_stale_exports"]

FALLBACK_SOURCE = "training images (too few images to hold any out: threshold is optimistic)"


def finish_bundle(
    model: nn.Module,
    run: TrainingRun,
    *,
    image: Callable[[int], np.ndarray],
    history: Sequence[Any],
    backbone: dict[str, Any],
    score_stats: dict[str, Any] | None = None,
    training_extra: dict[str, Any] | None = None,
) -> Path:
    """Threshold the trained ``model`` on the run's held-out images (``image(i)``: image ``i`` preprocessed, CHW
    float32; the training images when none are held out) and write the sealed bundle; returns the bundle folder.

    ``run.train_cfg`` is the family's config (``to_dict``, ``threshold_sigmas``), ``history`` its epoch records.
    """
    if run.validation is None or run.validation_record is None:
        raise RuntimeError("finish_bundle needs the run's synthetic validation (TrainingRun.validate)")
    split, train_cfg, out_dir, validation = run.split, run.train_cfg, run.out_dir, run.validation
    paths, train_idx, hold_idx = split.paths, split.train_idx, split.hold_idx
    model.cpu().eval()
    threshold_source, eval_idx = "holdout", list(hold_idx)
    if not eval_idx:
        threshold_source, eval_idx = FALLBACK_SOURCE, list(train_idx)
    runtime = TorchRuntime(model)  # type: ignore[arg-type]  # any registered family's graph
    stats: dict[str, Any] = dict(score_stats or {})
    scores, maps = score_batches(runtime.predict, eval_idx, lambda idx: np.stack([image(i) for i in idx]))
    stats.update(good_statistics(scores, maps, train_cfg.threshold_sigmas))
    stats["threshold_source"] = threshold_source
    threshold = stats["image"]["threshold"]
    training = {
        **train_cfg.to_dict(),
        "data": str(split.category_dir),
        "train_images": [paths[i].name for i in train_idx],
        "holdout_images": [paths[i].name for i in hold_idx],
        **(training_extra or {}),
        "history": [asdict(h) for h in history],
        "final_epoch": asdict(history[-1]) if history else None,
        "device": run.device,
        **validation.selection(train_cfg.epochs),
        "synthetic_validation": run.validation_record,
    }
    save_model(
        model,  # type: ignore[arg-type]  # any registered family
        out_dir,
        preprocessing=run.preprocessing,
        threshold=threshold,
        score_stats=stats,
        backbone=backbone,
        training=training,
    )
    if not run.keep_checkpoint:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    console.log(f"bundle written to {out_dir} (threshold {threshold:.4f})")
    set_aside_stale_exports(out_dir)
    warn_threshold(threshold, stats, out_dir)
    return out_dir


def set_aside_stale_exports(bundle_dir: Path) -> list[Path]:
    """Rename exports in ``bundle_dir`` made from other weights to ``*.stale`` (engine sidecars too).

    Why: retraining into a folder that holds earlier exports would otherwise leave ``model.*.onnx`` /
    ``model.*.engine`` that look current; loading refuses them anyway, renaming makes the folder say so.
    """
    moved = []
    for artifact in sorted([*bundle_dir.glob("model.*.onnx"), *bundle_dir.glob("model.*.engine")]):
        try:
            check_artifact_current(bundle_dir, artifact_weights_sha256(artifact), artifact)
            continue
        except Exception:  # noqa: BLE001 - stale, or unreadable: either way it does not belong to these weights
            pass
        for item in (artifact, artifact.with_suffix(".json") if artifact.suffix == ".engine" else None):
            if item is not None and item.is_file():
                item.replace(item.with_name(item.name + ".stale"))
                moved.append(item)
    if moved:
        console.log(f"set aside {len(moved)} export(s) made from earlier weights: {', '.join(p.name for p in moved)}")
    return moved


def save_model(
    model: Any,
    bundle_dir: str | Path,
    *,
    preprocessing: Preprocessing,
    threshold: float,
    score_stats: dict[str, Any],
    backbone: dict[str, Any],
    training: dict[str, Any],
) -> Path:
    """Write a bundle atomically: weights first, then the config that seals them."""
    bundle_dir = Path(bundle_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(
        bundle_dir / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"family": model.family})
    )
    write_config(
        bundle_dir,
        family=model.family,
        model=model.config.to_dict(),
        image_size=model.image_size,
        preprocessing=preprocessing,
        threshold=threshold,
        score_stats=score_stats,
        backbone=backbone,
        training=training,
    )
    return bundle_dir
