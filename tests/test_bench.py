"""Benchmark statistics and the bench command on a tiny model; no test asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.bench import PAPER_FPS, LatencyStats, ratio, run_bench
from edge_ad.cli import app


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
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["torch"]


def test_unavailable_backend_is_a_row_not_a_crash(tiny_bundle: Path) -> None:
    report = run_bench(tiny_bundle, backends=["tensorrt"], batches=[1], warmup=0, iters=1, reference=False)
    (row,) = report["rows"]
    assert row["backend"] == "tensorrt" and row["error"]


def test_bench_command_writes_json(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", str(tiny_bundle), "--batch", "1", "--iters", "1", "--warmup", "0", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["rows"]} == {"reference (authors' path)", "torch"}
