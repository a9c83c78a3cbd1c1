"""TensorRT backend: runs a serialised engine; refuses one built for another GPU or TensorRT version.

What the engine accepts is read from the engine itself (its input shape and optimisation profile), so any
batch size works: batches are chunked to the engine's largest batch and padded to its static (or smallest)
batch. Device memory goes through a small buffer layer, allocated once per batch size with the tensor
addresses set only when the size changes; copies are asynchronous on one stream with one synchronisation
per chunk, and a fixed batch can be replayed as a CUDA graph (torch layer). The layers:

``torch``
    CUDA tensors and pinned host tensors from torch (a desktop that has torch anyway; the README's choice).
``pycuda``
    Allocations in the device's *primary* context (the one the CUDA runtime and TensorRT use), pushed and
    popped around every call, so any thread may call ``predict`` (the serve worker does) and nothing is
    torn down before the engine at exit; ``zero_copy=True`` maps pinned host memory into the device
    (Jetson: CPU and GPU share DRAM, so no copies at all).

``auto`` takes pycuda first on a Jetson and torch first elsewhere. Neither is imported unless used, so the
module needs no torch. Post-processing runs inside the engine, or, for an engine built with ``--head cuda``
(or ``postprocess="cuda"``), in the fused CUDA kernel straight from the engine's ``patch_scores`` device
buffer -- no download and re-upload.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import (
    ENGINE_METADATA,
    GRAPH_HEAD_OUTPUTS,
    HEAD_BOUNDARY,
    ArtifactInfo,
    BundleError,
    read_sidecar,
)
from edge_ad.postprocess.image_score import HeadDeclaration, check_cuda_postprocess
from edge_ad.runtimes.base import check_batch
from edge_ad.runtimes.tensorrt_engine import (
    EngineMismatch,
    check_engine_matches,
    engine_batch_range,
    engine_io,
    gpu_identity,
    import_tensorrt,
    is_jetson,
)

__all__ = ["EngineMismatch", "TensorRTRuntime", "check_engine_matches", "is_jetson", "make_buffers"]

@dataclass
class DeviceBuffer:
    """One I/O tensor: its device pointer, a pinned host mirror, and the binding's own objects."""

    shape: tuple[int, ...]
    dtype: np.dtype
    ptr: int
    host: np.ndarray
    native: Any = None


def _cupy_view(buf: DeviceBuffer, shape: tuple[int, ...]) -> Any:
    """A cupy array over existing device memory (no copy); cupy only wraps the pointer."""
    import cupy as cp  # type: ignore[import-not-found]

    nbytes = int(np.prod(shape)) * buf.dtype.itemsize
    memory = cp.cuda.UnownedMemory(buf.ptr, nbytes, buf)
    return cp.ndarray(shape, buf.dtype, cp.cuda.MemoryPointer(memory, 0))


