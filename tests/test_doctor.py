"""``edge-ad doctor``: torch-free, right about this machine, and right about a Jetson (probes replaced)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_ad import doctor
from edge_ad.cli.main import app
from tests.layering import assert_runs_without

NO_GPU_HERE = shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists()
NO_TRT_HERE = importlib.util.find_spec("tensorrt") is None


def test_doctor_is_torch_free_and_reports_this_machine() -> None:
    code = f"""
from edge_ad.doctor import collect, render_lines
r = collect()
lines = render_lines(r)
assert r["python"]["version"] and r["edge_ad"] and r["onnxruntime"]["installed"]
assert "CPUExecutionProvider" in r["onnxruntime"]["providers"]
assert set(r["bindings"]) == {{"pycuda", "cuda-python", "cupy", "torch"}}
if {NO_GPU_HERE}:
    assert r["gpu"] is None and r["cuda_driver"]["devices"] == [] and "GPU: none" in lines
    assert not any(b["reaches_gpu"] for b in r["bindings"].values())
    assert not any(i["works"] for i in r["serve"] if "CUDA" in i["name"] or "TensorRT" in i["name"])
if {NO_TRT_HERE}:
    assert r["tensorrt"]["installed"] is False and "TensorRT: not installed" in lines
    assert [i["works"] for i in r["engine_export"]] == [False, False, False, False, True]  # only --dry-run
"""
    assert_runs_without(code, ["torch", "cupy", "pycuda", "tensorrt"])


def test_doctor_command_json_and_text() -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"python", "tensorrt", "cuda_driver", "jetson", "bindings", "engine_export", "serve"} <= set(report)
    text = CliRunner().invoke(app, ["doctor"])
    assert text.exit_code == 0 and "edge-ad export --format engine:" in text.output
    if NO_GPU_HERE:
        assert "GPU: none" in text.output


@pytest.fixture
def jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An AGX Orin on JetPack 6: TensorRT 10.3, pycuda, no torch, nvcc in /usr/local/cuda/bin only."""
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(doctor, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(doctor, "TEGRA_RELEASE", release)
    monkeypatch.setattr(doctor, "run_nvpmodel", lambda: "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n")
    orin = {"index": 0, "name": "Orin", "compute_capability": "8.7", "memory_mib": 62841}
    monkeypatch.setattr(doctor, "probe_cuda_driver", lambda: {"driver_version": "12.6", "devices": [orin]})
    monkeypatch.setattr(doctor, "probe_cuda_runtime", lambda: {"version": "12.6", "library": "libcudart.so.12"})
    monkeypatch.setattr(doctor, "probe_tensorrt", lambda: {"installed": True, "version": "10.3.0"})
    bindings = {
        "pycuda": {"installed": True, "version": "2024.1", "reaches_gpu": True},
        "cuda-python": {"installed": False, "version": None, "reaches_gpu": False},
        "cupy": {"installed": False, "version": None, "reaches_gpu": False},
        "torch": {"installed": False, "version": None, "reaches_gpu": False},
    }
    monkeypatch.setattr(doctor, "probe_binding", lambda name: bindings[name])
    tools = {
        "nvcc": "/usr/local/cuda/bin/nvcc", "nvcc_on_path": False, "nvcc_version": "12.6",
        "trtexec": "/usr/src/tensorrt/bin/trtexec", "ninja": None, "compute_sanitizer": None,
    }  # fmt: skip
    monkeypatch.setattr(doctor, "probe_tools", lambda: dict(tools))
    return tools


def test_a_jetson_is_reported_right(jetson) -> None:
    r = doctor.collect()
    assert r["jetson"] == {
        "is_jetson": True,
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
        "l4t": "R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64",
        "power_mode": {"name": "MAXN", "id": 0},
    }
    assert r["gpu"]["compute_capability"] == "8.7"
    engines = {i["name"]: i for i in r["engine_export"]}
    assert all(i["works"] for i in engines.values())  # TensorRT 10 still has the weakly typed FP16 flag
    assert "TensorRT 10.3.0 on Orin (sm 8.7)" in engines["fp16 ONNX -> fp16 engine (strongly typed)"]["why"]
    serve = {i["name"]: i for i in r["serve"]}
    assert serve["TensorRT engine"]["works"] and "pycuda" in serve["TensorRT engine"]["why"]
    assert serve["CUDA post-processing kernel (--postprocess cuda)"]["works"]
    assert not serve["torch CUDA"]["works"] and not serve["torch-tensorrt"]["works"]
    assert not serve["onnxruntime CUDA"]["works"]  # the CPU onnxruntime wheel of this machine
    lines = doctor.render_lines(r)
    assert "Jetson: NVIDIA Jetson AGX Orin Developer Kit; R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: " \
        "generic, EABI: aarch64; power mode MAXN (mode 0)" in lines
    assert "nvcc: /usr/local/cuda/bin/nvcc (not on PATH)" in lines
    assert "GPU: Orin (compute capability 8.7, 62841 MiB)" in lines


def test_without_nvcc_pycuda_cannot_run_the_kernel(jetson) -> None:
    jetson["nvcc"] = None
    r = doctor.collect()
    kernel = next(i for i in r["serve"] if i["name"].startswith("CUDA post-processing"))
    assert not kernel["works"] and "needs nvcc" in kernel["why"]


def test_tensorrt_11_refuses_the_weakly_typed_fp16_build(jetson, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "probe_tensorrt", lambda: {"installed": True, "version": "11.0.0"})
    weak = next(i for i in doctor.collect()["engine_export"] if "FP16 builder flag" in i["name"])
    assert not weak["works"] and "removed" in weak["why"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NV Power Mode: MAXN\n0\n", {"name": "MAXN", "id": 0}),
        ("NV Fan Mode:quiet\nNV Power Mode: 15W\n1\n", {"name": "15W", "id": 1}),
        ("NV Power Mode: MODE_30W_ALL\n", {"name": "MODE_30W_ALL", "id": None}),
        ("nvpmodel: command not permitted\n", None),
        (None, None),
    ],
)
def test_parse_nvpmodel(text: str | None, expected: dict | None) -> None:
    assert doctor.parse_nvpmodel(text) == expected


def test_not_a_jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(doctor, "DEVICE_TREE_MODEL", tmp_path / "missing")
    monkeypatch.setattr(doctor, "TEGRA_RELEASE", tmp_path / "missing too")
    assert doctor.probe_jetson() == {"is_jetson": False, "model": None, "l4t": None, "power_mode": None}
