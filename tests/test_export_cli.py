"""`edge-ad export` end to end on CPU: ONNX written and usable by predict/eval; engine path without TensorRT."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.detector import Detector

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(private_bundle: Path) -> Path:
    result = runner.invoke(app, ["export", str(private_bundle), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return private_bundle / "model.fp32.onnx"


def test_onnx_scores_equal_torch_through_the_detector(exported: Path, private_bundle: Path, tiny_demo: Path) -> None:
    paths = sorted((tiny_demo / "test").glob("*/*.png"))
    torch_preds = Detector.load(private_bundle).predict(paths)
    onnx_preds = Detector.load(exported).predict(paths)
    a = np.array([p.image_score for p in torch_preds])
    b = np.array([p.image_score for p in onnx_preds])
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    maps_a = np.stack([p.anomaly_map for p in torch_preds])
    maps_b = np.stack([p.anomaly_map for p in onnx_preds])
    assert np.abs(maps_a - maps_b).max() <= 1e-4 * max(1.0, np.abs(maps_a).max())
    assert Detector.load(exported).threshold == pytest.approx(Detector.load(private_bundle).threshold)


def test_eval_with_onnxruntime(exported: Path, tiny_demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    result = runner.invoke(app, ["eval", str(exported), str(tiny_demo), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["backend"] == "onnxruntime"


def test_engine_dry_run_prints_trtexec(exported: Path) -> None:
    result = runner.invoke(app, ["export", str(exported), "--format", "engine", "--precision", "fp16", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "trtexec" in result.output and "--fp16" in result.output and "model.fp32.onnx" in result.output


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_engine_without_tensorrt_says_how_to_install(exported: Path) -> None:
    result = runner.invoke(app, ["export", str(exported), "--format", "engine"])
    assert result.exit_code == 2
    assert "TensorRT is not installed" in result.output


@pytest.mark.parametrize("where", ["export", "calibration"])
def test_a_failed_export_check_is_one_line_and_exit_1(
    where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A parity, op or quantization check that fails ends the command in one line, not a traceback."""
    import edge_ad.export.entry as entry
    from edge_ad.calibration.int8_writer import QuantizationError
    from edge_ad.export.onnx_trace import ExportError

    error = ExportError if where == "export" else QuantizationError

    def failing(*args: object, **kwargs: object) -> None:
        raise error("parity vs fp32 torch graph: max |map diff| 0.5 > allowed 0.01")

    monkeypatch.setattr(entry, "export", failing)
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "export failed, nothing written: parity vs fp32" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
