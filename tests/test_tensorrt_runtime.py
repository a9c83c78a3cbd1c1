"""TensorRTRuntime on engines from the fake TensorRT (``tests/fake_tensorrt.py``), whose execute_async_v3 really
computes the outputs into the bound "device" buffers; pycuda is ``tests/fake_pycuda.py`` (per-thread contexts)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_ad.artifacts import read_sidecar
from edge_ad.export import tensorrt_builder as tb
from edge_ad.runtimes import tensorrt_engine as te
from edge_ad.runtimes import tensorrt_runtime as tr
from tests import fake_pycuda
from tests.fake_tensorrt import FakeBuffers, FakeDeviceArray, make_tensorrt, tiny_edge_onnx

GPU = {"name": "FakeGPU", "compute_capability": "8.7", "source": "test"}


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    trt = make_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tb, "gpu_identity", lambda: dict(GPU))
    monkeypatch.setattr(tr, "gpu_identity", lambda: dict(GPU))
    return trt


def build(tmp_path: Path, batch: int | str, precision: str = "fp32", **options: object) -> tuple[Path, Path]:
    onnx = tiny_edge_onnx(tmp_path / f"model.{precision}.onnx", precision, batch=batch)
    return onnx, tb.build_engine(onnx, options=tb.BuildOptions(precision, **options))


def reference(onnx: Path, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime on the same graph, one image at a time (works for static and dynamic exports)."""
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    static = session.get_inputs()[0].shape[0]
    scores, maps = [], []
    for image in batch:
        feed = np.repeat(image[None], static if isinstance(static, int) else 1, axis=0)
        s, m = session.run(["image_score", "anomaly_map"], {"images": feed})
        scores.append(s[0])
        maps.append(m[0])
    return np.array(scores), np.array(maps)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 3, 4, 9])
def test_static_batch_engine_chunks_and_pads(fake_trt, tmp_path: Path, n: int) -> None:
    """Defect 1: a batch-4 engine given 1, 3 or 9 images returns exactly that many, and the right ones."""
    onnx, engine = build(tmp_path, batch=4)
    rt = tr.TensorRTRuntime(engine, buffers=FakeBuffers())
    scores, maps = rt.predict(images(n))
    ref_scores, ref_maps = reference(onnx, images(n))
    assert scores.shape == (n,) and maps.shape == (n, 32, 32)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps, ref_maps, rtol=1e-6, atol=1e-6)


def test_dynamic_engine_chunks_to_its_profile_max_and_pads_to_its_min(fake_trt, tmp_path: Path) -> None:
    onnx, engine = build(tmp_path, batch="batch", min_batch=2, opt_batch=2, max_batch=4)
    rt = tr.TensorRTRuntime(engine, buffers=FakeBuffers())
    assert rt.batch_range == (2, 2, 4) and rt.static_batch is None
    for n in (1, 5, 8):
        scores, _ = rt.predict(images(n, seed=n))
        np.testing.assert_allclose(scores, reference(onnx, images(n, seed=n))[0], rtol=1e-6, atol=1e-6)
    assert set(rt._bindings) == {2, 4}  # 1 -> padded to the profile's min 2; 5 -> 4 + 1 (padded to 2)


def test_a_shape_outside_the_profile_is_an_error_not_a_broadcast(fake_trt, tmp_path: Path) -> None:
    """Defect 1: set_input_shape's False is checked."""
    _, engine = build(tmp_path, batch="batch", max_batch=4)
    rt = tr.TensorRTRuntime(engine, buffers=FakeBuffers())
    rt.batch_range = (1, 1, 6)  # pretend the engine took more than its profile
    with pytest.raises(RuntimeError, match="refused input shape"):
        rt.predict(images(6))


