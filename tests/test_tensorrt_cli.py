"""`edge-ad export --format engine` on the fake TensorRT and fake pycuda: one-line refusals, the trtexec line,
the build, its verification against onnxruntime, and adopting a trtexec-built engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_ad.cli.main import app
from edge_ad.export import tensorrt_builder as tb
from edge_ad.runtimes import tensorrt_runtime as tr
from tests import fake_pycuda
from tests.fake_tensorrt import make_tensorrt, tiny_edge_onnx

runner = CliRunner()
GPU = {"name": "FakeGPU", "compute_capability": "8.7", "source": "test"}


def engine_cli(*args: str):
    return runner.invoke(app, ["export", *args])


def assert_one_line_error(result, match: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and match in result.output.replace("\n", " ")


def test_text_truncated_and_foreign_onnx_are_one_line_errors(tmp_path: Path) -> None:
    """Issue 9 point 7: no DecodeError traceback, and no trtexec line for an ONNX without edge-ad's metadata."""
    text = tmp_path / "notes.onnx"
    text.write_text("hello, I am a text file\n")
    good = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:300])
    for path in (text, cut):
        assert_one_line_error(engine_cli(str(path), "--format", "engine", "--dry-run"), "not a readable ONNX")
    bare = tiny_edge_onnx(tmp_path / "bare.onnx", "fp32", metadata={"family": None, "score_stats": None})
    assert_one_line_error(engine_cli(str(bare), "--format", "engine", "--dry-run"), "lacks edge-ad metadata")


def test_precision_mismatch_is_refused(tmp_path: Path) -> None:
    """Issue 9 point 12: --precision int8 on an fp16 ONNX no longer prints a line without a precision flag."""
    fp16 = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16")
    result = engine_cli(str(fp16), "--format", "engine", "--precision", "int8", "--dry-run")
    assert_one_line_error(result, "this ONNX is fp16; it cannot be built as a int8 engine")


def test_int8_dynamic_batch_on_a_static_onnx_is_refused(tmp_path: Path) -> None:
    """Defect 11: `--precision int8 --dynamic-batch` says the engine would be static instead of building it."""
    int8 = tiny_edge_onnx(tmp_path / "model.int8.onnx", "int8", batch=1)
    result = engine_cli(str(int8), "--format", "engine", "--precision", "int8", "--dynamic-batch", "--dry-run")
    assert_one_line_error(result, "static batch of 1")


def test_dry_run_on_a_static_onnx_prints_no_shapes_and_the_adopt_step(tmp_path: Path) -> None:
    """Defect 2: trtexec refuses shape flags on a static model; the line is followed by how to adopt its engine."""
    onnx = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch=1)
    result = engine_cli(str(onnx), "--format", "engine", "--precision", "fp16", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Shapes" not in result.output and "--fp16" in result.output and "model.fp16.engine" in result.output
    assert "--from-trtexec" in result.output


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt())
    monkeypatch.setattr(tb, "gpu_identity", lambda: dict(GPU))
    monkeypatch.setattr(tr, "gpu_identity", lambda: dict(GPU))
    monkeypatch.setattr(tr, "is_jetson", lambda: True)  # pycuda buffers (the fake) first
    fake_pycuda.install(monkeypatch)


def test_build_ends_with_a_verification_against_onnxruntime(fake_gpu, tmp_path: Path) -> None:
    """Verified engines + fast runtime: the build runs the engine, records differences and layer precisions."""
    onnx = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch="batch")
    result = engine_cli(
        str(onnx), "--format", "engine", "--precision", "fp16", "--max-batch", "4", "--verify-count", "3"
    )
    assert result.exit_code == 0, result.output
    assert "model.fp16.engine" in result.output and "verified against onnxruntime" in result.output
    sidecar = json.loads((tmp_path / "model.fp16.json").read_text())
    assert sidecar["batch"] == [1, 1, 4] and sidecar["verification"]["within_tolerance"]
    assert sidecar["layers"]["by_precision"]["fp32"] >= 4 and sidecar["typing"] == "weak-fp16"


def test_from_trtexec_adopts_an_engine_without_sidecar(fake_gpu, tmp_path: Path) -> None:
    """Defect 2: the engine trtexec built becomes loadable through --from-trtexec."""
    onnx = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16", batch=2)
    built = tb.build_engine(onnx, options=tb.BuildOptions("fp16"))
    trtexec_engine = tmp_path / "from_trtexec.engine"
    trtexec_engine.write_bytes(built.read_bytes())  # what trtexec leaves: an engine, no sidecar
    with pytest.raises(ValueError, match="--from-trtexec"):
        tr.TensorRTRuntime(trtexec_engine)
    result = engine_cli(str(onnx), "--format", "engine", "--precision", "fp16", "--from-trtexec", str(trtexec_engine))
    assert result.exit_code == 0, result.output
    rt = tr.TensorRTRuntime(trtexec_engine)
    assert rt.batch_range == (2, 2, 2) and rt.sidecar["built_by"] == "trtexec"
    rt.close()
