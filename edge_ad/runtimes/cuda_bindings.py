"""The cupy and pycuda bindings of the anomaly-map kernels: probe, compile, move arrays, launch.

Split from :mod:`edge_ad.runtimes.cuda_postprocess`, which picks a binding; each class here compiles the
source, allocates the batch's buffers only after the launch plan has accepted it, and launches the three
kernels. cupy and pycuda are imported only inside the probes and the constructors, so importing this module
needs neither (nor torch).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from .cuda_kernel import KERNEL_NAMES, _launch_plan, find_nvcc

# ------------------------------------------------------------------------------------------------------------
# Probes: None when the backend can run here, else the reason it cannot.


def _probe_cupy() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver / no device raise CUDARuntimeError
        return f"cupy cannot reach a CUDA device ({exc})"
    return None if count > 0 else "cupy sees no CUDA device"


def _probe_pycuda() -> str | None:
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed"
    try:
        import pycuda.driver as drv

        drv.init()
        count = drv.Device.count()
    except Exception as exc:
        return f"pycuda cannot reach a CUDA device ({exc})"
    return None if count > 0 else "pycuda sees no CUDA device"


# ------------------------------------------------------------------------------------------------------------
# Backends. Each one compiles the source, moves arrays and launches the three kernels of a batch.


class _Backend:
    name = ""

    def is_device_array(self, x: Any) -> bool:
        raise NotImplementedError

    def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def run_device(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        raise NotImplementedError


class _CupyBackend(_Backend):
    name = "cupy"

    def __init__(self, source: str, taps: np.ndarray) -> None:
        import cupy

        self.cp = cupy
        self.module = cupy.RawModule(code=source)
        self.kernels = {name: self.module.get_function(name) for name in KERNEL_NAMES}  # compiles (NVRTC)
        self.taps_host = taps
        self.taps: dict[int, Any] = {}  # per device id

    def is_device_array(self, x: Any) -> bool:
        return isinstance(x, self.cp.ndarray)

    def _taps(self) -> Any:
        device = self.cp.cuda.Device().id
        if device not in self.taps:
            self.taps[device] = self.cp.asarray(self.taps_host)
        return self.taps[device]

    def run_device(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        cp = self.cp
        with cp.cuda.Device(patch.device.id):
            patch = cp.ascontiguousarray(patch, dtype=cp.float32)
            n, h, w = patch.shape
            height, width = out_hw
            plan = _launch_plan(n, h, w, height, width)  # before allocating: an oversized batch raises here
            taps = self._taps()
            radius = np.int32((taps.size - 1) // 2)
            rows = cp.empty((n, h, width), dtype=cp.float32)
            out = cp.empty((n, height, width), dtype=cp.float32)
            score = cp.empty((n,), dtype=cp.float32)
            if n == 0:
                return score, out
            i32 = np.int32
            grid, block = plan["anomaly_map_hpass"]
            self.kernels["anomaly_map_hpass"](grid, block, (patch, i32(h), i32(w), i32(width), taps, radius, rows))
            grid, block = plan["anomaly_map_vpass"]
            self.kernels["anomaly_map_vpass"](grid, block, (rows, i32(h), i32(width), i32(height), taps, radius, out))
            grid, block = plan["anomaly_map_image_max"]
            self.kernels["anomaly_map_image_max"](grid, block, (patch, i32(h * w), score))
            return score, out

    def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        score, out = self.run_device(self.cp.asarray(patch), out_hw)
        return self.cp.asnumpy(score), self.cp.asnumpy(out)


class _PycudaBackend(_Backend):
    name = "pycuda"

    def __init__(self, source: str, taps: np.ndarray) -> None:
        import pycuda.driver as drv
        import pycuda.gpuarray as gpuarray

        self.drv = drv
        self.gpuarray = gpuarray
        drv.init()
        context = drv.Context.get_current()
        if context is None:
            # No context on this thread: use the device's primary context, shared with the CUDA runtime.
            context = drv.Device(0).retain_primary_context()
        self.context = context
        self.context.push()
        try:
            from pycuda.compiler import SourceModule

            # The source declares its kernels extern "C" itself, so SourceModule must not wrap it again.
            # SourceModule runs nvcc, which JetPack installs in /usr/local/cuda/bin without putting it on PATH.
            self.module = SourceModule(source, nvcc=find_nvcc(), no_extern_c=True)
            self.kernels = {name: self.module.get_function(name) for name in KERNEL_NAMES}
            self.taps = gpuarray.to_gpu(taps)
        finally:
            self.drv.Context.pop()

    def is_device_array(self, x: Any) -> bool:
        return isinstance(x, self.gpuarray.GPUArray)

    def _run(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        gpuarray = self.gpuarray
        if patch.dtype != np.float32:
            patch = patch.astype(np.float32)
        if not patch.flags.c_contiguous:
            raise ValueError("pycuda input must be a C-contiguous GPUArray")
        n, h, w = patch.shape
        height, width = out_hw
        plan = _launch_plan(n, h, w, height, width)  # before allocating: an oversized batch raises here
        radius = np.int32((self.taps.size - 1) // 2)
        rows = gpuarray.empty((n, h, width), dtype=np.float32)
        out = gpuarray.empty((n, height, width), dtype=np.float32)
        score = gpuarray.empty((n,), dtype=np.float32)
        if n == 0:
            return score, out
        i32 = np.int32
        grid, block = plan["anomaly_map_hpass"]
        self.kernels["anomaly_map_hpass"](
            patch, i32(h), i32(w), i32(width), self.taps, radius, rows, block=block, grid=grid
        )
        grid, block = plan["anomaly_map_vpass"]
        self.kernels["anomaly_map_vpass"](
            rows, i32(h), i32(width), i32(height), self.taps, radius, out, block=block, grid=grid
        )
        grid, block = plan["anomaly_map_image_max"]
        self.kernels["anomaly_map_image_max"](patch, i32(h * w), score, block=block, grid=grid)
        return score, out

    def run_device(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        self.context.push()
        try:
            return self._run(patch, out_hw)
        finally:
            self.drv.Context.pop()

    def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        self.context.push()
        try:
            score, out = self._run(self.gpuarray.to_gpu(patch), out_hw)
            return score.get(), out.get()
        finally:
            self.drv.Context.pop()
