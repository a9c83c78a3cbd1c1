"""The AFS ablation's two arms differ in the AFS selection only; the photo benchmark's RealNet variants say what
they change."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")


def test_the_ablation_arms_differ_only_in_the_selection() -> None:
    from edge_ad.benchmarks.realnet_afs import ablation_configs
    from edge_ad.models.backbones import get_backbone

    arms = ablation_configs()
    selected, every = arms["afs"], arms["all_channels"]
    channels = tuple(get_backbone(selected.backbone).level(n).channels for n in selected.layers)
    assert every.afs_keep == channels and all(k < c for k, c in zip(selected.afs_keep, channels, strict=True))
    assert every.rrs_k == selected.rrs_k  # RRS keeps as many residual channels in both arms
    same = {f.name for f in dataclasses.fields(selected)} - {"afs_keep", "afs_ratio"}
    assert {n for n in same if getattr(selected, n) != getattr(every, n)} == set()


def test_the_photo_benchmark_trains_realnet_with_each_variants_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_ad.benchmarks.real_photos as rp
    from edge_ad.models.realnet.model import RealNetConfig
    from edge_ad.models.realnet.trainer import DEMO_IMAGE_SIZE, DEMO_RESIZE, REALNET_CPU_DEMO

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(rp, "train_realnet_bundle", lambda data, out, **kw: calls.append({"data": data, **kw}) or out)
    for name in ("demo", "realnet_224", "realnet_long", "realnet_all_channels"):
        rp.train("realnet", tmp_path, "grass", tmp_path / name, rp.VARIANTS[name], seed=0)
    demo, wide, long, every = calls
    assert demo["data"] == tmp_path / "tune" and demo["category"] == "grass"
    assert (demo["preprocessing"].image_size, demo["preprocessing"].resize) == (DEMO_IMAGE_SIZE, DEMO_RESIZE)
    assert (wide["preprocessing"].image_size, wide["preprocessing"].resize) == (224, 256)
    assert demo["train_cfg"].kind == "texture" and demo["train_cfg"].epochs == REALNET_CPU_DEMO.epochs
    assert long["train_cfg"].epochs == 2 * REALNET_CPU_DEMO.epochs
    assert demo["model_cfg"] == RealNetConfig()  # pretrained Lite0, AFS on
    assert every["model_cfg"].afs_ratio == 1.0 and every["model_cfg"].rrs_k == RealNetConfig().rrs_k
    assert demo["train_cfg"].textures is None  # the category's own images


def test_the_smooth_textures_variant_blurs_the_training_crops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2
    import numpy as np

    import edge_ad.benchmarks.real_photos as rp

    good = tmp_path / "tune" / "grass" / "train" / "good"
    good.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(good / f"{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(rp, "train_realnet_bundle", lambda data, out, **kw: calls.append(kw) or out)
    rp.train("realnet", tmp_path, "grass", tmp_path / "m" / "grass", rp.VARIANTS["realnet_smooth_textures"], seed=0)
    folder = Path(calls[0]["train_cfg"].textures)
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png"]
    original, blurred = (cv2.imread(str(d / "0.png")).astype(float) for d in (good, folder))
    assert blurred.std() < 0.2 * original.std()  # smooth patches, not the busy texture
    rp.train("realnet", tmp_path, "grass", tmp_path / "n" / "grass", rp.VARIANTS["realnet_mixed_textures"], seed=0)
    mixed = Path(calls[1]["train_cfg"].textures)
    assert sorted(p.name for p in mixed.iterdir()) == ["0-original.png", "0.png", "1-original.png", "1.png"]
    assert np.array_equal(cv2.imread(str(mixed / "0-original.png")), cv2.imread(str(good / "0.png")))
