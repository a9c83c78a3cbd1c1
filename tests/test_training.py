"""Training pipeline: bundle contents, no test-set peeking, exact resume, loss pieces."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.bundle import BundleError, read_bundle
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.registry import load_model
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.pipeline import BackboneSpec, train_bundle
from edge_ad.models.simplenet.trainer import TrainConfig, Trainer, add_feature_noise, truncated_l1
from edge_ad.training.checkpoints import run_fingerprint, split_holdout


def test_truncated_l1_matches_the_formula() -> None:
    s = torch.tensor([0.9, 0.2, -1.0])
    s_ = torch.tensor([-0.9, 0.1, 2.0])
    expected = np.mean(np.maximum(0, 0.5 - s.numpy())) + np.mean(np.maximum(0, 0.5 + s_.numpy()))
    assert truncated_l1(s, s_, 0.5).item() == pytest.approx(expected)


def test_noise_has_the_requested_scale() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(20000, 16)
    eps = add_feature_noise(x, 0.015, 1, g)
    assert eps.std().item() == pytest.approx(0.015, rel=0.02)
    mixed = add_feature_noise(x, 0.015, 3, g)
    assert mixed.std().item() > 0.015 * 1.05  # scales 1, 1.1, 1.21


def test_holdout_split_is_deterministic_and_disjoint() -> None:
    cfg = TrainConfig(seed=4)
    train, hold = split_holdout(30, cfg)
    assert (train, hold) == split_holdout(30, cfg)
    assert set(train).isdisjoint(hold) and len(train) + len(hold) == 30 and len(hold) == 3
    assert split_holdout(1, cfg) == ([0], [])


def test_bundle_contents(tiny_bundle: Path) -> None:
    info = read_bundle(tiny_bundle)
    assert info.family == "simplenet" and info.image_size == 64
    assert info.backbone["weights"] == "random" and info.backbone["batchnorm_recalibrated_on"] > 0
    assert info.backbone["init"].startswith("isometric")  # the recorded draw is the default one
    assert info.model["score_mode"] == "negative" and info.model["noise_std"] == 0.2  # the paper's score
    stats = info.score_stats["image"]
    assert info.threshold >= stats["good_max"] and stats["good_count"] == len(info.training["holdout_images"])
    # the threshold comes from held-out good images, never from test data
    assert info.training["selection"].startswith("final weights")
    assert not set(info.training["holdout_images"]) & set(info.training["train_images"])
    assert not (tiny_bundle / ".training").exists()


def test_image_score_is_the_max_of_the_patch_map(tiny_bundle: Path) -> None:
    model, _ = load_model(tiny_bundle)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image_score, anomaly_map, patch = model.inference_graph()(x)
    assert torch.equal(image_score, patch.amax(dim=(1, 2, 3)))
    assert anomaly_map.shape == (2, 64, 64)


def test_bundle_refuses_tampering(tiny_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["format_version"] = 999
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="bundle format 999"):
        read_bundle(copy)
    cfg["format_version"] = 1
    cfg["model"]["layers"] = ["layer1", "layer2"]
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="pool evenly"):
        load_model(copy)
    cfg = json.loads((tiny_bundle / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(cfg))
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="hash differs"):
        read_bundle(copy)
    with pytest.raises(BundleError, match="no config.json"):
        read_bundle(tmp_path)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    feats = torch.randn(6, 16, 1536).half()
    cfg = TrainConfig(epochs=3, batch_size=2, seed=5)

    def fresh() -> SimpleNet:
        torch.manual_seed(0)
        return SimpleNet(SimpleNetConfig(noise_std=0.1), image_size=32)

    straight = Trainer(fresh(), feats, cfg, checkpoint_dir=tmp_path / "a", run_fingerprint="x")
    straight.fit()
    # "killed" after two epochs: a trainer for 2 epochs writes the same checkpoint an interrupted run would
    first = Trainer(
        fresh(), feats, TrainConfig(epochs=2, batch_size=2, seed=5), checkpoint_dir=tmp_path / "b", run_fingerprint="x"
    )
    first.fit()
    resumed = Trainer(fresh(), feats, cfg, checkpoint_dir=tmp_path / "b", run_fingerprint="x")
    assert resumed.resume() and resumed.start_epoch == 2
    resumed.fit()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = Trainer(fresh(), feats, cfg, checkpoint_dir=tmp_path / "b", run_fingerprint="y")
    with pytest.raises(ValueError, match="different data or settings"):
        other.resume()


def _fresh_simplenet() -> SimpleNet:
    torch.manual_seed(0)
    return SimpleNet(SimpleNetConfig(noise_std=0.1), image_size=32)


def _trainer(feats: torch.Tensor, cfg: TrainConfig, folder: Path) -> Trainer:
    """A trainer whose fingerprint is made as the pipeline makes it: from the whole train config."""
    fingerprint = run_fingerprint(data="d", train=cfg.to_dict())
    return Trainer(_fresh_simplenet(), feats, cfg, checkpoint_dir=folder, run_fingerprint=fingerprint)


def test_resume_with_more_epochs_extends_the_run_bit_for_bit(tmp_path: Path) -> None:
    feats = torch.randn(6, 16, 1536).half()
    three = TrainConfig(epochs=3, batch_size=2, seed=5)
    straight = _trainer(feats, three, tmp_path / "a")
    straight.fit()
    _trainer(feats, dataclasses.replace(three, epochs=2), tmp_path / "b").fit()  # a finished 2-epoch run
    extended = _trainer(feats, three, tmp_path / "b")
    assert extended.resume() and extended.start_epoch == 2
    history = extended.fit()
    assert [h.epoch for h in history] == [0, 1, 2]
    for a, b in zip(straight.model.state_dict().values(), extended.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the same length again: nothing left to train, the weights are the checkpoint's
    again = _trainer(feats, three, tmp_path / "b")
    assert again.resume() and again.start_epoch == 3
    again.fit()
    for a, b in zip(straight.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_fewer_epochs_real_changes_and_a_stretched_cosine(tmp_path: Path) -> None:
    feats = torch.randn(4, 4, 1536).half()
    cfg = TrainConfig(epochs=2, batch_size=2, seed=5)
    _trainer(feats, cfg, tmp_path / "run").fit()
    with pytest.raises(ValueError, match="already holds 2 epochs, more than --epochs 1"):
        _trainer(feats, dataclasses.replace(cfg, epochs=1), tmp_path / "run").resume()
    for change in ({"batch_size": 4}, {"seed": 6}, {"disc_lr": 1e-3}, {"epochs": 3, "adapter_lr": 1e-3}):
        with pytest.raises(ValueError, match="different data or settings"):
            _trainer(feats, dataclasses.replace(cfg, **change), tmp_path / "run").resume()

    cosine = TrainConfig(epochs=2, batch_size=2, seed=5, cosine_schedule=True)
    _trainer(feats, cosine, tmp_path / "cos").fit()
    with pytest.raises(ValueError, match="cosine schedule over 2 epochs"):
        _trainer(feats, dataclasses.replace(cosine, epochs=3), tmp_path / "cos").resume()
    assert _trainer(feats, cosine, tmp_path / "cos").resume()  # its own length still resumes


def test_train_bundle_resume_extends_a_kept_run(tiny_demo: Path, tmp_path: Path) -> None:
    """Through the pipeline: 1 epoch kept, resumed with --epochs 2, equals a straight 2-epoch bundle."""

    def train(out: Path, epochs: int, **kwargs: bool) -> dict:
        train_bundle(
            tiny_demo,
            out,
            backbone=BackboneSpec(random=True),
            preprocessing=Preprocessing(image_size=64, resize=72),
            train_cfg=TrainConfig(epochs=epochs, batch_size=4, seed=2),
            **kwargs,
        )
        return json.loads((out / "config.json").read_text())

    straight = train(tmp_path / "straight", 2)
    train(tmp_path / "ext", 1, keep_checkpoint=True)
    extended = train(tmp_path / "ext", 2, resume=True)
    assert extended["training"]["epochs"] == 2 and extended["training"]["final_epoch"]["epoch"] == 1
    assert extended["files"] == straight["files"]  # the weights' SHA-256
    assert extended["threshold"] == straight["threshold"]


def test_random_backbone_must_be_explicit(tiny_demo: Path, tmp_path: Path) -> None:
    # WideResNet50 (the config's default, the paper's) has no installed weights: no silent fallback to random ones
    with pytest.raises(ValueError, match="choose a backbone"):
        train_bundle(tiny_demo, tmp_path / "m", backbone=BackboneSpec(), train_cfg=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="exclude each other"):
        BackboneSpec(weights="x.pth", random=True)
    with pytest.raises(ValueError, match="only re-estimated for random weights"):
        BackboneSpec(recalibrate_bn=True)
    with pytest.raises(ValueError, match="not found"):
        train_bundle(
            tiny_demo,
            tmp_path / "m",
            backbone=BackboneSpec(weights=str(tmp_path / "nope.pth")),
            preprocessing=Preprocessing(image_size=64, resize=72),
            train_cfg=TrainConfig(epochs=1),
        )


def test_backbone_weights_file_is_loaded(tiny_demo: Path, tmp_path: Path) -> None:
    """A user's torchvision-format checkpoint (here: random, saved as .pth with layer4/fc extras) loads as is."""
    from edge_ad.models.backbones.wide_resnet import WideResNet50Trunk, state_dict_sha256

    torch.manual_seed(11)
    trunk = WideResNet50Trunk()
    state = dict(trunk.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)  # extra keys of a full classifier are ignored
    torch.save(state, tmp_path / "wrn.pth")
    out = train_bundle(
        tiny_demo,
        tmp_path / "m",
        backbone=BackboneSpec(weights=str(tmp_path / "wrn.pth")),
        preprocessing=Preprocessing(image_size=64, resize=72),
        train_cfg=TrainConfig(epochs=1),
    )
    info = read_bundle(out)
    assert info.backbone["sha256"] == state_dict_sha256(trunk)
    assert "batchnorm_recalibrated_on" not in info.backbone  # pretrained weights are never touched
    assert info.model["score_mode"] == "negative"  # the paper's score unless asked otherwise
