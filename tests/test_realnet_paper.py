"""RealNet's paper preset on WideResNet50-2 (random weights, tiny images): the reference's levels layer1-4 with AFS
256 / 512 / 512 / 256 and RRS 256 + 256, one training step through the CLI, reload, and (slow) ONNX parity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge_ad.models.realnet.model import RealNet, RealNetConfig


def test_the_paper_backbone_defaults_to_the_reference_levels_and_sizes() -> None:
    cfg = RealNetConfig(backbone="wide_resnet50_2")
    assert cfg.layers == ("layer1", "layer2", "layer3", "layer4")
    assert cfg.afs_keep == (256, 512, 512, 256) and cfg.rrs_k == 256  # 256 by max + 256 by mean of 1536
    assert RealNetConfig.from_dict(cfg.to_dict()) == cfg
    named = RealNetConfig(backbone="wide_resnet50_2", layers=("layer2", "layer3"))  # --layers still wins
    assert named.layers == ("layer2", "layer3") and named.afs_keep == (512, 512)
    assert RealNetConfig().layers == ("block4", "block10")  # Lite0 keeps its own default


def test_paper_levels_train_one_step_and_the_graph_matches(tiny_demo: Path) -> None:
    """WideResNet50 layer1-4 (torchvision's random init), AFS at small sizes so the test stays light: AFS picks
    from every level, one optimiser step moves the trained parts and leaves the backbone, the graph matches."""
    from edge_ad.data.images import read_image
    from edge_ad.data.layout import train_images
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.realnet.trainer import REALNET_PAPER, RealNetTrainer, _Batches, compute_afs
    from edge_ad.synthesis.sources import anomaly_mix

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = RealNet(RealNetConfig(backbone="wide_resnet50_2", afs_keep=(8, 16, 16, 8), rrs_k=4), image_size=64)
    assert model.grids == [16, 8, 4, 2] and [g.channels for g in model.gathers] == [256, 512, 1024, 2048]
    pre = Preprocessing(image_size=64, resize=64)
    views = [pre.geometry(read_image(p)) for p in train_images(tiny_demo)[:4]]
    batches = _Batches(anomaly_mix(views, background=None), views, pre, torch.device("cpu"))
    chosen = compute_afs(model, batches, pairs=4, seed=0, batch_size=4)
    assert [len(c) for c in chosen] == [8, 16, 16, 8]
    assert [g.indices.tolist() for g in model.gathers] == chosen

    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dataclasses.replace(REALNET_PAPER, epochs=1, batch_size=4)
    stats = RealNetTrainer(model, batches, pre, cfg).train_epoch(0)
    assert np.isfinite(stats.loss) and stats.recon > 0
    after = model.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert {"recon", "decoder"} <= moved and "backbone" not in moved  # the frozen trunk, layer4 included

    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, _, logits = model.eval()(images)
        score, amap, patch = model.inference_graph()(images)
    torch.testing.assert_close(patch, torch.softmax(logits, dim=1)[:, 1:2], rtol=0, atol=1e-6)
    assert patch.shape == (2, 1, 32, 32) and amap.shape == (2, 64, 64) and torch.isfinite(score).all()


@pytest.mark.slow
def test_paper_preset_on_wide_resnet_through_the_cli_and_onnx(tiny_demo: Path, tmp_path: Path) -> None:
    """The full paper sizes (about 260 M parameters, 1 GB in fp32) at 64 px: one step, then ONNX fp32 parity.
    Heavy: 514 s and 7.0 GB peak memory on a 2-core AMD EPYC under load 10 (2026-12-07)."""
    from edge_ad.cli.main import app
    from edge_ad.export import export
    from edge_ad.models.registry import load_model
    from edge_ad.onnx_tools.op_check import check_ops

    bundle = tmp_path / "paper"
    args = ["train", str(tiny_demo), "--model", "realnet", "--backbone", "wide_resnet50_2", "--random-backbone",
            "--preset", "paper", "--out", str(bundle), "--image-size", "64", "--no-crop", "--epochs", "1",
            "--batch-size", "12", "--synthetic-per-image", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((bundle / "config.json").read_text())
    assert config["model"]["afs_keep"] == [256, 512, 512, 256] and config["model"]["rrs_k"] == 256
    assert config["training"]["batch_size"] == 12 and config["training"]["lr"] == 1e-4

    exported = export(bundle, "onnx", "fp32")
    assert exported.path is not None and check_ops(exported.path) == []
    import onnxruntime as ort

    model, _ = load_model(bundle)
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        want = model.inference_graph()(images)
    for name, ours, theirs in zip(["image_score", "anomaly_map", "patch_scores"], got, want, strict=True):
        assert np.abs(ours - theirs.numpy()).max() <= 1e-4, name