class _TorchBuffers:
    """CUDA and pinned host tensors from torch (desktop)."""

    name = "torch"

    def __init__(self, zero_copy: bool = False) -> None:
        if zero_copy:
            raise ValueError("zero-copy host memory is offered by the pycuda buffer layer (Jetson)")
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self._dtypes = {
            np.dtype(np.float32): torch.float32,
            np.dtype(np.float16): torch.float16,
            np.dtype(np.int32): torch.int32,
            np.dtype(np.int64): torch.int64,
            np.dtype(np.int8): torch.int8,
            np.dtype(np.bool_): torch.bool,
        }

    def active(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # torch's CUDA runtime binds the primary context in any thread

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceBuffer:
        t = self._dtypes[np.dtype(dtype)]
        dev = self.torch.empty(shape, dtype=t, device="cuda")
        host = self.torch.empty(shape, dtype=t, pin_memory=True)
        return DeviceBuffer(tuple(shape), np.dtype(dtype), int(dev.data_ptr()), host.numpy(), (dev, host))

    def upload(self, buf: DeviceBuffer) -> None:
        dev, host = buf.native
        with self.torch.cuda.stream(self.stream):
            dev.copy_(host, non_blocking=True)

    def download(self, buf: DeviceBuffer) -> None:
        dev, host = buf.native
        with self.torch.cuda.stream(self.stream):
            host.copy_(dev, non_blocking=True)

    @property
    def handle(self) -> int:
        return int(self.stream.cuda_stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_array(self, buf: DeviceBuffer, kind: str, shape: tuple[int, ...]) -> Any:
        if kind == "torch":
            return buf.native[0].view(shape)
        if kind == "cupy":
            return _cupy_view(buf, shape)
        raise ValueError(f"a torch device buffer cannot be handed to the {kind!r} kernel backend")

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            launch()

        def replay() -> None:
            with self.torch.cuda.stream(self.stream):
                graph.replay()

        return replay

    def free(self, buf: DeviceBuffer) -> None:
        buf.native = None

    def close(self) -> None:
        self.stream.synchronize()


class _PycudaBuffers:
    """Device allocations from pycuda in the primary context, pushed around every call (Jetson)."""

    name = "pycuda"

    def __init__(self, zero_copy: bool = False, device: int = 0) -> None:
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        self.cuda = cuda
        self.zero_copy = zero_copy
        self.context = cuda.Device(device).retain_primary_context()
        self._closed = False
        with self.active():
            self.stream = cuda.Stream()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the primary context current in the calling thread for the duration of the block."""
        if self._closed:
            raise RuntimeError("the pycuda buffer layer was closed")
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> DeviceBuffer:
        cuda = self.cuda
        if self.zero_copy:
            host = cuda.pagelocked_empty(shape, dtype, mem_flags=cuda.host_alloc_flags.DEVICEMAP)
            return DeviceBuffer(tuple(shape), np.dtype(dtype), int(host.base.get_device_pointer()), host, None)
        host = cuda.pagelocked_empty(shape, dtype)
        dev = cuda.mem_alloc(max(host.nbytes, 1))
        return DeviceBuffer(tuple(shape), np.dtype(dtype), int(dev), host, dev)

    def upload(self, buf: DeviceBuffer) -> None:
        if buf.native is not None:  # zero-copy: the device reads the host memory itself
            self.cuda.memcpy_htod_async(buf.native, buf.host, self.stream)

    def download(self, buf: DeviceBuffer) -> None:
        if buf.native is not None:
            self.cuda.memcpy_dtoh_async(buf.host, buf.native, self.stream)

    @property
    def handle(self) -> int:
        return int(self.stream.handle)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_array(self, buf: DeviceBuffer, kind: str, shape: tuple[int, ...]) -> Any:
        if kind == "pycuda":
            from pycuda import gpuarray  # type: ignore[import-not-found]

            return gpuarray.GPUArray(shape, buf.dtype, gpudata=buf.native if buf.native is not None else buf.ptr)
        if kind == "cupy":
            return _cupy_view(buf, shape)
        raise ValueError(f"a pycuda device buffer cannot be handed to the {kind!r} kernel backend")

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        raise ValueError("CUDA graphs are offered with the torch buffer layer (buffers='torch')")

    def free(self, buf: DeviceBuffer) -> None:
        if buf.native is not None:
            buf.native.free()
            buf.native = None

    def close(self) -> None:
        if not self._closed:
            with self.active():
                self.stream.synchronize()
            self.context.detach()
            self._closed = True


def make_buffers(kind: str = "auto", zero_copy: bool = False) -> Any:
    """The buffer layer: pycuda first on a Jetson, torch first on a desktop (see the module docstring)."""
    if kind not in ("auto", "torch", "pycuda"):
        raise ValueError(f"buffers must be auto, torch or pycuda, not {kind!r}")
    order = ("pycuda", "torch") if is_jetson() or zero_copy else ("torch", "pycuda")
    classes = {"pycuda": _PycudaBuffers, "torch": _TorchBuffers}
    errors = []
    for name in order:
        if kind not in ("auto", name):
            continue
        try:
            return classes[name](zero_copy=zero_copy)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - report every binding's reason together
            errors.append(f"{name}: {exc}")
    raise RuntimeError("no CUDA buffer layer available (" + "; ".join(errors) + ")")


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch
        return x.detach().float().cpu().numpy()
    if hasattr(x, "get"):  # cupy, pycuda GPUArray
        return np.asarray(x.get())
    return np.asarray(x)


class TensorRTRuntime:
    """``predict(batch) -> (image_score, anomaly_map)`` through a TensorRT engine, any batch size.

    ``buffers``: "auto", "torch", "pycuda", or a buffer-layer object. ``postprocess``: "auto" (the engine's
    own head if it has one, else the CUDA kernel), "graph" or "cuda". ``cuda_graph``: replay each batch
    size's enqueue as a CUDA graph. ``head``: a ready :class:`CudaAnomalyMap` (else one is made).
    Call :meth:`close` (or use ``with``) to free device memory before the CUDA context goes.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        buffers: str | Any = "auto",
        postprocess: str = "auto",
        *,
        cuda_graph: bool = False,
        zero_copy: bool = False,
        head: Any = None,
    ):
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"engine not found: {self.path}")
        if postprocess not in ("auto", "graph", "cuda"):
            raise ValueError(f"postprocess must be auto, graph or cuda, not {postprocess!r}")
        sidecar = read_sidecar(self.path)
        trt = import_tensorrt()
        self.notes = check_engine_matches(sidecar, trt.__version__, gpu_identity())
        for note in self.notes:
            warnings.warn(f"{self.path.name}: {note}", RuntimeWarning, stacklevel=2)
        meta = sidecar.get("metadata", {})
        try:
            self.info = ArtifactInfo.parse(meta, f"{self.path}'s sidecar", required=ENGINE_METADATA)
        except BundleError as exc:
            raise EngineMismatch(f"{exc}; rebuild the engine") from None
        self.preprocessing = self.info.preprocessing
        self.threshold = self.info.threshold
        self.score_stats = dict(self.info.score_stats)
        self.image_size = self.preprocessing.image_size
        self.precision = sidecar["precision"]
        self.sidecar = sidecar
        self.trt = trt
        self.buffers = make_buffers(buffers, zero_copy) if isinstance(buffers, str) else buffers
        try:
            self._lock = threading.Lock()
            with self.buffers.active():
                self._trt_runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive its engine
                engine = self._trt_runtime.deserialize_cuda_engine(self.path.read_bytes())
                if engine is None:
                    raise EngineMismatch(
                        f"TensorRT could not deserialise {self.path} (built for another GPU/TensorRT, or damaged): "
                        "rebuild it here from the ONNX"
                    )
                self.engine = engine
                self.context = engine.create_execution_context()
            self.io = engine_io(trt, self.engine)
            self._check_io()
            self.batch_range = tuple(engine_batch_range(self.io))
            first = self.io["images"]["shape"][0]
            self.static_batch: int | None = first if first > 0 else None
            outputs = {n for n, e in self.io.items() if e["mode"] == "output"}
            if postprocess == "auto":
                postprocess = "graph" if set(GRAPH_HEAD_OUTPUTS) <= outputs else "cuda"
            needed = set(GRAPH_HEAD_OUTPUTS) if postprocess == "graph" else {HEAD_BOUNDARY}
            if not needed <= outputs:
                raise EngineMismatch(
                    f"{self.path} has outputs {sorted(outputs)}; postprocess={postprocess!r} needs {sorted(needed)}"
                )
            if postprocess == "cuda":  # the kernel (or a given head, the same kernel) computes a max
                try:
                    check_cuda_postprocess(self.declared_head.image_score, str(self.path))
                except ValueError as exc:
                    raise EngineMismatch(str(exc)) from None
            self.postprocess = postprocess
            self._head = head
            if postprocess == "cuda" and head is None:
                from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

                grid = self.io[HEAD_BOUNDARY]["shape"][-2:]
                # cupy wraps any device pointer; without it the kernel must use the buffer layer's own binding
                kind = None if importlib.util.find_spec("cupy") else getattr(self.buffers, "name", None)
                backend = kind if kind in ("torch", "pycuda") else None
                sigma = self.declared_head.smoothing_sigma  # the graph's own, as exported
                self._head = CudaAnomalyMap(
                    tuple(grid), (self.image_size, self.image_size), sigma=sigma, backend=backend
                )
        except BaseException:
            if isinstance(buffers, str):
                self.buffers.close()  # release the CUDA context this constructor retained
            raise
        self.cuda_graph = cuda_graph
        self._bindings: dict[int, dict[str, DeviceBuffer]] = {}
        self._graphs: dict[int, Callable[[], None]] = {}
        self._bound: int | None = None

    @property
    def declared_head(self) -> HeadDeclaration:
        """What the exported graph's head does (image score, smoothing sigma), from the sidecar's ONNX metadata
        (parsed with the rest of it when the engine was opened)."""
        return self.info.declared_head

    @property
    def bundle_weights_sha256(self) -> str | None:
        """The weights' hash recorded in the ONNX the engine was built from (stale-engine check)."""
        return self.sidecar.get("bundle_weights_sha256") or self.sidecar.get("metadata", {}).get(
            "bundle_weights_sha256"
        )

    def _check_io(self) -> None:
        inputs = [n for n, e in self.io.items() if e["mode"] == "input"]
        if inputs != ["images"]:
            raise EngineMismatch(f"{self.path} has inputs {inputs}; expected ['images']")
        chw = self.io["images"]["shape"][1:]
        if chw != [3, self.image_size, self.image_size]:
            raise EngineMismatch(f"{self.path} takes {chw}, its metadata says 3x{self.image_size}x{self.image_size}")

    # ------------------------------------------------------------------------------------------ running
    def _bind(self, n: int) -> dict[str, DeviceBuffer]:
        """Buffers for batch ``n``: allocated on first use, addresses set only when the size changes."""
        if self._bound == n:
            return self._bindings[n]
        ctx = self.context
        shape = (n, 3, self.image_size, self.image_size)
        if not ctx.set_input_shape("images", shape):
            raise RuntimeError(f"the engine refused input shape {shape} (it accepts batch {self.batch_range})")
        if n not in self._bindings:
            self._bindings[n] = {
                name: self.buffers.alloc(tuple(int(d) for d in ctx.get_tensor_shape(name)), np.dtype(entry["dtype"]))
                for name, entry in self.io.items()
            }
        for name, buf in self._bindings[n].items():
            if not ctx.set_tensor_address(name, buf.ptr):
                raise RuntimeError(f"TensorRT refused the address of {name}")
        self._bound = n
        return self._bindings[n]

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.buffers.handle):
            raise RuntimeError("TensorRT execution failed")

    def _launch(self, n: int) -> None:
        if not self.cuda_graph:
            self._enqueue()
            return
        if n not in self._graphs:
            self._enqueue()  # one plain run first: TensorRT finishes its shape-dependent setup outside capture
            self.buffers.synchronize()
            self._graphs[n] = self.buffers.capture(self._enqueue)
        self._graphs[n]()

    def _run_chunk(self, chunk: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        valid = len(chunk)
        bufs = self._bind(n)
        images = bufs["images"]
        images.host[:valid] = chunk
        if n > valid:
            images.host[valid:] = 0.0
        self.buffers.upload(images)
        self._launch(n)
        if self.postprocess == "graph":
            for name in GRAPH_HEAD_OUTPUTS:
                self.buffers.download(bufs[name])
            self.buffers.synchronize()
            scores = bufs["image_score"].host.reshape(n, -1)[:valid, 0]
            maps = bufs["anomaly_map"].host.reshape(n, self.image_size, self.image_size)[:valid]
            return scores.astype(np.float32), maps.astype(np.float32)
        self.buffers.synchronize()  # the kernel may run on another stream: the engine must be done
        patch = bufs[HEAD_BOUNDARY]
        h, w = patch.shape[-2:]
        scores, maps = self._head(self.buffers.device_array(patch, self._head.backend, (n, h, w)))
        scores, maps = _to_numpy(scores), _to_numpy(maps)
        return scores.reshape(n)[:valid].astype(np.float32), maps[:valid].astype(np.float32)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = check_batch(batch, self.image_size)
        size = self.image_size
        if len(batch) == 0:
            return np.zeros((0,), np.float32), np.zeros((0, size, size), np.float32)
        smallest, _, largest = self.batch_range
        scores, maps = [], []
        with self._lock:
            if self.engine is None:
                raise RuntimeError("this TensorRTRuntime was closed")
            with self.buffers.active():
                for start in range(0, len(batch), largest):
                    chunk = batch[start : start + largest]
                    n = self.static_batch or max(len(chunk), smallest)
                    s, m = self._run_chunk(chunk, n)
                    scores.append(s)
                    maps.append(m)
        return np.concatenate(scores), np.concatenate(maps)

    def close(self) -> None:
        """Free device buffers, then the context and engine, then the CUDA binding -- in that order."""
        with self._lock:
            if self.engine is None:
                return
            with self.buffers.active():
                for bufs in self._bindings.values():
                    for buf in bufs.values():
                        self.buffers.free(buf)
                self._bindings.clear()
                self._graphs.clear()
                self.context = None
                self.engine = None
                self._trt_runtime = None
            self.buffers.close()

    def __enter__(self) -> TensorRTRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorRTRuntime({str(self.path)!r}, precision={self.precision}, batch={self.batch_range})"
