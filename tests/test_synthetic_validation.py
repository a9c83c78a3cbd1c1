"""Synthetic-anomaly validation inside training: per-epoch AUROCs in the history, the bundle's description (rebuilt
to the same pixels), --select synthetic (argmax epoch, its weights, exact resume), skips, the on_epoch hook, CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.data.layout import train_images
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.nsa.model import NsaConfig, NsaModel
from edge_ad.models.nsa.trainer import (
    NsaTrainConfig,
    NsaTrainer,
    crop_transform,
    train_nsa_bundle,
    training_views,
)
from edge_ad.models.registry import load_model
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
from edge_ad.models.simplenet.trainer import TrainConfig, Trainer
from edge_ad.models.simplenet.validation import CachedLayerScorer
from edge_ad.runtimes.torch_runtime import TorchRuntime
from edge_ad.synthesis import NsaGenerator, params_for
from edge_ad.synthesis.validation import (
    ValidationScores,
    ValidationSet,
    build_validation_set,
    rebuild_validation_set,
    score_validation_set,
)
from edge_ad.training import epoch_validation
from edge_ad.training.epoch_validation import EpochValidation

PRE = Preprocessing(image_size=64, resize=72)
# A narrow SimpleNet (384-d features, 256 hidden): the same code paths, a fraction of the per-epoch graph folding.
NARROW = SimpleNetConfig(noise_std=0.1, pretrain_embed_dim=384, target_embed_dim=384, disc_hidden=256)
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def _choose_on_any_figures() -> Iterator[None]:
    """These tests are about how an epoch is chosen and kept; the tiny models' synthetic figures sit near chance, where
    the chance guard (tests/test_separation.py) keeps the final weights instead, so it is held open here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(epoch_validation, "separates", lambda *figures, **kw: True)
        yield


def _capture_sets() -> tuple[pytest.MonkeyPatch, list[ValidationSet]]:
    """Record every validation set a trainer builds (the pixels training used)."""
    built: list[ValidationSet] = []

    def recording(*args: Any, **kwargs: Any) -> ValidationSet:
        built.append(build_validation_set(*args, **kwargs))
        return built[-1]

    patch = pytest.MonkeyPatch()
    patch.setattr(epoch_validation, "build_validation_set", recording)
    return patch, built


def _hook(calls: list[tuple[int, tuple, tuple]]) -> Any:
    def on_epoch(epoch: int, predict: Any) -> None:
        scores, maps = predict(np.zeros((2, 3, 64, 64), np.float32))
        calls.append((epoch, scores.shape, maps.shape))

    return on_epoch


