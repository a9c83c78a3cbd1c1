"""The ``fake_tensorrt`` step of the prepared GPU check (:mod:`edge_ad.benchmarks.gpu_check`): the fake TensorRT
engine of ``tests/fake_tensorrt.py`` driven through the real buffer layers (torch, pycuda) on the GPU, its memory
bridged to real device pointers with ``cudaMemcpy``. Imported only once a GPU is known to be there."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path
from typing import Any


class _DeviceView:
    """Memory of ``tests/fake_tensorrt.py`` extended to real device pointers: reads copy device -> host,
    writes (``view[...] = value``) copy host -> device, after the device has finished queued work."""

    def __init__(self, fake_memory: Any) -> None:
        import torch

        self.fake, self.torch = fake_memory, torch
        self.lib = ctypes.CDLL(_cudart_path())
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.device_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fake, name)

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> Any:
        import numpy as np

        if int(ptr) in self.fake.blocks:
            return self.fake.view(ptr, shape, dtype)
        self.torch.cuda.synchronize()
        host = np.empty(shape, dtype)
        rc = self.lib.cudaMemcpy(host.ctypes.data, int(ptr), host.nbytes, 2)  # cudaMemcpyDeviceToHost
        if rc != 0:
            raise RuntimeError(f"cudaMemcpy device->host from {int(ptr):#x} failed ({rc})")
        self.device_reads += 1
        return _WriteBack(host, int(ptr), self.lib)


def _WriteBack(host: Any, ptr: int, lib: Any) -> Any:  # noqa: N802 - a constructor of an ndarray subclass
    import numpy as np

    class WriteBack(np.ndarray):
        def __setitem__(self, key: Any, value: Any) -> None:
            super().__setitem__(key, value)
            data = np.ascontiguousarray(self)
            rc = lib.cudaMemcpy(ptr, data.ctypes.data, data.nbytes, 1)  # cudaMemcpyHostToDevice
            if rc != 0:
                raise RuntimeError(f"cudaMemcpy host->device to {ptr:#x} failed ({rc})")

    return host.view(WriteBack)


def _cudart_path() -> str:
    import ctypes.util

    candidates = [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    try:  # the runtime torch ships with (nvidia-cuda-runtime wheel)
        import nvidia.cuda_runtime

        for folder in nvidia.cuda_runtime.__path__:
            candidates += [str(p) for p in sorted(Path(folder, "lib").glob("libcudart.so*"))]
    except ImportError:
        pass
    for name in filter(None, candidates):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    raise RuntimeError("no libcudart to copy device memory with")


def fake_tensorrt_step(out: Path, log: Path, root: Path) -> dict[str, Any]:
    """``gpu_check``'s ``fake_tensorrt`` step: build the fake engine (graph and CUDA head), run it through the torch and
    pycuda buffer layers on real device memory, compare with onnxruntime; results into ``log``."""
    fake_path = root / "tests" / "fake_tensorrt.py"
    if not fake_path.is_file():
        return {"status": "skipped", "why": "tests/fake_tensorrt.py is not in this checkout"}
    import numpy as np
    import onnxruntime as ort

    from edge_ad.export import tensorrt_builder as tb
    from edge_ad.postprocess.numpy_ops import postprocess
    from edge_ad.runtimes import tensorrt_runtime as tr
    from tests import fake_tensorrt as ft

    sys.modules["tensorrt"] = ft.make_tensorrt()
    gpu = {"name": "FakeGPU", "compute_capability": "8.7", "source": "gpu_check"}
    tb.gpu_identity = tr.gpu_identity = lambda: dict(gpu)
    bridge = _DeviceView(ft.MEMORY)
    ft.MEMORY = bridge
    work = out / "fake_tensorrt"
    work.mkdir(exist_ok=True)
    images = np.random.default_rng(0).standard_normal((9, 3, 32, 32)).astype(np.float32)
    results: dict[str, Any] = {}
    failed = False
    for head in ("graph", "cuda"):
        (work / head).mkdir(exist_ok=True)
        onnx = ft.tiny_edge_onnx(work / head / "model.fp32.onnx", "fp32", batch="batch")
        engine = tb.build_engine(onnx, options=tb.BuildOptions("fp32", max_batch=4, head=head))
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        ref_s, ref_m, ref_p = session.run(["image_score", "anomaly_map", "patch_scores"], {"images": images})
        if head == "cuda":
            ref_s, ref_m = postprocess(ref_p, (32, 32))
        for kind in ("torch", "pycuda"):
            key = f"{kind}_buffers_{head}_head"
            try:
                rt = tr.TensorRTRuntime(engine, buffers=kind)
            except Exception as exc:  # noqa: BLE001 - a binding missing here is a skip, not a failure
                results[key] = {"status": "skipped", "why": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            reads = bridge.device_reads
            scores, maps = rt.predict(images)
            entry = {
                "postprocess": getattr(rt, "postprocess", None),
                "device_reads": bridge.device_reads - reads,
                "score_max_abs": float(np.abs(scores - ref_s).max()),
                "map_max_abs": float(np.abs(maps - ref_m).max()),
                "shapes_ok": scores.shape == (9,) and maps.shape == (9, 32, 32),
            }
            entry["status"] = "ok" if entry["shapes_ok"] and entry["map_max_abs"] <= 1e-4 and entry[
                "device_reads"] > 0 else "failed"  # fmt: skip
            failed |= entry["status"] == "failed"
            results[key] = entry
            if hasattr(rt, "close"):
                rt.close()
    with log.open("a") as fh:
        fh.write(json.dumps(results, indent=2) + "\n")
    ran = [v for v in results.values() if v.get("status") != "skipped"]
    return {"status": "failed" if failed else ("ok" if ran else "skipped"), "runs": results}