def test_empty_batch_and_buffers_allocated_once_per_shape(fake_trt, tmp_path: Path) -> None:
    """Defect 11: an empty batch returns empty arrays; a repeated batch size reuses buffers and addresses."""
    _, engine = build(tmp_path, batch=2)
    buffers = FakeBuffers()
    rt = tr.TensorRTRuntime(engine, buffers=buffers)
    scores, maps = rt.predict(np.zeros((0, 3, 32, 32), np.float32))
    assert scores.shape == (0,) and maps.shape == (0, 32, 32)
    rt.predict(images(2))
    allocated = buffers.counts["alloc"]
    context = rt.context
    calls = []
    original = context.set_tensor_address
    context.set_tensor_address = lambda name, ptr: calls.append(name) or original(name, ptr)
    first, _ = rt.predict(images(2, seed=5))
    second, _ = rt.predict(images(2, seed=6))
    assert buffers.counts["alloc"] == allocated == 4 and calls == []
    assert not np.allclose(first, second)  # the reused buffers carry each call's own data


def test_cuda_graph_is_captured_once_per_batch_size(fake_trt, tmp_path: Path) -> None:
    onnx, engine = build(tmp_path, batch="batch", max_batch=4)
    buffers = FakeBuffers()
    rt = tr.TensorRTRuntime(engine, buffers=buffers, cuda_graph=True)
    for seed in range(3):
        scores, _ = rt.predict(images(4, seed))
        np.testing.assert_allclose(scores, reference(onnx, images(4, seed))[0], rtol=1e-6, atol=1e-6)
    assert buffers.counts["capture"] == 1


class FakeHead:
    """Stands in for CudaAnomalyMap: records what it was handed, computes on the "device" data."""

    backend = "fake"

    def __init__(self) -> None:
        self.inputs: list[object] = []

    def __call__(self, patch: object) -> tuple[np.ndarray, np.ndarray]:
        self.inputs.append(patch)
        data = patch.get()  # the kernel reads device memory itself
        maps = np.kron(data, np.ones((8, 8), np.float32))
        return maps.max(axis=(1, 2)), maps


def test_cuda_head_reads_patch_scores_on_the_device(fake_trt, tmp_path: Path) -> None:
    """Defect 8 (TensorRT part): patch scores go to the kernel as a device array, never downloaded."""
    _, engine = build(tmp_path, batch="batch", max_batch=4, head="cuda")
    buffers, head = FakeBuffers(), FakeHead()
    rt = tr.TensorRTRuntime(engine, buffers=buffers, head=head)
    assert rt.postprocess == "cuda"
    scores, maps = rt.predict(images(3))
    assert isinstance(head.inputs[0], FakeDeviceArray) and head.inputs[0].shape == (3, 4, 4)
    assert buffers.counts["download"] == 0
    assert maps.shape == (3, 32, 32) and np.allclose(scores, maps.max(axis=(1, 2)))


def test_runtime_exposes_the_weights_hash_and_closes(fake_trt, tmp_path: Path) -> None:
    _, engine = build(tmp_path, batch=1)
    buffers = FakeBuffers()
    with tr.TensorRTRuntime(engine, buffers=buffers) as rt:
        assert rt.bundle_weights_sha256 == "ab" * 32
        rt.predict(images(1))
    assert buffers.closed and buffers.counts["free"] == 4
    with pytest.raises(RuntimeError, match="closed"):
        rt.predict(images(1))


def test_pycuda_runtime_predicts_from_a_worker_thread_and_closes(fake_trt, tmp_path: Path, monkeypatch) -> None:
    """Defect 6: the primary context is pushed around each call, so a server's worker thread can predict."""
    drv = fake_pycuda.install(monkeypatch)
    onnx, engine = build(tmp_path, batch="batch", max_batch=4)
    rt = tr.TensorRTRuntime(engine, buffers="pycuda")
    assert drv.Context.get_current() is None  # nothing left current in the loading thread
    main, _ = rt.predict(images(3))
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            result["scores"] = rt.predict(images(3))[0]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=worker, name="serve-worker")
    thread.start()
    thread.join()
    assert "error" not in result, result.get("error")
    np.testing.assert_allclose(result["scores"], main)
    np.testing.assert_allclose(main, reference(onnx, images(3))[0], rtol=1e-6, atol=1e-6)
    context = rt.buffers.context
    rt.close()
    assert not context.alive  # the retained primary context was released after the engine


