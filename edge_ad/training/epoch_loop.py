"""The epoch loop every family's trainer runs: progress, synthetic validation, a checkpoint per epoch, selection.

Why one loop: what happens around an epoch -- the progress bar (terminal and log), the per-epoch synthetic
validation (:class:`~edge_ad.training.epoch_validation.EpochValidation`), the checkpoint written after every epoch
(so a kill -9 loses at most the epoch in flight), and keeping the selected epoch's weights at the end -- is the same
for SimpleNet and NSA. A trainer supplies only its epoch and what its progress line shows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from edge_ad.progress import console, progress_bar
from edge_ad.training.epoch_validation import figures_postfix

__all__ = ["EpochLoop"]


class EpochLoop:
    """Mixin: ``fit()`` over ``cfg.epochs`` from ``start_epoch``. The trainer provides ``cfg``, ``start_epoch``,
    ``history``, ``model``, ``validation``, ``train_epoch(epoch)``, ``save_checkpoint(done)``, ``_score_validation``,
    ``_predict``, ``_weights``, ``_keep_selected()``, and the two hooks below."""

    progress_label: ClassVar[str] = "train"

    def _postfix(self, stats: Any) -> dict[str, float]:
        """The epoch's figures on the progress line (beside the synthetic-validation ones)."""
        return {"loss": stats.loss}

    def _trained_line(self) -> str | None:
        """The line logged when the last epoch is done (None: none)."""
        return None

    def fit(self) -> list[Any]:
        self_: Any = self  # the attributes come from the trainer class (see the docstring)
        cfg = self_.cfg
        remaining = cfg.epochs - self_.start_epoch
        if remaining <= 0:
            if self_.start_epoch:
                console.log(f"the checkpoint already holds all {cfg.epochs} epochs: nothing left to train")
        else:
            label = self.progress_label
            if self_.start_epoch:
                label = f"{label} (resumed after epoch {self_.start_epoch})"
            with progress_bar(total=remaining, description=label, unit="epochs") as bar:
                for epoch in range(self_.start_epoch, cfg.epochs):
                    stats = self_.train_epoch(epoch)
                    figures = self_.validation.after_epoch(
                        epoch, self_.model, self_._score_validation, self_._predict, self_._weights
                    )
                    stats = replace(stats, **figures)
                    self_.history.append(stats)
                    self_.save_checkpoint(epoch + 1)
                    bar.set_postfix(**self._postfix(stats), **figures_postfix(figures))
                    bar.advance()
            line = self._trained_line()
            if line:
                console.log(line)
        self_._keep_selected()
        self_.model.eval()
        return self_.history
