"""Importing a checkpoint written by the authors' code gives the authors' scores."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.detector import Detector
from edge_ad.import_simplenet import CheckpointError, import_checkpoint
from edge_ad.models.wide_resnet import WideResNet50Trunk
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


def test_imported_checkpoint_reproduces_the_authors_scores(tiny_demo: Path, tmp_path: Path) -> None:
    torch.manual_seed(7)
    trunk = WideResNet50Trunk().eval()
    torch.save(trunk.state_dict(), tmp_path / "wrn50.pth")
    proj, disc = authors_modules(8)
    ckpt = {"discriminator": disc.state_dict(), "pre_projection": proj.state_dict()}
    torch.save(ckpt, tmp_path / "ckpt.pth")

    out = import_checkpoint(
        tmp_path / "ckpt.pth",
        tmp_path / "wrn50.pth",
        tmp_path / "bundle",
        image_size=64,
        resize=72,
        good_images=tiny_demo / "train" / "good",
    )
    det = Detector.load(out)
    paths = sorted((tiny_demo / "test" / "crack").glob("*.png"))
    ours = np.array([p.image_score for p in det.predict(paths)])
    batch = torch.from_numpy(Preprocessing(image_size=64, resize=72).batch([read_image(p) for p in paths]))
    theirs = authors_scores(trunk, proj, disc, batch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.isfinite(det.threshold)


def test_rejects_files_that_are_not_simplenet_checkpoints(tmp_path: Path) -> None:
    torch.save({"model": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'discriminator'"):
        import_checkpoint(tmp_path / "other.pth", tmp_path / "w.pth", tmp_path / "b")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read"):
        import_checkpoint(tmp_path / "junk.pth", tmp_path / "w.pth", tmp_path / "b")
