"""The edge-ad command end to end on a tiny demo set: demo-data, train, eval, predict, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_ad.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_bundle(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    args = [
        "train",
        str(tiny_demo),
        "--out",
        str(out),
        "--random-backbone",
        "--image-size",
        "64",
        "--resize",
        "72",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_demo_data_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo-data", str(tmp_path), "--category", "woven_fabric", "--n-train", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "woven_fabric" / "train" / "good").glob("*.png"))) == 2


def test_train_requires_a_backbone_choice(tiny_demo: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(tiny_demo), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "choose a backbone" in result.output


def test_eval_writes_metrics(cli_bundle: Path, tiny_demo: Path) -> None:
    result = runner.invoke(app, ["eval", str(cli_bundle), str(tiny_demo)])
    assert result.exit_code == 0, result.output
    report = json.loads((cli_bundle / "eval.json").read_text())
    overall = report["metrics"]["overall"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"):
        assert 0.0 <= overall[key] <= 1.0
    assert {"crack", "missing_piece", "rust"} <= set(report["metrics"])


def test_predict_reports_bad_files_and_goes_on(cli_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for src in sorted((tiny_demo / "test" / "crack").glob("*.png"))[:2]:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(cli_bundle), str(folder), "--out", str(out)])
    assert result.exit_code == 1  # some inputs failed
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3
    bad = [r for r in records if "error" in r]
    assert len(bad) == 1 and "broken.png" in bad[0]["error"]
    for r in records:
        if "error" not in r:
            assert r["verdict"] in ("good", "anomalous") and Path(r["overlay"]).is_file()


def test_eval_on_a_folder_that_is_not_a_bundle(tmp_path: Path, tiny_demo: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path), str(tiny_demo)])
    assert result.exit_code == 2
    assert "no config.json" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "edge-ad" in result.output
