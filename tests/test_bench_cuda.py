"""``edge-ad bench --device cuda`` without a GPU: the torch-import rule, per-row device memory, --postprocess.

A fake runtime stands in for onnxruntime/TensorRT on a Jetson and a fake device stands in for
``cudaMemGetInfo``: it holds what the runtime has allocated (weights, per-shape buffers kept like TensorRT's,
a transient workspace during ``predict``) and frees it when the runtime is released.
"""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.bench import run as bench
from edge_ad.cli.main import app
from tests.layering import assert_runs_without

MIB = 2**20


def _artifact(tmp_path: Path) -> Path:
    target = tmp_path / "model.fp32.onnx"  # a file target: no bundle, so no reference (torch) rows
    target.write_bytes(b"not read by the fake runtime")
    return target


def test_bench_on_cuda_does_not_import_torch_for_other_backends(tmp_path: Path) -> None:
    code = f"""
import numpy as np
from edge_ad.bench.run import run_bench

class Jetson:
    name = "tensorrt"
    image_size = 224
    def predict(self, batch):
        return np.zeros(len(batch), np.float32), np.zeros((len(batch), 224, 224), np.float32)

report = run_bench({str(_artifact(tmp_path))!r}, backends=["tensorrt", "onnxruntime"], device="cuda", batches=[1, 2],
                   warmup=0, iters=1, runtime_factory=lambda *a, **k: Jetson())
rows = report["rows"]
assert [r["batch"] for r in rows] == [1, 2, 1, 2], rows
assert all(r["error"] is None and r["latency"]["p50_ms"] > 0 for r in rows), rows
assert report["machine"]["torch"] is not None  # the version is read from metadata, not by importing torch
"""
    assert_runs_without(code, ["torch"])


class FakeDevice:
    """Used device memory as cudaMemGetInfo would report it (total - free), in bytes."""

    def __init__(self) -> None:
        self.used = 300 * MIB  # the CUDA context and whatever else was there before the bench

    def alloc(self, owner: object, nbytes: int) -> None:
        self.used += nbytes
        weakref.finalize(owner, self.free, nbytes)

    def free(self, nbytes: int) -> None:
        self.used -= nbytes


class _Block:
    pass


class FakeEngineRuntime:
    name = "tensorrt"
    image_size = 224
    weights_mib = {"fp32": 100, "fp16": 50}

    def __init__(self, device: FakeDevice, precision: str) -> None:
        self.device = device
        self.blocks: dict[int, _Block] = {}
        self.weights = _Block()
        device.alloc(self.weights, self.weights_mib[precision] * MIB)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        if n not in self.blocks:  # buffers allocated once per shape and kept, as the TensorRT runtime does
            self.blocks[n] = _Block()
            self.device.alloc(self.blocks[n], n * MIB)
        workspace = _Block()
        self.device.alloc(workspace, 40 * MIB)
        time.sleep(0.06)  # long enough for the sampler (every 2 ms) to see the workspace
        del workspace
        return np.zeros(n, np.float32), np.zeros((n, 224, 224), np.float32)


def test_peak_device_memory_per_row_for_any_backend_and_reset_between_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = FakeDevice()
    monkeypatch.setattr(bench, "device_memory_used", lambda: device.used)
    report = bench.run_bench(
        _artifact(tmp_path),
        backends=["tensorrt"],
        precisions=["fp32", "fp16"],
        device="cuda",
        batches=[1, 4],
        warmup=0,
        iters=1,
        runtime_factory=lambda target, backend, precision, dev: FakeEngineRuntime(device, precision),
    )
    peaks = [(r["precision"], r["batch"], r["peak_device_mib"]) for r in report["rows"]]
    # weights + buffers held so far + the workspace; the fp16 runtime starts from the memory before it was made
    assert peaks == [("fp32", 1, 141.0), ("fp32", 4, 145.0), ("fp16", 1, 91.0), ("fp16", 4, 95.0)]
    assert all(r["torch_allocator_peak_mib"] is None for r in report["rows"])  # not a torch row
    assert device.used == 300 * MIB  # every runtime was released


def test_device_memory_is_none_without_a_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "device_memory_used", lambda: None)
    report = bench.run_bench(
        _artifact(tmp_path), backends=["onnxruntime"], device="cuda", batches=[1], warmup=0, iters=1,
        runtime_factory=lambda *a: FakeEngineRuntime(FakeDevice(), "fp32"),
    )  # fmt: skip
    assert report["rows"][0]["peak_device_mib"] is None and report["rows"][0]["error"] is None


def test_postprocess_cuda_reaches_the_runtime_factory(tmp_path: Path) -> None:
    seen = []

    def factory(target: Path, backend: str, precision: str, device: str, postprocess: str = "torch"):
        seen.append(postprocess)
        if postprocess == "cuda":
            raise RuntimeError("no CUDA binding can run the anomaly-map kernel here")
        return FakeEngineRuntime(FakeDevice(), precision)

    report = bench.run_bench(
        _artifact(tmp_path), backends=["tensorrt"], batches=[1], warmup=0, iters=1,
        runtime_factory=factory, postprocesses=["torch", "cuda"],
    )  # fmt: skip
    assert seen == ["torch", "cuda"]
    graph_row, kernel_row = report["rows"]
    assert graph_row["postprocess"] == "torch" and graph_row["backend"] == "tensorrt" and graph_row["error"] is None
    assert kernel_row["postprocess"] == "cuda" and kernel_row["backend"] == "tensorrt + cuda kernel"
    assert "anomaly-map kernel" in kernel_row["error"]
    with pytest.raises(ValueError, match="postprocess"):
        bench.run_bench(_artifact(tmp_path), postprocesses=["opencl"], runtime_factory=factory)


def test_make_runtime_refuses_cuda_postprocess_where_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--device cuda"):
        bench.open_bench_runtime(_artifact(tmp_path), "onnxruntime", "fp32", "cpu", postprocess="cuda")
    with pytest.raises(ValueError, match="torch .*tensorrt"):
        bench.open_bench_runtime(_artifact(tmp_path), "onnxruntime", "fp32", "cuda", postprocess="cuda")


def test_bench_command_takes_postprocess(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench", str(_artifact(tmp_path)), "--backend", "onnxruntime", "--postprocess", "cuda", "--batch", "1",
            "--iters", "1", "--warmup", "0", "--json", str(out),
        ],
    )  # fmt: skip
    # --postprocess cuda without --device cuda contradicts itself: refused in one line, no report written
    assert result.exit_code == 2 and "--device cuda" in result.output and not out.exists(), result.output
