"""The RealNet family end to end at tiny sizes: graph vs training path, AFS determinism, RRS per image, CLI training,
bundle reload, ONNX export parity and the TensorRT op check, evaluation on the ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge_ad.models.realnet.model import RealNet, RealNetConfig


def _tiny_model(image_size: int = 64) -> RealNet:
    torch.manual_seed(0)
    return RealNet(RealNetConfig(afs_keep=(8, 16), rrs_k=4), image_size=image_size)


def test_config_scales_afs_and_rrs_to_the_backbone() -> None:
    cfg = RealNetConfig()  # Lite0 block4 (40 ch) and block10 (112 ch)
    assert cfg.layers == ("block4", "block10")
    assert cfg.afs_keep == (20, 56) and cfg.rrs_k == round(76 / 6)
    assert RealNetConfig.from_dict(cfg.to_dict()) == cfg
    wrn = RealNetConfig(backbone="wide_resnet50_2", layers=("layer1", "layer2", "layer3"))
    assert wrn.afs_keep == (256, 512, 512) and wrn.rrs_k == round(1280 / 6)  # the reference's per-level sizes
    with pytest.raises(ValueError, match="afs_keep"):
        RealNetConfig(afs_keep=(41, 10))


def test_graph_equals_the_training_path() -> None:
    model = _tiny_model().eval()
    for gather in model.gathers:  # a non-trivial selection
        gather.indices.copy_(torch.randperm(gather.channels)[: gather.indices.numel()].sort().values)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        _, _, logits = model(images)
        score, amap, patch = model.inference_graph()(images)
    expected = torch.softmax(logits, dim=1)[:, 1:2]
    assert patch.shape == (3, 1, model.grid_size, model.grid_size)
    torch.testing.assert_close(patch, expected, rtol=0, atol=1e-6)
    assert amap.shape == (3, 64, 64)
    torch.testing.assert_close(score, patch.amax(dim=(1, 2, 3)), rtol=0, atol=0)  # the shared head's max


def test_rrs_gathers_each_images_own_top_channels() -> None:
    model = _tiny_model().eval()
    rrs = model.rrs
    res = torch.rand(2, rrs.norm.num_features, 8, 8) * 0.1
    res[0, 3] += 5.0  # image 0: channel 3 has the largest max and mean
    res[1, 7, 2, 2] += 50.0  # image 1: channel 7 has the largest max only
    with torch.no_grad():
        picked = rrs(res)
        normed = rrs.norm(res)
    by_max, by_mean = rrs.indices(normed)
    assert by_max[0, 0] == 3 and by_mean[0, 0] == 3 and by_max[1, 0] == 7
    for n in range(2):
        for j, c in enumerate(torch.cat([by_max[n], by_mean[n]]).tolist()):
            torch.testing.assert_close(picked[n, j], normed[n, c])


def test_afs_indices_are_deterministic_and_follow_the_mask(tiny_demo: Path) -> None:
    from edge_ad.data.images import read_image
    from edge_ad.data.layout import train_images
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.realnet.trainer import _Batches, compute_afs
    from edge_ad.synthesis.sources import anomaly_mix

    pre = Preprocessing(image_size=64, resize=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    views = [pre.geometry(read_image(p)) for p in train_images(tiny_demo)[:4]]
    mix = anomaly_mix(views, background=None)

    def run(seed: int) -> list[list[int]]:
        model = _tiny_model()
        return compute_afs(model, _Batches(mix, views, pre, torch.device("cpu")), pairs=6, seed=seed, batch_size=3)

    first = run(0)
    assert first == run(0)
    assert [len(c) for c in first] == [8, 16] and all(c == sorted(set(c)) for c in first)
    assert first != run(1) or first != [list(range(8)), list(range(16))]  # not simply the leading channels


def test_realnet_trains_through_the_cli_reloads_and_exports(tiny_demo: Path, tmp_path: Path) -> None:
    from edge_ad.cli.main import app
    from edge_ad.evaluation.evaluate import evaluate_model
    from edge_ad.export import export
    from edge_ad.models.families import FAMILIES
    from edge_ad.models.registry import load_model
    from edge_ad.onnx_tools.op_check import check_ops
    from edge_ad.postprocess.image_score import HeadDeclaration

    bundle = tmp_path / "realnet-washer"
    args = ["train", str(tiny_demo), "--model", "realnet", "--out", str(bundle), "--image-size", "64",
            "--resize", "64", "--epochs", "2", "--batch-size", "4"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (bundle / ".training").exists() is False

    model, info = load_model(bundle)
    assert info.family == "realnet" and isinstance(model, RealNet)
    assert HeadDeclaration.of_graph(model.inference_graph()) == FAMILIES["realnet"].head
    import json

    config = json.loads((bundle / "config.json").read_text())
    training = config["training"]
    assert config["model"]["afs_keep"] == [20, 56] and config["model"]["rrs_k"] == 13
    assert [g.indices.tolist() for g in model.gathers] == training["afs_indices"]
    assert training["afs_indices"][0] != list(range(20))  # AFS chose, the buffers are not the initial arange
    assert len(training["history"]) == 2

    exported = export(bundle, "onnx", "fp32")
    assert exported.path is not None and exported.path.is_file()
    assert check_ops(exported.path) == []
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        want = model.inference_graph()(images)
    for name, ours, theirs in zip(["image_score", "anomaly_map", "patch_scores"], got, want, strict=True):
        assert np.abs(ours - theirs.numpy()).max() <= 1e-4, name

    ops = {n.op_type for n in onnx.load(str(exported.path)).graph.node}
    assert {"TopK", "GatherElements"} <= ops

    torch_report = evaluate_model(bundle, tiny_demo, backend="torch")["metrics"]["overall"]
    onnx_report = evaluate_model(exported.path, tiny_demo, backend="onnxruntime")["metrics"]["overall"]
    assert onnx_report["image_auroc"] == pytest.approx(torch_report["image_auroc"], abs=1e-6)
    assert np.isfinite(onnx_report["pixel_auroc"])

    image = sorted((tiny_demo / "test").rglob("*.png"))[0]
    predicted = CliRunner().invoke(app, ["predict", str(exported.path), str(image), "--out", str(tmp_path / "p")])
    assert predicted.exit_code == 0, predicted.output


def test_resume_continues_a_realnet_run(tiny_demo: Path, tmp_path: Path) -> None:
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.realnet.trainer import RealNetTrainConfig, train_realnet_bundle

    common = {
        "category": None,
        "preprocessing": Preprocessing(image_size=64, resize=64),
        "model_cfg": RealNetConfig(afs_keep=(8, 16), rrs_k=4),
    }
    cfg = RealNetTrainConfig(epochs=1, batch_size=4, afs_pairs=4, synthetic_per_image=0)
    first = train_realnet_bundle(tiny_demo, tmp_path / "a", train_cfg=cfg, keep_checkpoint=True, **common)
    longer = RealNetTrainConfig(epochs=2, batch_size=4, afs_pairs=4, synthetic_per_image=0)
    train_realnet_bundle(tiny_demo, first, train_cfg=longer, resume=True, **common)
    straight = train_realnet_bundle(tiny_demo, tmp_path / "b", train_cfg=longer, **common)
    from safetensors.torch import load_file

    resumed, fresh = load_file(str(first / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert resumed.keys() == fresh.keys()
    for key in resumed:
        torch.testing.assert_close(resumed[key], fresh[key], rtol=0, atol=1e-5, msg=key)
