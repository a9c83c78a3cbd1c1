"""Importing a checkpoint written by the authors' code gives the authors' scores."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edge_ad.bundle import read_bundle
from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.detector import Detector
from edge_ad.models.backbones.wide_resnet import WideResNet50Trunk
from edge_ad.models.simplenet.import_checkpoint import (
    CheckpointError,
    apply_authors_bn_drift,
    default_resize,
    import_checkpoint,
)
from tests.test_simplenet_model import spec_features


def authors_modules(seed: int) -> tuple[nn.Module, nn.Module]:
    """The authors' Projection (one Linear, 'layers.0fc') and Discriminator ('body.block1', 'tail') layouts."""
    torch.manual_seed(seed)
    proj = nn.Module()
    proj.layers = nn.Sequential(OrderedDict([("0fc", nn.Linear(1536, 1536))]))
    disc = nn.Module()
    disc.body = nn.Sequential(
        OrderedDict([("block1", nn.Sequential(nn.Linear(1536, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2)))])
    )
    disc.tail = nn.Linear(1024, 1, bias=False)
    bn = disc.body.block1[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 1.5)
    return proj.eval(), disc.eval()


def authors_scores(trunk: WideResNet50Trunk, proj: nn.Module, disc: nn.Module, batch: torch.Tensor):
    """The authors' inference: literal features -> projection -> -discriminator; image score = max."""
    with torch.no_grad():
        l2, l3 = trunk(batch)
        feats = spec_features(l2, l3)
        n, c, h, w = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, c)
        scores = -disc.tail(disc.body(proj.layers(flat))).reshape(n, h, w)
    return scores.flatten(1).max(1).values.numpy()


def authors_setup(tmp_path: Path) -> tuple[WideResNet50Trunk, nn.Module, nn.Module]:
    """A random trunk saved as the backbone file and a checkpoint in the authors' layout beside it."""
    torch.manual_seed(7)
    trunk = WideResNet50Trunk().eval()
    torch.save(trunk.state_dict(), tmp_path / "wrn50.pth")
    proj, disc = authors_modules(8)
    torch.save({"discriminator": disc.state_dict(), "pre_projection": proj.state_dict()}, tmp_path / "ckpt.pth")
    return trunk, proj, disc


def authors_drifted(trunk: WideResNet50Trunk, size: int) -> WideResNet50Trunk:
    """What the authors' SimpleNet.load() does to a fresh (train-mode) backbone: one forward of ones at the crop."""
    drifted = copy.deepcopy(trunk).train()
    with torch.no_grad():
        drifted(torch.ones(1, 3, size, size))
    return drifted.eval()


def test_imported_checkpoint_reproduces_the_authors_scores(tiny_demo: Path, tmp_path: Path) -> None:
    trunk, proj, disc = authors_setup(tmp_path)
    out = import_checkpoint(
        tmp_path / "ckpt.pth",
        tmp_path / "wrn50.pth",
        tmp_path / "bundle",
        image_size=64,
        resize=72,
        good_images=tiny_demo / "train" / "good",
    )
    info = read_bundle(out)
    assert info.backbone["bn_drift"] == {"input": "ones", "size": 64, "momentum": 0.1}  # the crop size, not 72
    det = Detector.load(out)
    paths = sorted((tiny_demo / "test" / "crack").glob("*.png"))
    ours = np.array([p.image_score for p in det.predict(paths)])
    batch = torch.from_numpy(Preprocessing(image_size=64, resize=72).batch([read_image(p) for p in paths]))
    theirs = authors_scores(authors_drifted(trunk, 64), proj, disc, batch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.isfinite(det.threshold) and info.has_threshold

    # the drift is what makes them equal: without it the scores are the undrifted backbone's, off the authors'
    plain = import_checkpoint(
        tmp_path / "ckpt.pth", tmp_path / "wrn50.pth", tmp_path / "plain", image_size=64, resize=72, bn_drift=False
    )
    assert "bn_drift" not in read_bundle(plain).backbone
    undrifted = np.array([p.image_score for p in Detector.load(plain).predict(paths)])
    np.testing.assert_allclose(undrifted, authors_scores(trunk, proj, disc, batch), rtol=1e-4, atol=1e-4)
    assert np.abs(undrifted - theirs).max() > 100 * 1e-4 * (1 + np.abs(theirs).max())


def test_drift_moves_every_batchnorm_up_to_layer3_once() -> None:
    torch.manual_seed(3)
    trunk = WideResNet50Trunk().eval()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    record = apply_authors_bn_drift(trunk, 32)
    assert record == {"input": "ones", "size": 32, "momentum": 0.1} and not trunk.training
    expected = copy.deepcopy(trunk)
    expected.load_state_dict(before)
    expected = authors_drifted(expected, 32)
    bn_keys = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(k.startswith("layer3.5.") for k in bn_keys)
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, expected.state_dict()[key]), key
        if key in bn_keys:
            assert not torch.equal(value, before[key]), f"{key} did not move"
        else:
            assert torch.equal(value, before[key]), f"{key} is not a BatchNorm statistic but changed"


def test_import_without_threshold_writes_strict_json_and_absolute_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authors_setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = import_checkpoint(Path("ckpt.pth"), Path("wrn50.pth"), Path("b"), image_size=64, resize=None)

    def no_constants(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    raw = json.loads((out / "config.json").read_text(), parse_constant=no_constants)  # strict parsers accept it
    assert raw["threshold"] is None and raw["preprocessing"]["resize"] is None
    assert raw["training"]["imported_from"] == str((tmp_path / "ckpt.pth").resolve())
    info = read_bundle(out)
    assert not info.has_threshold and info.threshold == float("inf")
    assert Detector.load(out).threshold == float("inf")
    from edge_ad.bundle import BundleError
    from edge_ad.export.onnx_export import export_onnx

    with pytest.raises(BundleError, match="no verdict threshold"):  # no export that no runtime could load
        export_onnx(out)


def test_resize_follows_the_image_size_as_the_authors_pair_them() -> None:
    assert [default_resize(s) for s in (224, 288)] == [256, 329]


def test_import_command_geometry(tmp_path: Path) -> None:
    authors_setup(tmp_path)
    base = ["import-simplenet", str(tmp_path / "ckpt.pth"), "--backbone-weights", str(tmp_path / "wrn50.pth")]
    runner = CliRunner()

    def config(name: str, *extra: str) -> dict:
        result = runner.invoke(app, [*base, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "config.json").read_text())

    assert config("a", "--image-size", "64")["preprocessing"]["resize"] == 73  # round(64 * 256 / 224)
    assert config("b", "--image-size", "64", "--no-crop")["preprocessing"]["resize"] is None
    assert "bn_drift" not in config("c", "--image-size", "64", "--no-bn-drift")["backbone"]
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "d"), "--image-size", "96", "--resize", "80"])
    assert bad.exit_code == 2 and "--no-crop" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "d").exists()


def test_rejects_files_that_are_not_simplenet_checkpoints(tmp_path: Path) -> None:
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'discriminator'"):
        import_checkpoint(tmp_path / "other.pth", tmp_path / "w.pth", tmp_path / "b")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read"):
        import_checkpoint(tmp_path / "junk.pth", tmp_path / "w.pth", tmp_path / "b")
