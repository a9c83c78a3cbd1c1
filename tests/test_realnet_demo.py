"""`edge-ad demo --model realnet` held to a measured floor that the same network with untrained parts fails.

Slow (about a minute with one thread). Measured with `edge-ad demo ROOT --model realnet` (REALNET_CPU_DEMO:
pretrained EfficientNet-Lite0 at 128 px, 20 epochs of batch 8, seed 0, demo brushed_metal) on a shared 2-core AMD
EPYC, 2026-12-07: image / pixel AUROC 1.0000 / 0.9903 (AUPRO 0.9626) with OMP_NUM_THREADS=1, 1.0000 / 0.9891 with
two threads (float order). The same model with its
pretrained backbone and AFS indices but G_k, RRS and the decoder as initialised: 0.479 / 0.516. The floors sit well
under the trained figures (one run, one seed: the figures move with the seed and the CPU) and far over the untrained.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REALNET_IMAGE_AUROC_FLOOR = 0.90
REALNET_PIXEL_AUROC_FLOOR = 0.90


@pytest.mark.slow
def test_realnet_demo_reaches_its_floor_and_untrained_parts_do_not(tmp_path: Path) -> None:
    import torch

    from edge_ad.cli.demo import run_demo
    from edge_ad.datasets.demo import DEFAULT_DEMO_CATEGORY
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.models.registry import load_model
    from edge_ad.training.finish import save_model

    report = run_demo(tmp_path / "full", model="realnet")
    overall = report["metrics"]["overall"]
    assert overall["image_auroc"] >= REALNET_IMAGE_AUROC_FLOOR, overall
    assert overall["pixel_auroc"] >= REALNET_PIXEL_AUROC_FLOOR, overall

    trained, info = load_model(Path(report["model"]))
    torch.manual_seed(0)
    untrained = type(trained)(trained.config, image_size=trained.image_size)
    untrained.backbone.load_state_dict(trained.backbone.state_dict())  # the pretrained backbone is not trained here
    for fresh, chosen in zip(untrained.gathers, trained.gathers, strict=True):
        fresh.indices.copy_(chosen.indices)  # nor are the AFS indices
    save_model(
        untrained,
        tmp_path / "untrained",
        preprocessing=info.preprocessing,
        threshold=info.threshold,
        score_stats=info.score_stats,
        backbone=info.backbone,
        training={"note": "initial G_k, RRS and decoder, for the floor check"},
    )
    data = tmp_path / "full" / "data"
    broken = evaluate_model(tmp_path / "untrained", data, DEFAULT_DEMO_CATEGORY, backend="torch")["metrics"]["overall"]
    assert broken["image_auroc"] < REALNET_IMAGE_AUROC_FLOOR, broken
    assert broken["pixel_auroc"] < REALNET_PIXEL_AUROC_FLOOR, broken
