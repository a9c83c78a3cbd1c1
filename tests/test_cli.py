"""The edge-ad command end to end on a tiny demo set: demo-data, train, eval, predict, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_ad.cli.main import app

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
    """The paper's WideResNet50 has no installed weights: a file, a download or --random-backbone must be named
    (the default backbone, EfficientNet-Lite0, brings its ImageNet weights from the package index)."""
    args = ["train", str(tiny_demo), "--out", str(tmp_path / "m"), "--backbone", "wide_resnet50_2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "choose a backbone" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [*args, "--random-backbone", "--backbone-weights", "x.pth"])
    assert result.exit_code == 2 and "exclude each other" in result.output
    result = runner.invoke(app, [*args[:-1], "efficientnet_lite0", "--layers", "layer2,layer3"])
    assert result.exit_code == 2 and "no feature level 'layer2'" in result.output


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
    (run,) = out.glob("run-*")
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
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


def _records_line(output: str) -> Path:
    (line,) = [ln for ln in output.splitlines() if ln.startswith("records: ")]
    return Path(line.removeprefix("records: ").strip())


def test_each_predict_run_owns_its_folder(cli_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    crack = sorted((tiny_demo / "test" / "crack").glob("*.png"))
    good = sorted((tiny_demo / "test" / "good").glob("*.png"))
    out = tmp_path / "pred"
    first = runner.invoke(app, ["predict", str(cli_bundle), *map(str, crack[:2]), "--out", str(out)])
    second = runner.invoke(app, ["predict", str(cli_bundle), str(good[0]), "--out", str(out)])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    runs = sorted(out.glob("run-*"))
    assert len(runs) == 2 and [_records_line(first.output), _records_line(second.output)] == [
        r / "predictions.jsonl" for r in runs
    ]
    for run, sources in zip(runs, (crack[:2], good[:1]), strict=True):
        records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
        assert [r["source"] for r in records] == [str(s) for s in sources]
        assert sorted(p.name for p in run.glob("*.png")) == sorted(Path(r["overlay"]).name for r in records)
        assert all(Path(r["overlay"]).parent == run for r in records)


def test_predict_on_a_folder_without_images_says_so(cli_bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    result = runner.invoke(app, ["predict", str(cli_bundle), str(empty), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 2
    assert "no images in folder" in result.output and "empty" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "pred").exists()


def test_predict_reports_folders_and_rejected_frames(cli_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    folder = tmp_path / "inputs"
    folder.mkdir()
    src = sorted((tiny_demo / "test" / "good").glob("*.png"))[0]
    (folder / "a.png").write_bytes(src.read_bytes())
    (folder / "folder.png").mkdir()
    assert cv2.imwrite(str(folder / "black.png"), np.zeros((256, 256, 3), np.uint8))
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", str(cli_bundle), str(folder), "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = _records_line(result.output).read_text().splitlines()
    records = {Path(r["source"]).name: r for r in map(json.loads, lines)}
    assert set(records) == {"a.png", "black.png", "folder.png"}
    assert records["a.png"]["verdict"] in ("good", "anomalous")
    assert "verdict" not in records["black.png"] and records["black.png"]["rejected"] is True
    assert "blank or flat frame" in records["black.png"]["error"]
    assert "is a folder" in records["folder.png"]["error"] and "verdict" not in records["folder.png"]


def test_a_blank_training_image_is_named(tiny_demo: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    data = tmp_path / "good"
    data.mkdir()
    for src in sorted((tiny_demo / "train" / "good").glob("*.png"))[:4]:
        (data / src.name).write_bytes(src.read_bytes())
    assert cv2.imwrite(str(data / "zz_dead.png"), np.zeros((96, 96, 3), np.uint8))
    args = ["train", str(data), "--out", str(tmp_path / "m"), "--random-backbone", "--image-size", "64"]
    result = runner.invoke(app, [*args, "--resize", "72", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "zz_dead.png: blank or flat frame" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_train_refuses_zero_or_negative_epochs_before_writing(tiny_demo: Path, tmp_path: Path, epochs: str) -> None:
    out = tmp_path / "bundle"
    args = ["train", str(tiny_demo), "--out", str(out), "--random-backbone", "--epochs", epochs, "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"--epochs must be at least 1, got {epochs}" in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not out.exists()


def test_help_shows_plain_metavars_not_python_types() -> None:
    """Usage reads ``MODEL IMAGES...``; options show PATH/TEXT/INTEGER, flags nothing; no ``<bool>``, no ``{model}``."""
    import re

    from typer.main import get_command

    runner = CliRunner()
    for name in ["", *get_command(app).commands]:  # type: ignore[attr-defined]
        result = runner.invoke(app, [name, "--help"] if name else ["--help"], terminal_width=200)
        assert result.exit_code == 0, (name, result.output)
        assert not re.search(r"<(bool|str|int|float|path|list\[[^]]*\])>", result.output), (name, result.output)
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage
    predict = runner.invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "predict [OPTIONS] MODEL IMAGES..." in predict
    assert re.search(r"--out\s+-o\s+PATH", predict) and re.search(r"--overlays\s+--no-overlays\s+Write", predict)
