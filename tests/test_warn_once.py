"""The threshold-on-few-images warning is said once per command, and the demo's own data gives its threshold enough
held-out good images that it has nothing to warn about."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge_ad.bundle import MIN_THRESHOLD_IMAGES, read_bundle, threshold_warning, warn_threshold, warnings_once
from edge_ad.cli import demo as quickstart
from edge_ad.cli.main import app
from edge_ad.training.checkpoints import split_holdout

FEW = {"threshold_source": "holdout", "image": {"good_count": 3}}


def test_within_a_command_each_warning_is_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings_once():
        for where in ("bundle", "bundle/model.fp32.onnx", "bundle"):
            assert warn_threshold(0.5, FEW, where)
    assert capsys.readouterr().err.count("rests on only 3 held-out") == 1
    warn_threshold(0.5, FEW, "a")  # outside a command (the Python API): said each time it applies
    warn_threshold(0.5, FEW, "b")
    assert capsys.readouterr().err.count("rests on only 3 held-out") == 2


def test_bench_of_two_runtimes_warns_once(private_bundle: Path, tmp_path: Path) -> None:
    from edge_ad.export.onnx_export import export_onnx

    export_onnx(private_bundle, verify=False)
    count = read_bundle(private_bundle).score_stats["image"]["good_count"]
    assert count < MIN_THRESHOLD_IMAGES
    out = tmp_path / "bench.json"
    args = ["bench", str(private_bundle), "--backend", "torch,onnxruntime", "--batch", "1", "--iters", "1",
            "--warmup", "0", "--no-reference", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["rows"]) == 2
    assert " ".join(result.output.split()).count(f"rests on only {count} held-out") == 1


def test_the_demo_holds_out_enough_good_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def dataset(root: Path, categories: list[str], *, seed: int, n_train: int = 60) -> list[Path]:
        seen["n_train"] = n_train
        return [Path(root) / categories[0]]

    def train(data: Path, bundle: Path, **kwargs: Any) -> Path:
        seen["train_cfg"] = kwargs["train_cfg"]
        return bundle

    monkeypatch.setattr(quickstart, "make_demo_dataset", dataset)
    monkeypatch.setattr("edge_ad.models.simplenet.pipeline.train_bundle", train)
    monkeypatch.setattr("edge_ad.models.nsa.trainer.train_nsa_bundle", train)
    monkeypatch.setattr("edge_ad.evaluation.evaluate.evaluate_model", lambda *a, **k: {"metrics": {}})
    monkeypatch.setattr(quickstart, "atomic_write_json", lambda *a: None)
    for family in ("simplenet", "nsa"):
        quickstart.run_demo(tmp_path / family, model=family)
        train_idx, hold_idx = split_holdout(seen["n_train"], seen["train_cfg"])
        assert len(hold_idx) >= MIN_THRESHOLD_IMAGES, family
        assert len(train_idx) == 54, family  # as many training images as the demo always had
        stats = {"threshold_source": "holdout", "image": {"good_count": len(hold_idx)}}
        assert threshold_warning(0.5, stats) is None
