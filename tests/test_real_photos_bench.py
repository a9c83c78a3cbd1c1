"""The real-photograph benchmarks' own pieces: the classical baseline's features and the variants' data folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ad.benchmarks.real_photos import VARIANTS, data_folder
from edge_ad.benchmarks.real_photos_baselines import SCALES, local_stats, raw_patches


def test_local_stats_are_mean_spread_and_gradient_energy() -> None:
    flat = np.full((40, 40, 3), 51, np.uint8)
    f = local_stats(flat)
    assert f.shape == (40, 40, 3 * len(SCALES))
    assert np.allclose(f[..., 0::3], 0.2, atol=1e-4)  # mean of 51 / 255 at every scale
    assert np.allclose(f[..., 1::3], 0.0, atol=1e-3) and np.allclose(f[..., 2::3], 0.0, atol=1e-5)
    checker = np.where((np.indices((40, 40)).sum(0) // 2) % 2 == 0, 0, 255).astype(np.uint8)
    g = local_stats(np.repeat(checker[..., None], 3, axis=2))
    inner = g[10:30, 10:30]
    assert (inner[..., 1::3] > 0.3).all() and (inner[..., 2::3] > 0.5).all()  # busy: large spread and gradients


def test_raw_patches_are_the_shrunk_crops_own_windows() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    f = raw_patches(np.repeat(grey[..., None], 3, axis=2), size=3, shrink=2)
    assert f.shape == (16, 16, 9)
    small = grey.reshape(16, 2, 16, 2).astype(np.float32).mean(axis=(1, 3)) / 255.0  # INTER_AREA at 1/2
    assert np.allclose(f[5, 7], small[4:7, 6:9].ravel(), atol=1e-5)  # the window centred on (5, 7)
    assert np.allclose(f[0, 0].reshape(3, 3)[0], f[0, 0].reshape(3, 3)[1], atol=1e-6)  # top edge reflected


def test_each_variant_names_its_data_folder(tmp_path: Path) -> None:
    assert data_folder(tmp_path, VARIANTS["demo"]) == tmp_path / "data"
    assert data_folder(tmp_path, VARIANTS["more_data"]) == tmp_path / "data-n120"
    assert VARIANTS["normal_blend"]["nsa_blend"] == "normal"
