"""The Lite recipe sweep's own pieces: the training-free heads, the per-channel noise and the settings parser."""

from __future__ import annotations

import pytest
import torch

from edge_ad.benchmarks.real_photos_lite_sweep import (
    feature_noise,
    parse_settings,
    patch_scores_gaussian,
    patch_scores_memory,
)


def test_memory_score_is_the_distance_to_the_nearest_training_patch() -> None:
    train = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])  # one image, two patches
    test = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]]])
    assert torch.allclose(patch_scores_memory(train, test, 1.0, 0), torch.tensor([[0.0, 0.0, 5.0, 1.0]]))


def test_gaussian_score_grows_with_distance_in_units_of_each_channel_spread() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(4, 500, 2, generator=g) * torch.tensor([1.0, 10.0])  # channel 1 spreads 10x wider
    test = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]])
    s = patch_scores_gaussian(train, test)[0]
    assert s[0] < 0.2 and s[1] > 2.5 and s[2] < 0.5  # 3 in the narrow channel is far, 3 in the wide one is not


def test_channel_noise_follows_each_channel_spread() -> None:
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 2, generator=g) * torch.tensor([1.0, 5.0])
    iso = feature_noise(true, "iso", 0.5, torch.ones(2), torch.Generator().manual_seed(1)).std(0)
    chan = feature_noise(true, "channel", 0.5, torch.ones(2), torch.Generator().manual_seed(1)).std(0)
    assert torch.allclose(iso, torch.tensor([0.5, 0.5]), rtol=0.1)
    assert torch.allclose(chan, torch.tensor([0.5, 2.5]), rtol=0.1)
    with pytest.raises(ValueError, match="noise must be"):
        feature_noise(true, "other", 0.5, torch.ones(2), g)


def test_settings_split_into_feature_and_head_settings() -> None:
    f, h = parse_settings(['layers=["block4"]', "resize=null", "head=memory", "noise_std=1.0"])
    assert f["layers"] == ["block4"] and f["resize"] is None and f["image_size"] == 224
    assert h["head"] == "memory" and h["noise_std"] == 1.0
    with pytest.raises(ValueError, match="unknown setting"):
        parse_settings(["no_such=1"])