def test_pycuda_zero_copy_maps_host_memory(fake_trt, tmp_path: Path, monkeypatch) -> None:
    drv = fake_pycuda.install(monkeypatch)
    copies = []
    monkeypatch.setattr(drv, "memcpy_htod_async", lambda *a: copies.append(a))
    onnx, engine = build(tmp_path, batch=2)
    rt = tr.TensorRTRuntime(engine, buffers="pycuda", zero_copy=True)
    scores, _ = rt.predict(images(2))
    np.testing.assert_allclose(scores, reference(onnx, images(2))[0], rtol=1e-6, atol=1e-6)
    assert copies == []


def test_auto_buffers_prefer_torch_on_a_desktop_and_pycuda_on_a_jetson(monkeypatch) -> None:
    """Defect 11: the README's rule (torch on a desktop, pycuda on a Jetson), not pycuda everywhere."""
    made = []

    def stub(name: str) -> type:
        class Stub:
            def __init__(self, zero_copy: bool = False) -> None:
                made.append(name)

        return Stub

    monkeypatch.setattr(tr, "_TorchBuffers", stub("torch"))
    monkeypatch.setattr(tr, "_PycudaBuffers", stub("pycuda"))
    monkeypatch.setattr(tr, "is_jetson", lambda: False)
    tr.make_buffers("auto")
    monkeypatch.setattr(tr, "is_jetson", lambda: True)
    tr.make_buffers("auto")
    assert made == ["torch", "pycuda"]


def test_gpu_identity_without_cuda_bindings_comes_from_nvidia_smi_or_the_device_tree(tmp_path, monkeypatch) -> None:
    """Defect 5: with TensorRT but no cuda-python/pycuda the GPU is still identified."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 9.0'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}")
    monkeypatch.setattr(te, "_from_cuda_python", lambda: None)
    monkeypatch.setattr(te, "_from_pycuda", lambda: None)
    sources = [(name, getattr(te, fn.__name__)) for name, fn in te.IDENTITY_SOURCES]
    monkeypatch.setattr(te, "IDENTITY_SOURCES", tuple(sources))
    assert te.gpu_identity() == {"name": "NVIDIA H200", "compute_capability": "9.0", "source": "nvidia-smi"}
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert te._from_jetson(model) == {"name": "NVIDIA Jetson AGX Orin Developer Kit", "compute_capability": "8.7"}


def test_unknown_identity_warns_and_a_real_mismatch_names_every_difference() -> None:
    """Defect 5: 'unknown' never refuses by itself; a refusal says what differs."""
    built = {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7", "source": "pycuda"}}
    unknown = {"name": "unknown", "compute_capability": "unknown", "source": "none"}
    notes = tr.check_engine_matches(built, "10.3.0", unknown)
    assert notes and "not fully known" in notes[0]
    assert tr.check_engine_matches(built, "10.3.0", {"name": "Orin", "compute_capability": "8.7"}) == []
    with pytest.raises(tr.EngineMismatch) as info:
        tr.check_engine_matches(built, "10.7.0", {"name": "NVIDIA H200", "compute_capability": "9.0"})
    message = str(info.value)
    assert "TensorRT 10.3.0 built it, this machine has 10.7.0" in message
    assert "Orin (sm 8.7)" in message and "NVIDIA H200 (sm 9.0)" in message


def test_engine_from_another_tensorrt_is_refused_before_deserialising(fake_trt, tmp_path: Path, monkeypatch) -> None:
    _, engine = build(tmp_path, batch=1)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(version="10.7.0"))
    with pytest.raises(tr.EngineMismatch, match="rebuild it here"):
        tr.TensorRTRuntime(engine, buffers=FakeBuffers())


def test_verification_records_the_largest_differences(fake_trt, tmp_path: Path) -> None:
    """Verified engines: engine vs onnxruntime on the same images, written into the sidecar."""
    from edge_ad.export.onnx_info import read_onnx_info
    from edge_ad.export.tensorrt_verify import verification_images, verify_engine

    onnx, engine = build(tmp_path, batch="batch", max_batch=4)
    batch, source = verification_images(read_onnx_info(onnx), None, 5)
    assert batch.shape == (5, 3, 32, 32) and "seeded random" in source
    rt = tr.TensorRTRuntime(engine, buffers=FakeBuffers())
    result = verify_engine(engine, onnx, batch, source, runtime=rt)
    assert result["within_tolerance"] and result["max_abs_map_diff"] < 1e-5
    assert read_sidecar(engine)["verification"]["images"] == source
    rt.predict = lambda x: (np.zeros(len(x), np.float32), np.zeros((len(x), 32, 32), np.float32))
    assert not verify_engine(engine, onnx, batch, source, runtime=rt)["within_tolerance"]


def test_a_mean_scored_graph_refuses_the_cuda_kernel_in_the_builder_and_the_runtime(fake_trt, tmp_path: Path) -> None:
    """The kernel computes the map's max; a graph declaring a mean image score (NSA) must keep its own head."""
    onnx = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch="batch", metadata={"image_score": "mean"})
    with pytest.raises(ValueError, match="mean of its map"):
        tb.build_engine(onnx, options=tb.BuildOptions("fp32", max_batch=4, head="cuda"))
    engine = tb.build_engine(onnx, options=tb.BuildOptions("fp32", max_batch=4))  # its own head: fine
    assert tr.TensorRTRuntime(engine, buffers=FakeBuffers()).postprocess == "graph"
    with pytest.raises(tr.EngineMismatch, match="mean of its map"):
        tr.TensorRTRuntime(engine, buffers=FakeBuffers(), postprocess="cuda")
    max_onnx = tiny_edge_onnx(tmp_path / "max" / "model.fp32.onnx", "fp32", batch="batch")  # SimpleNet-like: allowed
    assert tb.build_engine(max_onnx, options=tb.BuildOptions("fp32", max_batch=4, head="cuda")).is_file()


