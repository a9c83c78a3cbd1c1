"""The prepared GPU check (benchmarks/gpu_check.{sh,py}): its no-GPU path in CI, and its step runner."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_ad.benchmarks import gpu_check
from tests.layering import assert_runs_without

ROOT = Path(__file__).resolve().parents[1]
HAS_GPU = bool(gpu_check.cuda_devices()[0])


@pytest.mark.skipif(HAS_GPU, reason="a CUDA GPU is visible: the no-GPU path does not apply")
def test_without_a_gpu_it_says_so_and_exits_0_in_seconds(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path / "gc")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU here" in done.stdout and "exiting 0" in done.stdout
    assert seconds < 15, seconds
    result = json.loads((tmp_path / "gc" / "results.json").read_text())
    assert result["status"] == "no-gpu" and result["why"]


@pytest.mark.skipif(HAS_GPU, reason="a CUDA GPU is visible: the no-GPU path does not apply")
def test_no_gpu_path_imports_no_gpu_stack(tmp_path: Path) -> None:
    code = f"from edge_ad.benchmarks import gpu_check\nassert gpu_check.main(['--out', {str(tmp_path)!r}]) == 0\n"
    assert_runs_without(code, ["torch", "cupy", "pycuda", "tensorrt", "onnxruntime"])


def test_large_batch_crosses_the_int32_limit() -> None:
    n = gpu_check.large_batch(224, 224)
    assert n * 224 * 224 > 2**31 >= (n - 1) * 224 * 224
    assert n <= 65535  # still within the kernel's grid limit on the batch axis


def test_steps_are_isolated_and_results_kept_after_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = gpu_check.Check(tmp_path)
    seen = []

    def good(c: gpu_check.Check, log: Path) -> dict:
        seen.append(json.loads((tmp_path / "results.json").read_text())["steps"] if c.results["steps"] else {})
        return {"figure": 1.5}

    def bad(c: gpu_check.Check, log: Path) -> dict:
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    check.run("first", bad, 0)
    check.run("second", good, 0)
    monkeypatch.setattr(gpu_check, "BUDGET_S", 0.0)
    check.run("third", good, 10)
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert steps["first"]["status"] == "failed" and "ILLEGAL_ADDRESS" in steps["first"]["error"]
    assert "Traceback" in (tmp_path / "first.log").read_text()
    assert steps["second"]["status"] == "ok" and steps["second"]["figure"] == 1.5
    assert steps["third"]["status"] == "skipped" and "time budget" in steps["third"]["why"]
    assert seen == [{"first": steps["first"]}]  # the failure was on disk before the next step ran


def test_shim_imports_the_checkout_as_installed(tmp_path: Path) -> None:
    shim = gpu_check.make_shim(tmp_path)
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
        f"sys.path.insert(0, {str(shim)!r})\n"
        "import edge_ad.export, edge_ad.benchmarks\n"
        "from edge_ad.runtimes.cuda_kernel import kernel_source\n"
        f"assert edge_ad.export.__path__[0].startswith({str(shim)!r}), edge_ad.export.__path__\n"
        "assert 'anomaly_map_hpass' in kernel_source()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
