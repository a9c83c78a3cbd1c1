"""``edge-ad bench`` says what ran: a bare .onnx is onnxruntime at its own precision, contradictions and unknown
backends are refused in one line with no report, a backend this machine cannot run is "not available here", never a
result, and ``--data`` with only ``test/`` is enough."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_ad.bench.plan import bench_images, resolve_options, unavailable_reason
from edge_ad.cli.main import app

FAST = ["--batch", "1", "--iters", "1", "--warmup", "0", "--no-reference"]
NO_TRT_HERE = importlib.util.find_spec("tensorrt") is None


@pytest.fixture(scope="module")
def fp16_onnx(private_bundle: Path) -> Path:
    from edge_ad.export.onnx_export import export_onnx

    return Path(export_onnx(private_bundle, precision="fp16", verify=False))


def _one_line_error(result: object) -> str:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    lines = [line for line in result.output.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) <= 2 and lines[0].startswith("error:"), result.output  # type: ignore[attr-defined]
    return " ".join(result.output.split())  # type: ignore[attr-defined]


def test_bare_fp16_onnx_row_is_onnxruntime_fp16_on_that_file(fp16_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(fp16_onnx), *FAST, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["backend"], row["precision"], row["artifact"]) == ("onnxruntime", "fp16", str(fp16_onnx))
    assert "torch" not in result.output.split("report:")[0].replace("torch-free", "")
    assert "model.fp16.onnx" in result.output and "onnxruntime" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backend", "torch"], "run by onnxruntime, not torch"),
        (["--backend", "tensorrt"], "run by onnxruntime, not tensorrt"),
        (["--precision", "fp32"], "holds a fp16 model"),
    ],
)
def test_options_that_contradict_the_file_are_refused(fp16_onnx: Path, tmp_path: Path, args: list, says: str) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(fp16_onnx), *FAST, *args, "--json", str(out)])
    assert says in _one_line_error(result)
    assert not out.exists()


def test_unknown_backend_exits_2_and_writes_no_report(private_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", str(private_bundle), "--backend", "tensorflow", *FAST, "--json", str(out)]
    result = CliRunner().invoke(app, args)
    text = _one_line_error(result)
    assert "unknown --backend 'tensorflow'" in text and "onnxruntime" in text
    assert not out.exists() and not (private_bundle / "bench-cpu.json").exists()


@pytest.mark.skipif(not NO_TRT_HERE, reason="TensorRT is installed here")
def test_backend_this_machine_cannot_run_is_not_available_not_an_error(private_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", str(private_bundle), "--backend", "torch,tensorrt", *FAST, "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["backend"] for r in report["rows"]] == ["torch"] and report["rows"][0]["error"] is None
    assert report["rows"][0]["artifact"].endswith(".safetensors")
    (skipped,) = report["not_available"]
    assert skipped["backend"] == "tensorrt" and "TensorRT is not installed" in skipped["reason"]
    text = " ".join(result.output.split())
    assert "not available here: tensorrt fp32: TensorRT is not installed" in text and "error" not in text


def test_missing_export_is_not_available_with_the_command_that_makes_it(private_bundle: Path) -> None:
    reason = unavailable_reason(private_bundle, "onnxruntime", "int8", "cpu")
    assert reason is not None and "no model.int8.onnx" in reason and "edge-ad export" in reason
    assert "Q/DQ ONNX" in (unavailable_reason(private_bundle, "torch", "int8", "cpu") or "")
    assert unavailable_reason(private_bundle, "torch", "fp32", "cpu") is None


def test_resolve_options_defaults_and_refusals(private_bundle: Path, fp16_onnx: Path) -> None:
    assert resolve_options(private_bundle, None, None) == (["torch"], ["fp32"])
    everything = (["torch", "onnxruntime", "tensorrt"], ["fp32", "fp16"])
    assert resolve_options(private_bundle, "all", "fp32,fp16") == everything
    assert resolve_options(fp16_onnx, None, None, metadata={"precision": "fp16"}) == (["onnxruntime"], ["fp16"])
    assert resolve_options(fp16_onnx, "onnxruntime", "fp16") == (["onnxruntime"], ["fp16"])  # from the name
    with pytest.raises(ValueError, match="unknown --precision 'fp8'"):
        resolve_options(private_bundle, None, "fp8")
    with pytest.raises(ValueError, match="int8 exists only as a Q/DQ ONNX"):
        resolve_options(private_bundle, "torch", "int8")
    with pytest.raises(ValueError, match="needs --device cuda"):
        resolve_options(private_bundle, None, None, postprocess=["cuda"])


def test_data_with_only_a_test_folder(private_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    data = tmp_path / "only-test"
    shutil.copytree(tiny_demo / "test", data / "test")
    shutil.copytree(tiny_demo / "ground_truth", data / "ground_truth")  # no train/: bench scores test images only
    assert bench_images(data) == sorted((data / "test" / "good").glob("*.png"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", str(private_bundle), "--data", str(data), *FAST, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["error"] is None and 0.0 <= row["metrics"]["image_auroc"] <= 1.0
