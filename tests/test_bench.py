"""Benchmark statistics and the bench command on a tiny model; no test asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.bench.run import PAPER_FPS, LatencyStats, ratio, run_bench
from edge_ad.cli.bench import BENCH_COLUMNS, bench_table
from edge_ad.cli.main import app


def test_latency_percentiles_and_throughput() -> None:
    times = [0.010, 0.020, 0.030, 0.040, 0.100]
    stats = LatencyStats.from_times(times, batch=4)
    ms = np.array(times) * 1e3
    assert stats.p50_ms == pytest.approx(np.percentile(ms, 50))
    assert stats.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert stats.p99_ms == pytest.approx(np.percentile(ms, 99))
    assert stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.images_per_s == pytest.approx(4 / 0.030)
    with pytest.raises(ValueError):
        LatencyStats.from_times([], 1)


def test_ratios() -> None:
    assert ratio(154.0, PAPER_FPS) == pytest.approx(2.0)
    assert ratio(10.0, 0.0) is None


def test_bench_report_on_a_tiny_bundle(tiny_bundle: Path, tiny_demo: Path) -> None:
    report = run_bench(tiny_bundle, backends=["torch"], batches=[1, 2], data=tiny_demo, warmup=1, iters=2)
    rows = report["rows"]
    ref = [r for r in rows if r["backend"].startswith("reference")]
    ours = [r for r in rows if r["backend"] == "torch"]
    assert [r["batch"] for r in ref] == [1, 2] and [r["batch"] for r in ours] == [1, 2]
    for r in ours:
        assert r["error"] is None
        assert r["vs_reference"] == pytest.approx(
            r["latency"]["images_per_s"] / ref[ours.index(r)]["latency"]["images_per_s"]
        )
        assert r["vs_paper_77fps"] == pytest.approx(r["latency"]["images_per_s"] / PAPER_FPS)
        assert 0.0 <= r["metrics"]["image_auroc"] <= 1.0
        assert r["end_to_end_images_per_s"] > 0 and r["end_to_end_sequential_images_per_s"] > 0
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["torch"]


def test_pipelined_end_to_end_runs_every_batch_in_order_from_the_files(tiny_demo: Path) -> None:
    from edge_ad.bench.run import pipelined_images_per_s
    from edge_ad.data.images import list_images, read_image
    from edge_ad.data.preprocess import Preprocessing

    pre = Preprocessing(image_size=32, resize=36)
    files = list_images(tiny_demo / "train" / "good")[:3]
    want = pre.batch([read_image(f) for f in files])
    seen: list[np.ndarray] = []

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen.append(x)
        return x.mean(axis=(1, 2, 3)), x[:, 0]

    rate = pipelined_images_per_s(predict, files, pre, batches=4)
    assert rate > 0 and len(seen) == 1 + 4  # a warm-up batch, then the timed ones
    for x in seen:
        np.testing.assert_array_equal(x, want)


def test_unavailable_backend_is_listed_not_a_crash(tiny_bundle: Path) -> None:
    report = run_bench(tiny_bundle, backends=["tensorrt"], batches=[1], warmup=0, iters=1, reference=False)
    if report["rows"]:  # TensorRT installed: the row ran or failed for a reason of its own
        assert report["rows"][0]["backend"] == "tensorrt"
    else:  # not installed, or no engine exported: not available here, and never a result row
        (skipped,) = report["not_available"]
        assert skipped["backend"] == "tensorrt" and skipped["reason"]


def test_bench_command_writes_json(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", str(tiny_bundle), "--batch", "1", "--iters", "1", "--warmup", "0", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"reference (authors' path)", "torch"}


def test_bench_table_headers_and_cells_come_from_one_list_and_errors_keep_their_full_text() -> None:
    from rich.console import Console

    ok = {
        "backend": "torch",
        "precision": "fp32",
        "batch": 8,
        "latency": {"p50_ms": 12.34, "p90_ms": 13.0, "p99_ms": 14.0, "images_per_s": 648.2},
        "vs_paper_77fps": 8.418,
        "vs_reference": 2.5,
        "end_to_end_images_per_s": 100.0,
        "preprocess_ms_per_image": 1.5,
        "postprocess_ms_per_image": float("nan"),
        "metrics": {"image_auroc": 0.9245},
        "error": None,
    }
    message = "RuntimeError: [cuda] " + " ".join(f"word{i}" for i in range(40)) + " END"
    failed = {**ok, "backend": "tensorrt", "batch": 1, "error": message}
    table, notes = bench_table({"machine": {"cpu": "test cpu"}, "rows": [ok, failed]})
    assert [c.header for c in table.columns] == [h for h, _ in BENCH_COLUMNS]
    cells = [list(c.cells) for c in table.columns]
    assert [col[0] for col in cells][:5] == ["torch", "fp32", "-", "8", "12.3"]
    assert cells[-2][0] == "0.9245" and cells[-1][0] == "-" and cells[-3][0] == "-"  # missing and NaN
    assert [col[1] for col in cells][:5] == ["tensorrt", "fp32", "-", "1", "[red]error 1[/]"]
    assert all(col[1] == "-" for col in cells[5:])
    screen = Console(width=80, record=True)
    for note in notes:
        screen.print(note, soft_wrap=True)
    text = screen.export_text()
    assert message in text and "(tensorrt fp32 batch 1)" in text  # full text, brackets shown, never cut


def test_bench_command_prints_a_not_available_backend_in_full(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        ["bench", str(tiny_bundle), "--backend", "tensorrt", "--batch", "1", "--no-reference", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    if report["rows"]:
        pytest.skip("TensorRT and an engine are here")
    (skipped,) = report["not_available"]
    assert f"not available here: tensorrt fp32: {skipped['reason']}" in " ".join(result.output.split())


def test_rows_give_the_gflop_of_the_graph_they_run(tiny_bundle: Path, tmp_path: Path) -> None:
    """GFLOP per image comes from the ONNX a row runs (counted by onnx_graph.graph_flops): an ONNX target, or a
    bundle's exported graph for every row on the bundle; '-' in the table where there is none to count."""
    pytest.importorskip("onnx")
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.onnx_tools.onnx_graph import graph_flops

    path = export_onnx(tiny_bundle, tmp_path / "model.fp32.onnx", verify=False, dynamic_batch=True)
    expected = round(graph_flops(path)["total"] / 1e9, 4)
    assert expected > 0.1  # WideResNet50 to layer3 at 64x64: ~1.6 GFLOP
    report = run_bench(path, backends=["onnxruntime"], batches=[1], warmup=0, iters=1, reference=False)
    (row,) = report["rows"]
    assert row["error"] is None and row["gflop_per_image"] == expected
    assert report["flops"]["total"] == pytest.approx(expected * 1e9, rel=1e-3)
    table, _ = bench_table(report)
    headers = [c.header for c in table.columns]
    assert table.columns[headers.index("GFLOP/img")]._cells == [f"{expected:.3g}"]

    # a bundle without an exported graph: nothing to count, the row says so ("-"), the run goes on
    report = run_bench(tiny_bundle, backends=["torch"], batches=[1], warmup=0, iters=1, reference=False)
    (row,) = report["rows"]
    if not (tiny_bundle / "model.fp32.onnx").exists():
        assert row["gflop_per_image"] is None and report["flops"] is None
        assert bench_table(report)[0].columns[headers.index("GFLOP/img")]._cells == ["-"]