@pytest.mark.parametrize("sigma", ["2.0", None])
def test_cuda_head_smooths_with_the_sigma_the_onnx_declares(
    fake_trt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigma: str | None
) -> None:
    """The kernel is made with the graph's declared smoothing sigma (4, SimpleNet's, for exports without the key);
    a numpy stand-in computes what the real kernel is held to (tests/test_cuda_kernel.py)."""
    from edge_ad.bench.head import head_of
    from edge_ad.postprocess.image_score import HeadDeclaration
    from edge_ad.postprocess.numpy_ops import postprocess
    from edge_ad.runtimes import cuda_postprocess

    class NumpyKernel:
        backend = "fake"

        def __init__(self, patch_hw: tuple[int, int], out_hw: tuple[int, int], sigma: float = 4.0, **_: object):
            self.out_hw, self.sigma = out_hw, sigma

        def __call__(self, patch: FakeDeviceArray) -> tuple[np.ndarray, np.ndarray]:
            return postprocess(patch.get(), self.out_hw, self.sigma)

    monkeypatch.setattr(cuda_postprocess, "CudaAnomalyMap", NumpyKernel)
    metadata = {} if sigma is None else {"smoothing_sigma": sigma}
    onnx = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch=2, metadata=metadata)
    engine = tb.build_engine(onnx, options=tb.BuildOptions("fp32", head="cuda"))
    rt = tr.TensorRTRuntime(engine, buffers=FakeBuffers())
    assert rt.postprocess == "cuda" and rt._head.sigma == (4.0 if sigma is None else 2.0)
    assert head_of(rt) == rt.declared_head == HeadDeclaration("max", rt._head.sigma)  # what bench times
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    x = images(2)
    (patch,) = session.run(["patch_scores"], {"images": x})
    scores, maps = rt.predict(x)
    want_scores, want_maps = postprocess(patch, (32, 32), rt._head.sigma)
    np.testing.assert_allclose(maps, want_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
    if sigma is not None:  # and it is not the default's map
        assert not np.allclose(maps, postprocess(patch, (32, 32), 4.0)[1], atol=1e-4)
