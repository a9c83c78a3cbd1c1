"""Shared fixtures: tiny demo datasets built in temp folders, quiet progress bars, no network."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("EDGE_AD_QUIET", "1")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: any attempt to connect outside loopback fails loudly."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and self.family != socket.AF_UNIX:
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small demo category (washer) in MVTec layout; returns its category folder."""
    from edge_ad.datasets.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    (folder,) = make_demo_dataset(
        root, ["washer"], seed=3, n_train=12, n_test_good=4, n_test_per_defect=2, image_size=96
    )
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SimpleNet bundle trained for two epochs on the tiny demo at 64x64 (random backbone)."""
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.simplenet.model import SimpleNetConfig
    from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
    from edge_ad.models.simplenet.trainer import TrainConfig

    out = tmp_path_factory.mktemp("bundle") / "washer"
    return train_bundle(
        tiny_demo,
        out,
        backbone=BackboneSpec(random=True),
        preprocessing=Preprocessing(image_size=64, resize=72),
        model_cfg=random_backbone_recipe(SimpleNetConfig()),
        train_cfg=TrainConfig(epochs=2, batch_size=4, seed=1),
    )


def _linked_copy(bundle: Path, out: Path) -> Path:
    """A bundle folder copied by hard links where possible: an export replaces its files, never edits them."""
    out.mkdir(parents=True)
    for item in bundle.iterdir():
        if item.is_file():
            try:
                os.link(item, out / item.name)
            except OSError:
                shutil.copy2(item, out / item.name)
    return out


@pytest.fixture(scope="module")
def private_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's own copy (hard links where possible) of the tiny bundle: exports land here, not in the shared one."""
    return _linked_copy(tiny_bundle, tmp_path_factory.mktemp("bundle_copy") / "washer")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module of small convolutions: on the shared 2-core build machine, two spinning
    threads per process slowed them ~100x whenever another job held a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_nsa_bundle(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NSA bundle (width 8) trained for two epochs on the tiny demo at 64x64."""
    import torch

    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.nsa.model import NsaConfig
    from edge_ad.models.nsa.trainer import NsaTrainConfig, train_nsa_bundle

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_nsa_bundle(
            tiny_demo,
            tmp_path_factory.mktemp("nsa") / "washer",
            preprocessing=Preprocessing(image_size=64, resize=72),
            model_cfg=NsaConfig(width=8),
            train_cfg=NsaTrainConfig(epochs=2, batch_size=4, seed=1),
        )
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def private_nsa_bundle(tiny_nsa_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's own copy of the tiny NSA bundle."""
    return _linked_copy(tiny_nsa_bundle, tmp_path_factory.mktemp("nsa_copy") / "washer")
