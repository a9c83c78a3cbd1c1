"""Synthetic-anomaly validation inside training, shared by every family's trainer.

Why: a model trained on good images only has no defect to be judged on while it trains. NSA anomalies on the
held-out good images (:mod:`edge_ad.synthesis.validation`) give per-epoch image and pixel AUROC, and
``select="synthetic"`` keeps the weights of the best epoch by them, never by the test split. A family supplies
two things: how to score the set with its current weights (cheaply, if it can) and what its trainable weights
are; everything else (when to validate, the best epoch, its checkpoint state, the ``on_epoch`` hook, the bundle's
description) lives here once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.progress import console
from edge_ad.synthesis import params_for
from edge_ad.synthesis.separation import no_separation_line, separates
from edge_ad.synthesis.validation import (
    VALIDATION_SEED_OFFSET,
    Predict,
    ValidationScores,
    ValidationSet,
    build_validation_set,
)

__all__ = [
    "SELECT_CHOICES",
    "EpochValidation",
    "OnEpoch",
    "check_validation_settings",
    "figures_postfix",
    "prepare_validation",
]

SELECT_CHOICES = ("final", "synthetic")
#: ``on_epoch(epoch, predict)``: 1-based epoch, a predict function of the current model (eval mode during the call).
OnEpoch = Callable[[int, Predict], None]
FIGURE_KEYS = ("synthetic_image_auroc", "synthetic_pixel_auroc")


def check_validation_settings(select: str, per_image: int, every: int) -> None:
    """Refuse settings no run can use, before any image is read (one clear line each)."""
    if select not in SELECT_CHOICES:
        raise ValueError(f"--select must be one of {', '.join(SELECT_CHOICES)}, got {select!r}")
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 0:
        raise ValueError(f"--synthetic-per-image must be an integer >= 0 (0: no validation), got {per_image!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"validate_every must be an integer >= 1, got {every!r}")
    if select == "synthetic" and per_image == 0:
        raise ValueError("--select synthetic needs synthetic validation: --synthetic-per-image must be >= 1")


def prepare_validation(
    held: Sequence[Path],
    preprocessing: Preprocessing,
    category: str | None,
    kind: str | None,
    *,
    seed: int,
    per_image: int,
    workers: int = 0,
    raw: Sequence[np.ndarray] | None = None,
) -> tuple[ValidationSet | None, dict[str, Any]]:
    """The validation set of the held-out images ``held`` and what the bundle records about it.

    ``raw`` are the held-out images already read (else they are read from ``held``). A skipped set comes back as
    ``None`` with ``{"status": "skipped: <reason>"}``, said once on the console.
    """
    reason = None
    params = None
    if per_image == 0:
        reason = "turned off (synthetic_per_image 0)"
    elif len(held) < 2:
        reason = f"{len(held)} held-out good image(s); NSA anomalies need at least 2 (patches come from another image)"
    else:
        try:
            params = params_for(category, kind)  # type: ignore[arg-type]  # checked by params_for
        except ValueError as exc:
            reason = str(exc)
    if reason is not None or params is None:
        console.log(f"synthetic validation skipped: {reason}")
        return None, {"status": f"skipped: {reason}"}
    images = [preprocessing.geometry(im) for im in (raw if raw is not None else [read_image(p) for p in held])]
    vset = build_validation_set(
        images,
        [p.name for p in held],
        params,
        seed=seed + VALIDATION_SEED_OFFSET,
        per_image=per_image,
        workers=workers,
    )
    console.log(vset.summary())
    return vset, {**vset.describe(), "status": "ok", "good_dir": str(held[0].parent)}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class EpochValidation:
    """When to validate, the figures of each epoch, the best epoch's weights and the ``on_epoch`` hook.

    ``vset`` None: no figures (every epoch records None), but the hook still runs; ``status`` says why (the
    bundle record's). ``select="synthetic"``: the
    weights of the epoch with the best mean of the two AUROCs are kept (ties: the later epoch) and travel in the
    checkpoint (:meth:`state_dict`), so a resumed run selects exactly what an uninterrupted one would.
    """

    def __init__(
        self,
        vset: ValidationSet | None,
        *,
        select: str = "final",
        every: int = 1,
        on_epoch: OnEpoch | None = None,
        status: str = "skipped",
    ):
        if select == "synthetic" and vset is None:
            raise ValueError(f"--select synthetic needs the synthetic validation set, but it was {status}")
        self.vset = vset
        self.select = select
        self.every = every
        self.on_epoch = on_epoch
        self.best: dict[str, Any] | None = None  # epoch (0-based), score, image, pixel, weights

    def due(self, epoch: int) -> bool:
        """Epochs ``every``, ``2 * every``, ... (1-based): the same epochs however a run was split by resumes."""
        return self.vset is not None and (epoch + 1) % self.every == 0

    def after_epoch(
        self,
        epoch: int,
        model: nn.Module,
        score: Callable[[ValidationSet], ValidationScores],
        predict: Callable[[], Predict],
        weights: Callable[[], dict[str, torch.Tensor]],
    ) -> dict[str, float | None]:
        """Validate epoch ``epoch`` (0-based) if due, keep its weights if best, call the hook; the model is in eval
        mode meanwhile and gets its mode back. Returns the history's figures (None when not validated or NaN)."""
        figures: dict[str, float | None] = dict.fromkeys(FIGURE_KEYS)
        was_training = model.training
        model.eval()
        try:
            if self.vset is not None and self.due(epoch):
                with torch.no_grad():
                    result = score(self.vset)
                image, pixel = _finite_or_none(result.image_auroc), _finite_or_none(result.pixel_auroc)
                figures = dict(zip(FIGURE_KEYS, (image, pixel), strict=True))
                self._consider(epoch, image, pixel, weights)
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, predict())
        finally:
            model.train(was_training)
        return figures

    def _consider(
        self, epoch: int, image: float | None, pixel: float | None, weights: Callable[[], dict[str, torch.Tensor]]
    ) -> None:
        if self.select != "synthetic" or image is None or pixel is None:
            return
        mean = (image + pixel) / 2
        if self.best is None or mean >= self.best["score"]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in weights().items()}
            self.best = {"epoch": epoch, "score": mean, "image": image, "pixel": pixel, "weights": state}

    # -- checkpoint ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        """The best epoch so far (plain types and tensors: loads with ``weights_only``); None when not selecting."""
        return None if self.best is None else dict(self.best)

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.best = None if state is None else dict(state)

    # -- the end of training -------------------------------------------------------------------------
    def separates(self) -> bool:
        """Whether the best epoch's synthetic figures are above chance
        (:func:`~edge_ad.synthesis.separation.separates`): when they are not, no epoch is chosen on them."""
        return self.best is not None and separates(self.best["image"], self.best["pixel"])

    def selected_weights(self) -> dict[str, torch.Tensor] | None:
        """The weights to keep instead of the final ones, or None (final weights)."""
        if self.select != "synthetic" or self.best is None or not self.separates():
            return None
        return self.best["weights"]

    def selection(self, epochs: int) -> dict[str, Any]:
        """What the bundle's training metadata says about the kept weights: ``selection`` and ``selected_epoch``."""
        if self.select != "synthetic":
            return {"selection": "final weights (no test labels used)", "selected_epoch": epochs}
        if self.best is None:
            return {
                "selection": "final weights: --select synthetic found no epoch with finite synthetic AUROCs",
                "selected_epoch": epochs,
            }
        b = self.best
        if not self.separates():
            figures = {"best epoch's image AUROC": b["image"], "pixel AUROC": b["pixel"]}
            line = no_separation_line("--select synthetic", figures, "final weights kept (the default)")
            return {"selection": line, "selected_epoch": epochs}
        return {
            "selection": (
                f"epoch {b['epoch'] + 1} of {epochs}: best mean synthetic AUROC {b['score']:.4f} (image "
                f"{b['image']:.4f}, pixel {b['pixel']:.4f}) on NSA anomalies of the held-out good images, the later "
                "epoch on ties (no test labels used)"
            ),
            "selected_epoch": b["epoch"] + 1,
        }


def figures_postfix(figures: dict[str, float | None]) -> dict[str, float]:
    """The progress line's part (``syn_image=0.9500 syn_pixel=0.8700``), empty for an epoch not validated."""
    short = {"synthetic_image_auroc": "syn_image", "synthetic_pixel_auroc": "syn_pixel"}
    return {short[k]: v for k, v in figures.items() if v is not None}
