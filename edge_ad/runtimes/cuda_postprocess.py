"""Anomaly-map post-processing on the GPU with the CUDA kernels in ``export/kernels/anomaly_map.cu``.

:class:`CudaAnomalyMap` turns raw patch scores ``[N, h, w]`` into ``(image_score[N], anomaly_map[N, H, W])``,
the same computation as :func:`edge_ad.postprocess.numpy_ops.postprocess` (held to it within 1e-5 relative by
``tests/test_cuda_kernel.py`` on a GPU machine). The kernels are compiled at run time by whichever Python CUDA
binding is installed, tried in this order:

``"cupy"``
    ``cupy.RawModule`` (NVRTC, no compiler toolchain needed); device arrays are ``cupy.ndarray``.
``"pycuda"``
    ``pycuda.compiler.SourceModule`` (calls ``nvcc``, shipped with JetPack in ``/usr/local/cuda/bin``, which is
    found there or through ``$CUDA_HOME`` when it is not on PATH); device arrays are
    ``pycuda.gpuarray.GPUArray``. Runs in the CUDA context current at construction, or else the device-0
    primary context (the one the CUDA runtime, TensorRT and torch share); the context is pushed around each
    call, so any thread may call.
``"torch"``
    ``torch.utils.cpp_extension.load_inline`` (needs ``nvcc`` and ninja; built once, cached by torch); device
    arrays are ``torch.Tensor`` on a CUDA device; kernels are launched on the stream current for the
    input's device (``torch.cuda.current_stream(device)``, passed to the launcher explicitly), i.e. behind the
    work that produced the patch scores.

A binding is used only once it has compiled the kernels and passed a one-image launch check against numpy; with
``backend=None`` one that fails either gives way to the next (``CudaAnomalyMap.skipped`` says why). The CUDA grid
limits are checked before anything is allocated or uploaded, so an oversized batch raises ``ValueError`` rather
than running out of memory. Indexing into the batch is 64-bit (``long long`` offsets in the kernels), so maps of
more than 2**31 elements in one batch are fine.

Nothing here imports cupy, pycuda or torch at module import; torch is imported only when the torch backend is
probed or used, i.e. by :func:`available_backends` and when neither cupy nor pycuda is usable.

numpy input is copied to the device and the results copied back (numpy out); a device array of the chosen
binding stays on the device (same kind out). Map sides must be at least ``radius + 1`` (17 for sigma 4),
as in the numpy and torch implementations.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_taps, min_map_size

__all__ = ["BACKENDS", "KERNEL_NAMES", "CudaAnomalyMap", "available_backends", "find_nvcc", "kernel_source"]

BACKENDS = ("cupy", "pycuda", "torch")
KERNEL_NAMES = ("anomaly_map_hpass", "anomaly_map_vpass", "anomaly_map_image_max")
KERNEL_RESOURCE = ("kernels", "anomaly_map.cu")

# Launch geometry (see the comments above each kernel in anomaly_map.cu).
HPASS_BLOCK = (128, 1, 1)
VPASS_BLOCK = (32, 8, 1)
MAX_BLOCK = (256, 1, 1)  # power of two <= IMAGE_MAX_THREADS
MAX_GRID_YZ = 65535


def kernel_source() -> str:
    """The CUDA source shipped as package data of ``edge_ad.export``.

    The file is located through the package's import spec so that ``edge_ad.export/__init__`` (which may
    import torch) is not executed; ``importlib.resources`` is the fallback for zipped installs.
    """
    spec = importlib.util.find_spec("edge_ad.export")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root).joinpath(*KERNEL_RESOURCE)
            if path.is_file():
                return path.read_text(encoding="utf-8")
    return importlib.resources.files("edge_ad.export").joinpath(*KERNEL_RESOURCE).read_text(encoding="utf-8")


def find_nvcc() -> str:
    """Path of ``nvcc``: PATH first, then ``$CUDA_HOME``/``$CUDA_PATH`` and ``/usr/local/cuda`` (JetPack's place)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    raise RuntimeError(
        "pycuda compiles the kernel with nvcc, which is not on PATH nor in $CUDA_HOME/bin or /usr/local/cuda/bin "
        "(on JetPack: export PATH=/usr/local/cuda/bin:$PATH)"
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _launch_plan(n: int, h: int, w: int, height: int, width: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``kernel name -> (grid, block)`` for one batch."""
    if n > MAX_GRID_YZ or h > MAX_GRID_YZ or _ceil_div(height, VPASS_BLOCK[1]) > MAX_GRID_YZ:
        raise ValueError(f"batch {n} or map size {(h, w)} -> {(height, width)} exceeds the CUDA grid limits")
    return {
        "anomaly_map_hpass": ((_ceil_div(width, HPASS_BLOCK[0]), h, n), HPASS_BLOCK),
        "anomaly_map_vpass": (
            (_ceil_div(width, VPASS_BLOCK[0]), _ceil_div(height, VPASS_BLOCK[1]), n),
            VPASS_BLOCK,
        ),
        "anomaly_map_image_max": ((n, 1, 1), MAX_BLOCK),
    }


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


def _probe_torch() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (CPU-only build or no driver)"
    if not cpp_extension.is_ninja_available():
        return "torch extensions need ninja (pip install ninja)"
    if cpp_extension.CUDA_HOME is None:
        return "torch extensions need the CUDA toolkit (nvcc; set CUDA_HOME)"
    return None


_PROBES: dict[str, Callable[[], str | None]] = {
    "cupy": _probe_cupy,
    "pycuda": _probe_pycuda,
    "torch": _probe_torch,
}


def available_backends() -> list[str]:
    """Backends that can run here, in order of preference. Probing ``"torch"`` imports torch if installed."""
    return [name for name in BACKENDS if _PROBES[name]() is None]


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


# C++ launcher compiled together with the kernel source by torch's load_inline. Launch geometry is filled in
# from the constants above so the three backends launch identically.
_TORCH_DECLARATION = """
void edge_ad_anomaly_map_launch(torch::Tensor patch, torch::Tensor taps, torch::Tensor rows,
                                torch::Tensor out, torch::Tensor score, int64_t stream);
"""

_TORCH_LAUNCHER = """
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// patch [N, h, w], taps [2r + 1], rows [N, h, W], out [N, H, W], score [N]: float32, contiguous, same device.
// stream: the cudaStream_t the inputs were produced on (torch.cuda.current_stream(device).cuda_stream).
void edge_ad_anomaly_map_launch(torch::Tensor patch, torch::Tensor taps, torch::Tensor rows,
                                torch::Tensor out, torch::Tensor score, int64_t stream_handle) {{
    const c10::cuda::CUDAGuard guard(patch.device());
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
    const int n = (int)patch.size(0), h = (int)patch.size(1), w = (int)patch.size(2);
    const int H = (int)out.size(1), W = (int)out.size(2);
    const int radius = (int)((taps.numel() - 1) / 2);
    if (n == 0) return;
    anomaly_map_hpass<<<dim3((W + {hb} - 1) / {hb}, h, n), dim3({hb}, 1, 1), 0, stream>>>(
        patch.data_ptr<float>(), h, w, W, taps.data_ptr<float>(), radius, rows.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    anomaly_map_vpass<<<dim3((W + {vbx} - 1) / {vbx}, (H + {vby} - 1) / {vby}, n), dim3({vbx}, {vby}, 1), 0,
                        stream>>>(
        rows.data_ptr<float>(), h, W, H, taps.data_ptr<float>(), radius, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    anomaly_map_image_max<<<dim3(n, 1, 1), dim3({mb}, 1, 1), 0, stream>>>(
        patch.data_ptr<float>(), h * w, score.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}}
"""


class _TorchBackend(_Backend):
    name = "torch"

    def __init__(self, source: str, taps: np.ndarray) -> None:
        import torch
        from torch.utils.cpp_extension import load_inline

        self.torch = torch
        launcher = _TORCH_LAUNCHER.format(hb=HPASS_BLOCK[0], vbx=VPASS_BLOCK[0], vby=VPASS_BLOCK[1], mb=MAX_BLOCK[0])
        # torch hashes the sources into the build: an edited kernel is rebuilt, an unchanged one is cached.
        self.extension = load_inline(
            name="edge_ad_anomaly_map",
            cpp_sources=[_TORCH_DECLARATION],
            cuda_sources=[source, launcher],
            functions=["edge_ad_anomaly_map_launch"],
            extra_cuda_cflags=["-O3"],
            verbose=False,
        )
        self.taps_host = torch.from_numpy(taps)
        self.taps: dict[Any, Any] = {}  # per device

    def is_device_array(self, x: Any) -> bool:
        return isinstance(x, self.torch.Tensor)

    def _taps(self, device: Any) -> Any:
        if device not in self.taps:
            self.taps[device] = self.taps_host.to(device)
        return self.taps[device]

    def _run(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        torch = self.torch
        patch = patch.to(dtype=torch.float32).contiguous()
        n, h, w = patch.shape
        height, width = out_hw
        _launch_plan(n, h, w, height, width)  # grid limits, before allocating
        rows = torch.empty((n, h, width), dtype=torch.float32, device=patch.device)
        out = torch.empty((n, height, width), dtype=torch.float32, device=patch.device)
        score = torch.empty((n,), dtype=torch.float32, device=patch.device)
        # The kernels join the stream the caller queued the patch scores on, so they run after them and before
        # whatever the caller queues next; the outputs were allocated on that same stream.
        stream = torch.cuda.current_stream(patch.device)
        self.extension.edge_ad_anomaly_map_launch(
            patch, self._taps(patch.device), rows, out, score, int(stream.cuda_stream)
        )
        return score, out

    def run_device(self, patch: Any, out_hw: tuple[int, int]) -> tuple[Any, Any]:
        if patch.device.type == "cuda":
            return self._run(patch, out_hw)
        # A CPU tensor: compute on the current CUDA device, hand the results back on the CPU.
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        score, out = self._run(patch.to("cuda"), out_hw)
        return score.to(patch.device), out.to(patch.device)

    def run_numpy(self, patch: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        _launch_plan(*patch.shape, *out_hw)  # before uploading anything
        score, out = self._run(self.torch.from_numpy(patch).to("cuda"), out_hw)
        return score.cpu().numpy(), out.cpu().numpy()


def _launch_check(
    backend: _Backend, patch_hw: tuple[int, int], out_hw: tuple[int, int], sigma: float, truncate: float
) -> None:
    """Run one small image through ``backend`` and hold it to numpy: a binding that compiled but cannot launch
    here (no kernel image for this GPU, a broken driver) or computes garbage fails now, not on the first part."""
    from edge_ad.postprocess.numpy_ops import postprocess

    h, w = patch_hw
    patch = (np.sin(np.arange(h * w, dtype=np.float32) * 0.7) * 2.0).reshape(1, h, w)
    score, amap = backend.run_numpy(patch, out_hw)
    ref_score, ref_map = postprocess(patch, out_hw, sigma=sigma, truncate=truncate)
    score, amap = np.asarray(score), np.asarray(amap)
    if amap.shape != ref_map.shape or not np.array_equal(score, ref_score):
        raise RuntimeError(f"launch check: image score {score} or map shape {amap.shape} differs from numpy")
    err = float(np.abs(amap.astype(np.float64) - ref_map).max())
    if not err <= 1e-4 * max(1.0, float(np.abs(ref_map).max())):
        raise RuntimeError(f"launch check: anomaly map differs from numpy by {err:.3g}")


_BACKEND_CLASSES: dict[str, type[_Backend]] = {
    "cupy": _CupyBackend,
    "pycuda": _PycudaBackend,
    "torch": _TorchBackend,
}


# ------------------------------------------------------------------------------------------------------------


class CudaAnomalyMap:
    """GPU post-processing: ``patch_scores[N, h, w] -> (image_score[N], anomaly_map[N, H, W])``.

    ``patch_hw``: the patch-score map size ``(h, w)`` (28x28 for a 224 crop); ``out_hw``: the full-resolution
    ``(H, W)``, each side at least ``radius + 1`` (17 for sigma 4). ``backend``: ``"cupy"``, ``"pycuda"``,
    ``"torch"`` or ``None`` for the first usable one. Raises ``RuntimeError`` when the backend (or every
    backend) cannot run here: no binding installed, no driver, no CUDA device, or the kernels fail to compile
    or launch.
    """

    def __init__(
        self,
        patch_hw: tuple[int, int],
        out_hw: tuple[int, int],
        sigma: float = SIGMA,
        backend: str | None = None,
        *,
        truncate: float = TRUNCATE,
    ) -> None:
        self.patch_hw = tuple(int(s) for s in patch_hw)
        self.out_hw = tuple(int(s) for s in out_hw)
        if len(self.patch_hw) != 2 or min(self.patch_hw) < 1:
            raise ValueError(f"patch_hw must be two positive sizes, got {patch_hw}")
        smallest = min_map_size(sigma, truncate)
        if len(self.out_hw) != 2 or min(self.out_hw) < smallest:
            raise ValueError(
                f"anomaly map size {out_hw} is too small for sigma={sigma}, truncate={truncate}: "
                f"each side must be at least {smallest} (Gaussian radius + 1)"
            )
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        taps = np.ascontiguousarray(gaussian_taps(sigma, truncate), dtype=np.float32)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown CUDA backend {backend!r}; choose one of {BACKENDS}")
        # Probe in order and stop at the first binding that compiles the kernels and passes a one-image launch
        # check; a binding that is installed but cannot compile (pycuda without nvcc) or launch (no kernel image
        # for this GPU) gives way to the next. torch is imported only if it is the one tried.
        self.skipped: list[str] = []  # "name: reason" for every binding passed over, in order
        source = kernel_source()
        for name in (backend,) if backend is not None else BACKENDS:
            reason = _PROBES[name]()
            if reason is None:
                try:
                    candidate = _BACKEND_CLASSES[name](source, taps)
                    _launch_check(candidate, self.patch_hw, self.out_hw, self.sigma, self.truncate)
                except Exception as exc:  # noqa: BLE001 - any compile/launch failure means: try the next binding
                    reason = f"failed to compile or launch the kernel ({type(exc).__name__}: {exc})"
                else:
                    self._backend = candidate
                    break
            self.skipped.append(f"{name}: {reason}")
        else:
            raise RuntimeError(
                "no CUDA binding can run the anomaly-map kernel here ("
                + "; ".join(self.skipped)
                + "). Install cupy, pycuda or a CUDA build of torch on a machine with an NVIDIA GPU, "
                "or use edge_ad.postprocess.numpy_ops.postprocess on the CPU."
            )

    @property
    def backend(self) -> str:
        return self._backend.name

    def __repr__(self) -> str:
        return (
            f"CudaAnomalyMap(patch_hw={self.patch_hw}, out_hw={self.out_hw}, sigma={self.sigma}, "
            f"backend={self.backend!r})"
        )

    def _check_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        dims = tuple(int(s) for s in shape)
        if len(dims) == 4 and dims[1] == 1:
            dims = (dims[0], dims[2], dims[3])
        if len(dims) != 3 or dims[1:] != self.patch_hw:
            raise ValueError(
                f"expected patch scores [N, {self.patch_hw[0]}, {self.patch_hw[1]}] (or [N, 1, h, w]), got {shape}"
            )
        return dims  # type: ignore[return-value]

    def __call__(self, patch_scores: Any) -> tuple[Any, Any]:
        """numpy in -> numpy out (copies); a device array of the backend's binding -> same kind, on device."""
        if isinstance(patch_scores, np.ndarray):
            dims = self._check_shape(patch_scores.shape)
            patch = np.ascontiguousarray(patch_scores.reshape(dims), dtype=np.float32)
            return self._backend.run_numpy(patch, self.out_hw)
        if self._backend.is_device_array(patch_scores):
            dims = self._check_shape(tuple(patch_scores.shape))
            return self._backend.run_device(patch_scores.reshape(dims), self.out_hw)
        raise TypeError(
            f"{type(patch_scores).__name__} is neither a numpy array nor a device array of the {self.backend!r} backend"
        )
