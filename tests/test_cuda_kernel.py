"""The CUDA post-processing kernels (edge_ad/runtimes/kernels/anomaly_map.cu) and their Python runner.

Without a GPU: the source compiles to PTX for Jetson Orin (compute_87) and Hopper (compute_90) with nvcc,
and the kernels themselves run on the CPU under a small C++ emulation of the CUDA launch (blockIdx/threadIdx
loops, a real barrier for __syncthreads) against the numpy reference. With a GPU (tests marked ``gpu``):
CudaAnomalyMap against numpy through every binding installed.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ad.postprocess.gaussian import gaussian_radius, gaussian_taps
from edge_ad.postprocess.numpy_ops import postprocess
from edge_ad.runtimes.cuda_kernel import HPASS_BLOCK, KERNEL_NAMES, MAX_BLOCK, VPASS_BLOCK, kernel_source
from edge_ad.runtimes.cuda_postprocess import BACKENDS, CudaAnomalyMap, available_backends
from tests.layering import assert_runs_without

SHAPES = [  # (N, h, w, H, W)
    (4, 28, 28, 224, 224),
    (1, 28, 28, 224, 224),
    (2, 8, 8, 64, 64),
    (3, 7, 9, 50, 33),
    (2, 28, 28, 17, 17),
    (3, 40, 30, 20, 19),  # downsampling
    (1, 1, 1, 17, 17),
]


def _patch(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2.0 + 1.5).astype(np.float32)


def _assert_matches_reference(score: np.ndarray, amap: np.ndarray, patch: np.ndarray, out_hw: tuple[int, int]) -> None:
    ref_score, ref_map = postprocess(patch, out_hw)
    assert score.shape == ref_score.shape and amap.shape == ref_map.shape
    np.testing.assert_array_equal(score, ref_score)
    err = float(np.abs(amap.astype(np.float64) - ref_map).max())
    scale = float(np.abs(ref_map).max())
    assert err <= 1e-4, err
    assert err <= 1e-5 * scale, (err, scale)


def test_kernel_source_ships_with_the_package() -> None:
    source = kernel_source()
    for name in KERNEL_NAMES:
        assert f'extern "C" __global__ void {name}(' in source
    assert "#include" not in source  # NVRTC-friendly: no headers at all
    # the launch geometry the Python side uses is the one the kernels document
    assert f"block ({HPASS_BLOCK[0]}, 1, 1)" in source
    assert f"block ({VPASS_BLOCK[0]}, {VPASS_BLOCK[1]}, 1)" in source
    assert MAX_BLOCK[0] & (MAX_BLOCK[0] - 1) == 0 and MAX_BLOCK[0] <= int(
        re.search(r"#define IMAGE_MAX_THREADS (\d+)", source).group(1)
    )


# --- nvcc ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["compute_87", "compute_90"])
def test_kernel_compiles_to_ptx(arch: str, tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    src = tmp_path / "anomaly_map.cu"
    src.write_text(kernel_source(), encoding="utf-8")
    ptx = tmp_path / f"anomaly_map_{arch}.ptx"
    result = subprocess.run(
        [nvcc, "--ptx", f"-arch={arch}", "-Werror", "all-warnings", str(src), "-o", str(ptx)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = ptx.read_text()
    for name in KERNEL_NAMES:
        assert re.search(rf"\.entry\s+{name}\s*\(", text), f"{name} missing from the {arch} PTX"


# --- CPU emulation of the kernels ---------------------------------------------------------------------------

_HARNESS = r"""
// CUDA keywords defined away; one std::thread per CUDA thread of a block for the reduction kernel so that
// __syncthreads() is a real barrier. The two blur kernels have no barrier and run thread by thread.
#include <barrier>
#include <thread>
#include <vector>
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 blockIdx, blockDim;
static thread_local emu_dim3 threadIdx;
static std::barrier<>* emu_barrier = nullptr;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() emu_barrier->arrive_and_wait()
#include "anomaly_map.cu"

static unsigned ceil_div(int a, int b) { return (unsigned)((a + b - 1) / b); }

