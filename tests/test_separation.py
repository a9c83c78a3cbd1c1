"""A synthetic validation set that cannot separate is not used to choose: epoch selection keeps the final weights and
says so in one line (the INT8 recipe and the synthetic-f1 threshold: tests/test_calibration.py, test_threshold_cmd.py).
"""

from __future__ import annotations

import math

import torch

from edge_ad.synthesis.separation import CHANCE_MARGIN, no_separation_line, separates
from edge_ad.training.epoch_validation import EpochValidation


def test_separates_needs_every_figure_above_the_margin() -> None:
    assert separates(0.5 + CHANCE_MARGIN + 1e-3)
    assert not separates(0.5 + CHANCE_MARGIN)  # within the margin: chance
    assert not separates(0.4861)  # the random-backbone demo's fp32 synthetic image AUROC
    assert not separates(0.2)  # below chance: inverted, not a ranking to choose on
    assert not separates(0.9, 0.52) and not separates(0.9, None) and not separates(math.nan)
    assert not separates()
    line = no_separation_line("INT8 recipe", {"image AUROC": 0.4861, "pixel AUROC": None}, "the default rule")
    assert line.count("\n") == 0 and "image AUROC 0.4861, pixel AUROC n/a" in line and "needs > 0.55" in line


def _weights(value: float):
    return lambda: {"adapter.weight": torch.full((2,), value)}


def test_epoch_selection_falls_back_to_final_weights_on_a_set_that_cannot_separate() -> None:
    validation = EpochValidation(object(), select="synthetic")  # type: ignore[arg-type]  # the set is not read here
    validation._consider(0, 0.5, 0.47, _weights(1.0))
    validation._consider(1, 0.52, 0.45, _weights(2.0))
    assert validation.best is not None and validation.best["epoch"] == 1  # the best of noise, kept but not used
    assert validation.selected_weights() is None
    chosen = validation.selection(5)
    assert chosen["selected_epoch"] == 5
    assert chosen["selection"].startswith("--select synthetic: the synthetic validation set cannot separate")
    assert "final weights kept" in chosen["selection"]

    validation._consider(2, 0.9, 0.8, _weights(3.0))  # a set that separates: its best epoch is chosen
    weights = validation.selected_weights()
    assert weights is not None and float(weights["adapter.weight"][0]) == 3.0
    assert validation.selection(5)["selected_epoch"] == 3
