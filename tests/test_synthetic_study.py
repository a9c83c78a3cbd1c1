"""The synthetic-vs-real study's bookkeeping on made-up histories: pairing, Spearman, selection, the hook."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ad.benchmarks.synthetic_vs_real import (
    RealSplit,
    pair_epochs,
    real_hook,
    selection,
    spearman,
    summarise,
)


def _history(image: list[float], pixel: list[float]) -> list[dict]:
    return [
        {"epoch": i, "loss": 1.0 / (i + 1), "synthetic_image_auroc": a, "synthetic_pixel_auroc": b}
        for i, (a, b) in enumerate(zip(image, pixel, strict=True))
    ]


def _real(image: list[float], pixel: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "image": a, "pixel": b} for i, (a, b) in enumerate(zip(image, pixel, strict=True))]


def test_pair_epochs_matches_hook_epoch_to_history_entry_and_keeps_nan_as_none() -> None:
    rows = pair_epochs(_history([0.5, 0.7, float("nan")], [0.6, 0.8, 0.9]), _real([0.4, 0.6, 0.8], [0.5, 0.7, 0.75]))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1] == {"epoch": 2, "synthetic_image": 0.7, "synthetic_pixel": 0.8, "real_image": 0.6, "real_pixel": 0.7}
    assert rows[2]["synthetic_image"] is None
    with pytest.raises(ValueError, match="history has 2"):
        pair_epochs(_history([0.5, 0.7], [0.6, 0.8]), _real([0.4, 0.6, 0.8], [0.5, 0.7, 0.75]))


def test_spearman_ranks_not_values_and_skips_missing_pairs() -> None:
    up = spearman([0.1, 0.2, 0.3, 0.9], [0.50, 0.51, 0.90, 0.91])  # monotone, far from linear
    assert up["n"] == 4 and up["rho"] == pytest.approx(1.0)
    down = spearman([0.1, 0.2, 0.3, None, 0.4], [0.9, 0.8, 0.7, 0.0, 0.6])
    assert down["n"] == 4 and down["rho"] == pytest.approx(-1.0)
    assert spearman([0.1, 0.2], [0.3, 0.4])["rho"] is None  # too few pairs
    assert spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["rho"] is None  # constant side


def test_selection_reports_the_real_figure_at_the_synthetic_pick() -> None:
    rows = pair_epochs(_history([0.5, 0.9, 0.8], [0.6, 0.7, 0.9]), _real([0.4, 0.6, 0.8], [0.5, 0.7, 0.75]))
    image = selection(rows, "image")
    assert image["epoch_by_synthetic"] == 2 and image["real_at_synthetic_pick"] == 0.6
    assert image["real_at_final_epoch"] == 0.8 and image["best_real"] == 0.8 and image["best_real_epoch"] == 3
    assert selection(rows, "pixel")["epoch_by_synthetic"] == 3


def test_summarise_pools_epochs_across_seeds_per_family_and_metric() -> None:
    runs = [
        {"family": "a", "seed": 0, "epochs": pair_epochs(_history([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]),
                                                          _real([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]))},
        {"family": "a", "seed": 1, "epochs": pair_epochs(_history([0.4, 0.5, 0.6], [0.6, 0.5, 0.4]),
                                                          _real([0.8, 0.85, 0.9], [0.8, 0.85, 0.9]))},
        {"family": "b", "seed": 0, "epochs": pair_epochs(_history([0.9, 0.1, 0.5], [0.2, 0.4, 0.6]),
                                                          _real([0.1, 0.9, 0.5], [0.2, 0.4, 0.6]))},
    ]
    out = summarise(runs)
    assert set(out) == {"a", "b"}
    assert out["a"]["image"]["pooled"]["n"] == 6 and out["a"]["image"]["pooled"]["rho"] == pytest.approx(1.0)
    assert out["a"]["pixel"]["per_seed"]["0"]["rho"] == pytest.approx(-1.0)
    assert out["a"]["pixel"]["pooled"]["rho"] < 1.0  # seed 1 sits higher on both axes: pooled rank order mixes
    assert out["b"]["image"]["pooled"]["rho"] == pytest.approx(-1.0)
    assert out["b"]["pixel"]["pooled"]["rho"] == pytest.approx(1.0)


def _replay(scores: np.ndarray, maps: np.ndarray):
    """A predict that returns the given outputs in order, batch by batch (as the trainer's would)."""
    done = [0]

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = slice(done[0], done[0] + len(batch))
        done[0] += len(batch)
        return scores[sel], maps[sel]

    return predict


def test_real_hook_scores_the_split_through_the_predict_it_is_given() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0])  # more than one batch of 8
    masks = np.zeros((10, 4, 4), bool)
    masks[labels == 1, :2, :2] = True
    split = RealSplit(np.zeros((10, 3, 4, 4), np.float32), labels, masks)
    log: list[dict] = []
    hook = real_hook(split, log)
    hook(1, _replay(labels.astype(np.float32), masks.astype(np.float32)))
    hook(2, _replay(-labels.astype(np.float32), -masks.astype(np.float32)))
    assert log[0] == {"epoch": 1, "image": 1.0, "pixel": 1.0}
    assert log[1] == {"epoch": 2, "image": 0.0, "pixel": 0.0}