@pytest.fixture(scope="module")
def sn_run(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """SimpleNet, 3 epochs, --select synthetic, checkpoint kept (its best weights are compared with the bundle's)."""
    patch, built = _capture_sets()
    calls: list[tuple[int, tuple, tuple]] = []
    out = tmp_path_factory.mktemp("sv") / "washer"
    try:
        train_bundle(
            tiny_demo,
            out,
            backbone=BackboneSpec(random=True),
            preprocessing=PRE,
            model_cfg=random_backbone_recipe(dataclasses.replace(NARROW)),
            train_cfg=TrainConfig(epochs=3, batch_size=4, seed=2, select="synthetic"),
            keep_checkpoint=True,
            on_epoch=_hook(calls),
        )
    finally:
        patch.undo()
    return {"out": out, "vset": built[0], "calls": calls}


@pytest.fixture(scope="module")
def nsa_run(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    patch, built = _capture_sets()
    calls: list[tuple[int, tuple, tuple]] = []
    out = tmp_path_factory.mktemp("nv") / "washer"
    try:
        train_nsa_bundle(
            tiny_demo,
            out,
            preprocessing=PRE,
            model_cfg=NsaConfig(width=8),
            train_cfg=NsaTrainConfig(epochs=3, batch_size=4, seed=1),
            on_epoch=_hook(calls),
        )
    finally:
        patch.undo()
    return {"out": out, "vset": built[0], "calls": calls}


def _training(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads((run["out"] / "config.json").read_text())["training"]


@pytest.mark.parametrize("family", ["sn_run", "nsa_run"])
def test_history_description_and_rebuilt_set(family: str, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(family)
    training = _training(run)
    history = training["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    for h in history:
        assert 0 <= h["synthetic_image_auroc"] <= 1 and 0 <= h["synthetic_pixel_auroc"] <= 1, h
    desc = training["synthetic_validation"]
    assert desc["status"] == "ok" and desc["kind"] == "nsa-synthetic"
    assert desc["seed"] == training["seed"] + epoch_validation.VALIDATION_SEED_OFFSET and desc["per_image"] == 3
    assert desc["images"] == training["holdout_images"] and desc["n_good"] == 2 and desc["n_anomalous"] == 6
    rebuilt = rebuild_validation_set(desc, desc["good_dir"], PRE.geometry)
    used = run["vset"]
    assert np.array_equal(rebuilt.images, used.images) and np.array_equal(rebuilt.masks, used.masks)
    assert np.array_equal(rebuilt.labels, used.labels) and rebuilt.names == used.names
    assert run["calls"] == [(e, (2,), (2, 64, 64)) for e in (1, 2, 3)]  # on_epoch: once per epoch, working predict


@pytest.mark.parametrize("family", ["sn_run", "nsa_run"])
def test_kept_weights_score_as_recorded(family: str, request: pytest.FixtureRequest) -> None:
    """The bundle's model on the rebuilt set gives the figures its selected epoch recorded (SimpleNet: recorded
    from cached float16 backbone maps, so within a tolerance; NSA: the same graph, so equal)."""
    run = request.getfixturevalue(family)
    training = _training(run)
    model, _ = load_model(run["out"])
    scores = score_validation_set(TorchRuntime(model).predict, run["vset"], PRE.normalize)
    recorded = training["history"][training["selected_epoch"] - 1]
    tol = 0.05 if family == "sn_run" else 1e-9
    assert scores.image_auroc == pytest.approx(recorded["synthetic_image_auroc"], abs=tol)
    assert scores.pixel_auroc == pytest.approx(recorded["synthetic_pixel_auroc"], abs=tol)


def test_select_synthetic_keeps_the_argmax_epoch(sn_run: dict[str, Any]) -> None:
    training = _training(sn_run)
    means = [(h["synthetic_image_auroc"] + h["synthetic_pixel_auroc"]) / 2 for h in training["history"]]
    best = max(i for i, m in enumerate(means) if m == max(means))  # ties: the later epoch
    assert training["select"] == "synthetic" and training["selected_epoch"] == best + 1
    assert training["selection"].startswith(f"epoch {best + 1} of 3: best mean synthetic AUROC")
    state = torch.load(sn_run["out"] / ".training" / "checkpoint.pt", weights_only=True)
    assert state["selection"]["epoch"] == best
    saved = load_file(str(sn_run["out"] / "model.safetensors"))
    for key, value in state["selection"]["weights"].items():
        assert torch.equal(saved[key], value), key


def test_final_selection_and_cached_scorer_equals_the_graph(nsa_run: dict[str, Any], tiny_demo: Path) -> None:
    assert _training(nsa_run)["selection"].startswith("final weights")
    assert _training(nsa_run)["selected_epoch"] == 3
    torch.manual_seed(0)
    model = SimpleNet(NARROW, image_size=64).eval()
    vset = nsa_run["vset"]
    cached = CachedLayerScorer(model, vset, PRE.normalize).outputs()
    x = np.stack([PRE.normalize(im) for im in vset.images])
    full = TorchRuntime(model).predict(x)
    for got, ref in zip(cached, full, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-2 * float(np.abs(ref).max()))


# -- selection and resume at trainer level (fast: cached random features, tiny NSA) ------------------------------


def _vset(tiny_demo: Path) -> ValidationSet:
    images = [PRE.geometry(read_image(p)) for p in train_images(tiny_demo)[:2]]
    return build_validation_set(images, ["a.png", "b.png"], params_for("washer"), seed=9, per_image=3)


def _snapshots(model: torch.nn.Module, into: list[dict[str, torch.Tensor]], stop_at: int | None = None) -> Any:
    def on_epoch(epoch: int, predict: Any) -> None:
        assert not model.training  # eval mode during the call
        into.append({k: v.clone() for k, v in model.state_dict().items()})
        if epoch == stop_at:
            raise KeyboardInterrupt  # "killed" before this epoch's checkpoint
    return on_epoch


def _sn_trainer(vset: ValidationSet, select: str, folder: Path | None, hook: Any = None) -> Trainer:
    torch.manual_seed(0)
    model = SimpleNet(NARROW, image_size=64)
    feats = torch.randn(6, 64, 384, generator=torch.Generator().manual_seed(3)).half()
    cfg = TrainConfig(epochs=3, batch_size=2, seed=5, select=select)
    validation = EpochValidation(vset, select=select, on_epoch=None if hook is None else hook(model))
    return Trainer(
        model, feats, cfg, checkpoint_dir=folder, run_fingerprint="x", validation=validation, normalize=PRE.normalize
    )


def _nsa_trainer(tiny_demo: Path, vset: ValidationSet, select: str, folder: Path | None, hook: Any = None) -> Any:
    images = [read_image(p) for p in train_images(tiny_demo)[2:8]]
    cfg = NsaTrainConfig(epochs=3, batch_size=3, seed=4, select=select)
    jitter = round(cfg.crop_jitter * PRE.image_size)
    views = training_views(images, PRE, jitter)
    gen = NsaGenerator(views, params_for("washer"), cfg.label, transform=crop_transform(64, jitter, False))
    torch.manual_seed(4)
    model = NsaModel(NsaConfig(width=8), image_size=64)
    validation = EpochValidation(vset, select=select, on_epoch=None if hook is None else hook(model))
    return NsaTrainer(model, gen, PRE, cfg, checkpoint_dir=folder, run_fingerprint="run", validation=validation)


@pytest.mark.parametrize("family", ["simplenet", "nsa"])
def test_select_synthetic_and_resume_after_a_kill(family: str, tiny_demo: Path, tmp_path: Path) -> None:
    vset = _vset(tiny_demo)

    def make(select: str, folder: Path | None, hook: Any = None) -> Any:
        if family == "simplenet":
            return _sn_trainer(vset, select, folder, hook)
        return _nsa_trainer(tiny_demo, vset, select, folder, hook)

    snaps: list[dict[str, torch.Tensor]] = []
    final = make("final", None, lambda m: _snapshots(m, snaps))
    final.fit()
    chosen = make("synthetic", tmp_path / "whole")
    chosen.fit()
    figures = [(h.synthetic_image_auroc, h.synthetic_pixel_auroc) for h in chosen.history]
    assert figures == [(h.synthetic_image_auroc, h.synthetic_pixel_auroc) for h in final.history]
    means = [(i + p) / 2 for i, p in figures]
    best = max(i for i, m in enumerate(means) if m == max(means))
    assert chosen.validation.best["epoch"] == best
    kept = chosen.model.state_dict()
    for key, value in snaps[best].items():  # the kept weights are that epoch's ...
        assert torch.equal(kept[key], value), key
    if best != len(means) - 1:  # ... and not the final ones
        assert any(not torch.equal(kept[k], v) for k, v in final.model.state_dict().items())

    killed = make("synthetic", tmp_path / "killed", lambda m: _snapshots(m, [], stop_at=2))
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = make("synthetic", tmp_path / "killed")
    assert resumed.resume() and resumed.start_epoch == 1
    resumed.fit()
    assert resumed.validation.best["epoch"] == best
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(kept[key], value), key


def test_best_epoch_rule_nan_and_ties() -> None:
    vset = ValidationSet(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((2, 4, 4), np.uint8), np.array([0, 1]), ["a", "b"])
    model = torch.nn.Linear(1, 1)
    sequence = iter([(0.5, 0.5), (0.9, float("nan")), (0.7, 0.7), (0.8, 0.6), (0.6, 0.6)])
    validation = EpochValidation(vset, select="synthetic", every=1)
    recorded = []
    for epoch in range(5):
        image, pixel = next(sequence)
        with torch.no_grad():
            model.weight.fill_(epoch)
        recorded.append(
            validation.after_epoch(
                epoch,
                model,
                lambda _v, i=image, p=pixel: ValidationScores(i, p, np.zeros(2)),
                lambda: None,  # type: ignore[arg-type, return-value]
                model.state_dict,
            )
        )
    assert recorded[1] == {"synthetic_image_auroc": 0.9, "synthetic_pixel_auroc": None}  # NaN -> None
    assert validation.best is not None and validation.best["epoch"] == 3  # 0.7 ties epoch 2: the later one
    assert validation.selected_weights()["weight"].item() == 3  # type: ignore[index]
    assert model.training  # mode given back
    every = EpochValidation(vset, every=2)
    assert [every.due(e) for e in range(4)] == [False, True, False, True]


# -- skips and the CLI -------------------------------------------------------------------------------------------


def _nsa_bundle(tiny_demo: Path, out: Path, **cfg: Any) -> dict[str, Any]:
    train_cfg = NsaTrainConfig(**{"epochs": 1, "batch_size": 4, "seed": 1, **cfg})
    train_nsa_bundle(tiny_demo, out, preprocessing=PRE, model_cfg=NsaConfig(width=8), train_cfg=train_cfg)
    return json.loads((out / "config.json").read_text())["training"]


def test_skipped_validation_says_why(tiny_demo: Path, tmp_path: Path) -> None:
    one = _nsa_bundle(tiny_demo, tmp_path / "one", min_holdout=1, holdout_fraction=0.05)
    assert len(one["holdout_images"]) == 1
    assert one["synthetic_validation"]["status"].startswith("skipped: 1 held-out good image")
    assert one["history"][0]["synthetic_image_auroc"] is None
    off = _nsa_bundle(tiny_demo, tmp_path / "off", synthetic_per_image=0)
    assert off["synthetic_validation"] == {"status": "skipped: turned off (synthetic_per_image 0)"}
    with pytest.raises(ValueError, match="--select synthetic needs the synthetic validation set, but it was skipped"):
        _nsa_bundle(tiny_demo, tmp_path / "x", min_holdout=1, holdout_fraction=0.05, select="synthetic")
    with pytest.raises(ValueError, match="--synthetic-per-image must be >= 1"):
        dataclasses.replace(TrainConfig(), select="synthetic", synthetic_per_image=0)


def test_cli_select_and_per_image(tiny_demo: Path, tmp_path: Path) -> None:
    base = ["train", str(tiny_demo), "--out", str(tmp_path / "m"), "--image-size", "64", "--resize", "72"]
    for extra, expected in (
        (["--random-backbone", "--select", "best"], "--select must be one of final, synthetic"),
        (["--model", "nsa", "--synthetic-per-image", "-1"], "--synthetic-per-image must be an integer >= 0"),
        (["--model", "nsa", "--select", "synthetic", "--synthetic-per-image", "0"], "needs synthetic validation"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, (extra, result.output)
        assert expected in result.output and "Traceback" not in result.output
    nsa = ["--model", "nsa", "--preset", "cpu-demo", "--epochs", "2", "--batch-size", "4"]
    result = runner.invoke(app, [*base, *nsa, "--select", "synthetic", "--synthetic-per-image", "2"])
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "m" / "config.json").read_text())["training"]
    assert training["select"] == "synthetic" and training["synthetic_validation"]["n_anomalous"] == 4
    assert training["selection"].startswith(f"epoch {training['selected_epoch']} of 2")
