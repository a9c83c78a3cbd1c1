"""TensorRT backend: runs a serialised engine; refuses one built for another GPU or TensorRT version.

Device memory goes through a small buffer layer: pycuda on a Jetson (built there against JetPack's CUDA), or
torch CUDA tensors on a desktop that has torch anyway. Neither is imported unless it is the one used, so the
module itself needs no torch. Post-processing runs inside the engine (the exported graph includes it), or,
with ``postprocess="cuda"``, in the fused CUDA kernel from the engine's ``patch_scores`` output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad import BUNDLE_FORMAT_VERSION
from edge_ad.data.preprocess import Preprocessing
from edge_ad.export.tensorrt_builder import gpu_identity, import_tensorrt, read_sidecar
from edge_ad.runtimes.base import check_batch

OUTPUTS = ("image_score", "anomaly_map", "patch_scores")


class EngineMismatch(RuntimeError):
    """The engine was built for another GPU or TensorRT version."""


class _TorchBuffers:
    """Device tensors from torch (desktop)."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        t = {np.dtype(np.float32): self.torch.float32, np.dtype(np.float16): self.torch.float16}[np.dtype(dtype)]
        return self.torch.empty(shape, dtype=t, device="cuda")

    @staticmethod
    def ptr(buf: Any) -> int:
        return int(buf.data_ptr())

    def upload(self, buf: Any, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.copy_(self.torch.from_numpy(host).to(buf.dtype), non_blocking=False)

    def download(self, buf: Any) -> np.ndarray:
        self.stream.synchronize()
        return buf.float().cpu().numpy()

    @property
    def handle(self) -> int:
        return int(self.stream.cuda_stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


class _PycudaBuffers:
    """Device allocations from pycuda (Jetson)."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # type: ignore[import-not-found]  # noqa: F401
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        self.cuda = cuda
        self.stream = cuda.Stream()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        host = self.cuda.pagelocked_empty(shape, dtype)
        return (self.cuda.mem_alloc(host.nbytes), host)

    @staticmethod
    def ptr(buf: Any) -> int:
        return int(buf[0])

    def upload(self, buf: Any, host: np.ndarray) -> None:
        dev, pinned = buf
        np.copyto(pinned, host.astype(pinned.dtype, copy=False))
        self.cuda.memcpy_htod_async(dev, pinned, self.stream)

    def download(self, buf: Any) -> np.ndarray:
        dev, pinned = buf
        self.cuda.memcpy_dtoh_async(pinned, dev, self.stream)
        self.stream.synchronize()
        return pinned.astype(np.float32)

    @property
    def handle(self) -> int:
        return int(self.stream.handle)

    def synchronize(self) -> None:
        self.stream.synchronize()


def make_buffers(kind: str = "auto") -> _TorchBuffers | _PycudaBuffers:
    errors = []
    for name, cls in (("pycuda", _PycudaBuffers), ("torch", _TorchBuffers)):
        if kind not in ("auto", name):
            continue
        try:
            return cls()
        except Exception as exc:  # noqa: BLE001 - report every binding's reason together
            errors.append(f"{name}: {exc}")
    raise RuntimeError("no CUDA buffer layer available (" + "; ".join(errors) + ")")


class TensorRTRuntime:
    """``predict(batch) -> (image_score, anomaly_map)`` through a TensorRT engine."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, buffers: str = "auto", postprocess: str = "graph"):
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"engine not found: {engine_path}")
        trt = import_tensorrt()
        sidecar = read_sidecar(engine_path)
        check_engine_matches(sidecar, trt.__version__, gpu_identity())
        meta = sidecar.get("metadata", {})
        if int(meta.get("bundle_format_version", -1)) != BUNDLE_FORMAT_VERSION:
            raise EngineMismatch(f"{engine_path} was exported from bundle format {meta.get('bundle_format_version')}")
        self.preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
        self.image_size = self.preprocessing.image_size
        self.threshold = float(meta["threshold"])
        self.score_stats = json.loads(meta.get("score_stats", "{}"))
        self.precision = sidecar["precision"]
        self.postprocess = postprocess
        self.buffers = make_buffers(buffers)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"TensorRT could not deserialise {engine_path}")
        self.context = self.engine.create_execution_context()
        self.trt = trt
        self.max_batch = int(sidecar.get("batch", [1, 1, 1])[-1])
        self._head = None
        if postprocess == "cuda":
            from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

            grid = self.engine.get_tensor_shape("patch_scores")[-2:]
            self._head = CudaAnomalyMap(tuple(grid), (self.image_size, self.image_size))

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        ctx, trt = self.context, self.trt
        ctx.set_input_shape("images", batch.shape)
        bufs = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            bufs[name] = self.buffers.empty(shape, dtype)
            ctx.set_tensor_address(name, self.buffers.ptr(bufs[name]))
        self.buffers.upload(bufs["images"], batch)
        if not ctx.execute_async_v3(self.buffers.handle):
            raise RuntimeError("TensorRT execution failed")
        return {name: self.buffers.download(bufs[name]) for name in OUTPUTS if name in bufs}

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = check_batch(batch, self.image_size)
        scores, maps = [], []
        for start in range(0, len(batch), self.max_batch):
            out = self._run(batch[start : start + self.max_batch])
            if self._head is not None:
                s, m = self._head(
                    out["patch_scores"].reshape(len(out["patch_scores"]), *out["patch_scores"].shape[-2:])
                )
            else:
                s, m = out["image_score"], out["anomaly_map"]
            scores.append(np.asarray(s).reshape(-1))
            maps.append(np.asarray(m))
        return np.concatenate(scores), np.concatenate(maps)


def check_engine_matches(sidecar: dict[str, Any], trt_version: str, gpu: dict[str, Any]) -> None:
    """Engines do not move between TensorRT versions or GPUs: refuse with a message that says what to do."""
    built_trt = sidecar.get("tensorrt_version")
    if built_trt != trt_version:
        raise EngineMismatch(
            f"engine built with TensorRT {built_trt}, this machine has {trt_version}: rebuild it here from the ONNX"
        )
    built_gpu = sidecar.get("gpu", {})
    if built_gpu.get("name") != gpu.get("name") or built_gpu.get("compute_capability") != gpu.get("compute_capability"):
        raise EngineMismatch(
            f"engine built for {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')}), this GPU is "
            f"{gpu.get('name')} (sm {gpu.get('compute_capability')}): rebuild it here from the ONNX"
        )
