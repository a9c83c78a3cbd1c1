"""The epoch loop every family's trainer runs: progress, synthetic validation, a checkpoint per epoch, selection.

Why one loop: what happens around an epoch -- the progress bar (terminal and log), the per-epoch synthetic
validation (:class:`~edge_ad.training.epoch_validation.EpochValidation`), the checkpoint written after every epoch
(so a kill -9 loses at most the epoch in flight), and keeping the selected epoch's weights at the end -- is the same
for every family. A trainer supplies its epoch and what its progress line shows; the validation hooks below default
to a trainer of the whole model (NSA, RealNet) and SimpleNet overrides the ones where it trains a part of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from edge_ad.progress import console, progress_bar
from edge_ad.synthesis.validation import Predict, ValidationScores, ValidationSet, score_validation_set
from edge_ad.training.epoch_validation import figures_postfix

__all__ = ["EpochLoop"]


class EpochLoop:
    """Mixin: ``fit()`` over ``cfg.epochs`` from ``start_epoch``. The trainer provides ``cfg``, ``start_epoch``,
    ``history``, ``model``, ``device``, ``validation``, ``train_epoch(epoch)``, ``save_checkpoint(done)`` (and
    ``preprocessing`` unless it overrides ``_score_validation``); the hooks below have defaults."""

    progress_label: ClassVar[str] = "train"

    def _predict(self) -> Predict:
        """The graph's forward (eval mode: EpochValidation sets it and gives train mode back)."""
        from edge_ad.runtimes.torch_runtime import TorchRuntime

        self_: Any = self
        return TorchRuntime(self_.model, device=str(self_.device)).predict

    def _score_validation(self, vset: ValidationSet) -> ValidationScores:
        """The synthetic validation set scored through the graph, its images normalised as the run's input is."""
        self_: Any = self
        return score_validation_set(self._predict(), vset, self_.preprocessing.normalize)

    def _weights(self) -> dict[str, Any]:
        """The weights an epoch's selection keeps (all of the model's by default)."""
        self_: Any = self
        return self_.model.state_dict()

    def _load_weights(self, weights: dict[str, Any]) -> None:
        """Put weights that :meth:`_weights` gave back into the model."""
        self_: Any = self
        self_.model.load_state_dict(weights)

    def _keep_selected(self) -> None:
        """Keep the selected epoch's weights, if one was selected; say which epoch, or why none was (one line)."""
        self_: Any = self
        weights = self_.validation.selected_weights()
        if weights is not None:
            self._load_weights(weights)
        if self_.validation.select == "synthetic":
            console.log(self_.validation.selection(self_.cfg.epochs)["selection"])

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
