"""The service soak's measurements (``benchmarks/soak_serve.py``): /proc readings, the per-10k-requests slope, rotation
counting, and a short real soak through at least one results.jsonl rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_ad.benchmarks.soak_serve import process_usage, rotations_seen, slope_per, soak


def test_process_usage_sees_a_new_descriptor() -> None:
    before = process_usage(os.getpid())
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        after = process_usage(os.getpid())
    finally:
        os.close(fd)
    assert after["open_fds"] == before["open_fds"] + 1
    assert before["rss_mib"] > 1 and before["threads"] >= 1


def test_slope_per_ten_thousand_requests_skips_the_warmup() -> None:
    # 1 MiB per 1,000 requests after the start-up jump in the first samples: 10 MiB per 10,000
    samples = [{"requests": 0, "rss_mib": 0.0}, {"requests": 1000, "rss_mib": 500.0}]
    samples += [{"requests": n, "rss_mib": 600.0 + n / 1000} for n in range(2000, 10001, 1000)]
    assert slope_per(samples, "rss_mib", warmup_fraction=0.2) == pytest.approx(10.0)
    flat = [{"requests": n, "open_fds": 15} for n in range(0, 5000, 500)]
    assert slope_per(flat, "open_fds") == pytest.approx(0.0)
    assert slope_per(flat[:1], "open_fds") == 0.0  # nothing measured: no growth claimed
    assert slope_per([{"requests": 5, "open_fds": 1}] * 5, "open_fds") == 0.0  # no requests between samples


def test_rotations_seen_counts_shrinks_of_the_live_file() -> None:
    live = [{"live_bytes": b} for b in (100, 900, 50, 800, 30)]
    assert rotations_seen(live, rotated_files_at_end=1) == 2
    assert rotations_seen(live[:2], rotated_files_at_end=0) == 0


@pytest.fixture(scope="module")
def onnx_model(private_bundle: Path) -> Path:
    from edge_ad.export.onnx_export import export_onnx

    return Path(export_onnx(private_bundle, verify=False))


def test_short_soak_rotates_and_reports_slopes(onnx_model: Path, tmp_path: Path) -> None:
    report = soak(onnx_model, tmp_path / "out", seconds=3.0, sample_s=0.5, rate=20.0, clients=2, rotate_mb=0.002)
    summary, samples = report["summary"], report["samples"]
    assert len(samples) >= 4 and summary["requests_answered"] > 0 and summary["requests_failed"] == 0
    assert [s["requests"] for s in samples] == sorted(s["requests"] for s in samples)
    assert all(s["rss_mib"] > 10 and s["open_fds"] > 3 and s["threads"] >= 1 for s in samples)
    assert summary["rotations"] >= 1 and any(s["results_files"] > 1 for s in samples)
    assert summary["p50_ms_median_of_samples"] > 0 and summary["sigterm_exit_code"] == 0
    for key in ("rss_mib", "open_fds", "threads"):
        assert isinstance(summary[f"{key}_per_10000_requests"], float)