extern "C" void emulate(const float* patch, int n, int h, int w, int H, int W, const float* taps, int radius,
                        float* rows, float* out, float* score) {
    blockDim = {HB, 1, 1};
    for (unsigned z = 0; z < (unsigned)n; ++z)
        for (unsigned y = 0; y < (unsigned)h; ++y)
            for (unsigned x = 0; x < ceil_div(W, HB); ++x)
                for (unsigned t = 0; t < HB; ++t) {
                    blockIdx = {x, y, z};
                    threadIdx = {t, 0, 0};
                    anomaly_map_hpass(patch, h, w, W, taps, radius, rows);
                }
    blockDim = {VBX, VBY, 1};
    for (unsigned z = 0; z < (unsigned)n; ++z)
        for (unsigned y = 0; y < ceil_div(H, VBY); ++y)
            for (unsigned x = 0; x < ceil_div(W, VBX); ++x)
                for (unsigned ty = 0; ty < VBY; ++ty)
                    for (unsigned tx = 0; tx < VBX; ++tx) {
                        blockIdx = {x, y, z};
                        threadIdx = {tx, ty, 0};
                        anomaly_map_vpass(rows, h, W, H, taps, radius, out);
                    }
    blockDim = {MB, 1, 1};
    for (unsigned z = 0; z < (unsigned)n; ++z) {
        blockIdx = {z, 0, 0};
        std::barrier<> barrier(MB);
        emu_barrier = &barrier;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < MB; ++t)
            threads.emplace_back([=] {
                threadIdx = {t, 0, 0};
                anomaly_map_image_max(patch, h * w, score);
            });
        for (auto& thread : threads) thread.join();
    }
}
"""


@pytest.fixture(scope="module")
def emulated_kernels(tmp_path_factory: pytest.TempPathFactory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler for the CPU emulation of the kernels")
    folder = tmp_path_factory.mktemp("emu")
    (folder / "anomaly_map.cu").write_text(kernel_source(), encoding="utf-8")
    (folder / "harness.cpp").write_text(_HARNESS, encoding="utf-8")
    probe = subprocess.run(
        [cxx, "-std=c++20", "-x", "c++", "-fsyntax-only", "-"],
        input="#include <barrier>\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"{cxx} lacks C++20 <barrier>")
    lib = folder / "libemu.so"
    defines = [
        f"-DHB={HPASS_BLOCK[0]}u",
        f"-DVBX={VPASS_BLOCK[0]}u",
        f"-DVBY={VPASS_BLOCK[1]}u",
        f"-DMB={MAX_BLOCK[0]}u",
    ]
    result = subprocess.run(
        [
            cxx,
            "-std=c++20",
            "-O2",
            "-shared",
            "-fPIC",
            "-pthread",
            "-Wall",
            "-Wextra",
            "-Werror",
            *defines,
            f"-I{folder}",
            str(folder / "harness.cpp"),
            "-o",
            str(lib),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    emu = ctypes.CDLL(str(lib))
    fp = ctypes.POINTER(ctypes.c_float)
    emu.emulate.argtypes = [fp, *[ctypes.c_int] * 5, fp, ctypes.c_int, fp, fp, fp]
    emu.emulate.restype = None

    def run(patch: np.ndarray, out_hw: tuple[int, int], sigma: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
        patch = np.ascontiguousarray(patch, dtype=np.float32)
        n, h, w = patch.shape
        height, width = out_hw
        taps = np.ascontiguousarray(gaussian_taps(sigma), dtype=np.float32)
        rows = np.full((n, h, width), np.nan, dtype=np.float32)
        out = np.full((n, height, width), np.nan, dtype=np.float32)
        score = np.full((n,), np.nan, dtype=np.float32)
        ptr = lambda a: a.ctypes.data_as(fp)  # noqa: E731
        emu.emulate(
            ptr(patch),
            n,
            h,
            w,
            height,
            width,
            ptr(taps),
            gaussian_radius(sigma),
            ptr(rows),
            ptr(out),
            ptr(score),
        )
        return score, out

    return run


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_kernels_match_numpy(emulated_kernels, shape: tuple[int, ...]) -> None:
    n, h, w, height, width = shape
    patch = _patch((n, h, w), seed=h * 100 + width)
    score, amap = emulated_kernels(patch, (height, width))
    _assert_matches_reference(score, amap, patch, (height, width))


def test_emulated_kernels_other_sigma_and_nan(emulated_kernels) -> None:
    patch = _patch((2, 14, 14), seed=4)
    score, amap = emulated_kernels(patch, (40, 40), sigma=2.0)
    ref_score, ref_map = postprocess(patch, (40, 40), sigma=2.0)
    np.testing.assert_array_equal(score, ref_score)
    assert np.abs(amap - ref_map).max() <= 1e-5 * np.abs(ref_map).max()
    patch[1, 3, 4] = np.nan  # the image score propagates NaN like numpy.max / torch.amax
    score, _ = emulated_kernels(patch, (40, 40), sigma=2.0)
    assert score[0] == ref_score[0] and np.isnan(score[1])


# --- Python runner without a GPU ----------------------------------------------------------------------------


def test_runner_module_imports_no_gpu_binding() -> None:
    code = (
        "import edge_ad.runtimes.cuda_postprocess as m\n"
        "assert 'anomaly_map_hpass' in m.kernel_source()\n"
        "try:\n"
        "    m.CudaAnomalyMap((28, 28), (224, 224), backend='cupy')\n"
        "except RuntimeError:\n"
        "    pass\n"
    )
    assert_runs_without(code, ["torch", "cupy", "pycuda", "scipy"])


def test_runner_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 17"):
        CudaAnomalyMap((28, 28), (16, 224))
    with pytest.raises(ValueError, match="unknown CUDA backend"):
        CudaAnomalyMap((28, 28), (224, 224), backend="opencl")


def test_runner_without_gpu_raises_runtime_error() -> None:
    if available_backends():
        pytest.skip("a CUDA backend is available here")
    with pytest.raises(RuntimeError, match="no CUDA binding"):
        CudaAnomalyMap((28, 28), (224, 224))
    for backend in BACKENDS:
        with pytest.raises(RuntimeError, match=backend):
            CudaAnomalyMap((28, 28), (224, 224), backend=backend)


# --- on a GPU -----------------------------------------------------------------------------------------------


def _gpu_backends() -> list[str]:
    backends = available_backends()
    if not backends:
        pytest.skip("no CUDA device with cupy, pycuda or a CUDA build of torch")
    return backends


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_anomaly_map_matches_numpy(shape: tuple[int, ...]) -> None:
    n, h, w, height, width = shape
    patch = _patch((n, h, w), seed=h * 100 + width)
    for backend in _gpu_backends():
        runner = CudaAnomalyMap((h, w), (height, width), backend=backend)
        score, amap = runner(patch)
        assert isinstance(score, np.ndarray) and isinstance(amap, np.ndarray)
        _assert_matches_reference(score, amap, patch, (height, width))
        score4, amap4 = runner(patch[:, None])  # [N, 1, h, w]
        np.testing.assert_array_equal(score4, score)
        np.testing.assert_array_equal(amap4, amap)


@pytest.mark.gpu
def test_cuda_anomaly_map_device_arrays_stay_on_device() -> None:
    patch = _patch((4, 28, 28), seed=9)
    for backend in _gpu_backends():
        runner = CudaAnomalyMap((28, 28), (224, 224), backend=backend)
        if backend == "cupy":
            import cupy

            score, amap = runner(cupy.asarray(patch))
            assert isinstance(amap, cupy.ndarray)
            score, amap = cupy.asnumpy(score), cupy.asnumpy(amap)
        elif backend == "pycuda":
            import pycuda.gpuarray as gpuarray

            runner._backend.context.push()
            try:
                score, amap = runner(gpuarray.to_gpu(patch))
                assert isinstance(amap, gpuarray.GPUArray)
                score, amap = score.get(), amap.get()
            finally:
                runner._backend.drv.Context.pop()
        else:
            import torch

            score, amap = runner(torch.from_numpy(patch).cuda())
            assert amap.is_cuda
            score, amap = score.cpu().numpy(), amap.cpu().numpy()
        _assert_matches_reference(score, amap, patch, (224, 224))


# --- the runner's own logic, through a fake CuPy (issue 11, defect 10) --------------------------------------


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch):
    """Install tests/fake_cupy.py as ``cupy``; pycuda and torch probes report themselves unusable."""
    from edge_ad.runtimes import cuda_postprocess as cp_mod
    from tests.fake_cupy import FakeCupy

    def install(**kwargs):
        fake = FakeCupy(**kwargs)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        monkeypatch.setitem(cp_mod._PROBES, "pycuda", lambda: "pycuda is not installed")
        monkeypatch.setitem(cp_mod._PROBES, "torch", lambda: "torch sees no CUDA device")
        return fake

    return install


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cupy_backend_launches_match_numpy(fake_cupy, shape: tuple[int, ...]) -> None:
    n, h, w, height, width = shape
    fake = fake_cupy()
    runner = CudaAnomalyMap((h, w), (height, width))
    assert runner.backend == "cupy" and runner.skipped == []
    patch = _patch((n, h, w), seed=h + width)
    score, amap = runner(patch)  # numpy in, numpy out
    _assert_matches_reference(score, amap, patch, (height, width))
    device_score, device_map = runner(fake.asarray(patch))  # device in, device out
    assert isinstance(device_map, fake.ndarray)
    np.testing.assert_array_equal(fake.asnumpy(device_map), amap)


def test_oversized_batch_raises_before_allocating(fake_cupy) -> None:
    fake = fake_cupy(memory_limit=256 * 2**20)
    runner = CudaAnomalyMap((28, 28), (224, 224), backend="cupy")
    before = fake.pool.allocations
    patch = fake.empty((70_000, 28, 28))  # 220 MB of patch scores: more images than the grid's z limit
    with pytest.raises(ValueError, match="CUDA grid limits"):
        runner(patch)
    assert fake.pool.allocations == before + 1  # only the patch itself: no rows/out/score buffers
    with pytest.raises(ValueError, match="CUDA grid limits"):
        runner(np.zeros((70_000, 28, 28), np.float32))  # numpy input: not even uploaded
    assert fake.pool.allocations == before + 1


def test_compile_failure_falls_back_to_the_next_binding(fake_cupy, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.runtimes import cuda_postprocess as cp_mod

    fake = fake_cupy()
    fake.compile_error = "nvrtc: error: failed to open libnvrtc-builtins.so.13.0"

    class NumpyBinding(cp_mod._Backend):  # a binding that works: the numpy reference stands in for a GPU
        name = "pycuda"

        def __init__(self, source: str, taps: np.ndarray) -> None:
            assert 'extern "C"' in source and taps.dtype == np.float32

        def is_device_array(self, x: object) -> bool:
            return False

        def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]):
            return postprocess(patch, out_hw)

    monkeypatch.setitem(cp_mod._PROBES, "pycuda", lambda: None)
    monkeypatch.setitem(cp_mod._BACKEND_CLASSES, "pycuda", NumpyBinding)
    runner = CudaAnomalyMap((28, 28), (224, 224))
    assert runner.backend == "pycuda"
    assert len(runner.skipped) == 1 and runner.skipped[0].startswith("cupy: failed to compile or launch")
    assert "CompileException" in runner.skipped[0]
    with pytest.raises(RuntimeError, match="CompileException"):  # named explicitly: no fallback
        CudaAnomalyMap((28, 28), (224, 224), backend="cupy")


def test_launch_failure_falls_back_and_the_error_lists_every_reason(fake_cupy) -> None:
    fake = fake_cupy()
    fake.launch_error = "CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available for execution on the device"
    with pytest.raises(RuntimeError) as info:
        CudaAnomalyMap((28, 28), (224, 224))
    message = str(info.value)
    assert "cupy: failed to compile or launch" in message and "NO_BINARY_FOR_GPU" in message
    assert "pycuda: pycuda is not installed" in message and "torch: torch sees no CUDA device" in message


def test_pycuda_finds_nvcc_off_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edge_ad.runtimes.cuda_kernel import find_nvcc

    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    assert find_nvcc() == str(nvcc)
    monkeypatch.delenv("CUDA_HOME")
    monkeypatch.delenv("CUDA_PATH", raising=False)
    if not Path("/usr/local/cuda/bin/nvcc").is_file():
        with pytest.raises(RuntimeError, match="PATH"):
            find_nvcc()
