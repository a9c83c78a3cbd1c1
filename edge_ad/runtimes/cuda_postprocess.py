"""Anomaly-map post-processing on the GPU with the CUDA kernels in ``edge_ad/runtimes/kernels/anomaly_map.cu``.

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

The code is split by job: :mod:`~edge_ad.runtimes.cuda_kernel` (kernel source, launch geometry, ``nvcc``),
:mod:`~edge_ad.runtimes.cuda_bindings` (cupy, pycuda), :mod:`~edge_ad.runtimes.cuda_torch_binding` (torch) and
this module, which picks a binding and checks shapes. Callers import this module; it re-exports the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_taps, min_map_size

from .cuda_bindings import _Backend, _CupyBackend, _probe_cupy, _probe_pycuda, _PycudaBackend
from .cuda_kernel import (
    kernel_source,
)
from .cuda_torch_binding import _probe_torch, _TorchBackend

__all__ = ["BACKENDS", "CudaAnomalyMap", "available_backends"]

BACKENDS = ("cupy", "pycuda", "torch")


_PROBES: dict[str, Callable[[], str | None]] = {
    "cupy": _probe_cupy,
    "pycuda": _probe_pycuda,
    "torch": _probe_torch,
}


def available_backends() -> list[str]:
    """Backends that can run here, in order of preference. Probing ``"torch"`` imports torch if installed."""
    return [name for name in BACKENDS if _PROBES[name]() is None]


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
