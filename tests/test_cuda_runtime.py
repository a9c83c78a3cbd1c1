"""The fused CUDA post-processing kernel against the torch head module (GPU), and the torch runtime's casts.

The torch head smooths with ``conv2d``; on sm_80+ cuDNN runs float32 convolutions in TF32 by default (and
matmuls where allowed), about 1e-3 relative error, ten times the tolerance these tests hold the kernel to. So
every GPU test that compares against torch ops runs under :func:`tf32_off` (both switches off, restored after).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from edge_ad.postprocess.gaussian import gaussian_taps
from edge_ad.postprocess.torch_ops import AnomalyMapHead

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@contextmanager
def tf32_off() -> Iterator[None]:
    """Exact float32 convolutions and matmuls (cuDNN and cuBLAS), restoring the previous switches after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def no_tf32() -> Iterator[None]:
    with tf32_off():
        yield


TORCH_COMPARISONS = ("test_kernel_matches_the_torch_head", "test_torch_runtime_with_kernel_equals_graph_head")


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize(("grid", "size", "batch"), [(28, 224, 4), (36, 288, 2), (20, 160, 1), (40, 20, 3)])
def test_kernel_matches_the_torch_head(grid: int, size: int, batch: int) -> None:
    from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

    patch = torch.randn(batch, grid, grid, device="cuda") * 3
    score, amap = CudaAnomalyMap((grid, grid), (size, size), backend="torch")(patch)
    ref_score, ref_map = AnomalyMapHead((size, size)).cuda()(patch[:, None])
    assert (amap - ref_map).abs().max().item() <= 1e-4
    assert torch.equal(score, ref_score)


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("no_tf32")
def test_torch_runtime_with_kernel_equals_graph_head() -> None:
    from edge_ad.models.simplenet.model import SimpleNet
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    torch.manual_seed(0)
    model = SimpleNet(image_size=224).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    s1, m1 = TorchRuntime(model, device="cuda").predict(x)
    s2, m2 = TorchRuntime(model, device="cuda", postprocess="cuda").predict(x)
    assert np.abs(m1 - m2).max() <= 1e-4 * max(1.0, np.abs(m1).max())
    assert np.allclose(s1, s2)


def test_kernel_postprocess_needs_a_cuda_device() -> None:
    from edge_ad.models.simplenet.model import SimpleNet
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    with pytest.raises(ValueError, match="CUDA device"):
        TorchRuntime(SimpleNet(image_size=64), device="cpu", postprocess="cuda")


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("no_tf32")
def test_kernel_runs_on_the_stream_its_input_was_made_on() -> None:
    """Inputs produced on a side stream: the kernel must queue behind them there, not on the default stream."""
    from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

    runner = CudaAnomalyMap((28, 28), (224, 224), backend="torch")
    side = torch.cuda.Stream()
    base = torch.randn(64, 28, 28, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keep the side stream busy so a default-stream launch would run first
        patch = base * 2.0 + 1.0
        score, amap = runner(patch)
        ref_score, ref_map = AnomalyMapHead((224, 224)).cuda()(patch[:, None])
    side.synchronize()
    assert torch.equal(score, ref_score)
    assert (amap - ref_map).abs().max().item() <= 1e-4


def test_tf32_off_turns_both_switches_off_and_restores_them() -> None:
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    try:
        with tf32_off():
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_gpu_comparisons_against_torch_ops_run_without_tf32() -> None:
    """Every GPU test here that holds the kernel to torch conv asks for the no_tf32 fixture (issue 11, defect 9)."""
    for name in TORCH_COMPARISONS:
        marks = getattr(globals()[name], "pytestmark", [])
        fixtures = {f for m in marks if m.name == "usefixtures" for f in m.args}
        assert "no_tf32" in fixtures, name
        assert any(m.name == "gpu" for m in marks), name


@pytest.fixture(scope="module")
def small_model():
    from edge_ad.models.simplenet.model import SimpleNet

    torch.manual_seed(0)
    return SimpleNet(image_size=64).eval()


def test_fp16_runtime_keeps_the_head_taps_exact(small_model) -> None:
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    rt = TorchRuntime(small_model, precision="fp16")
    taps = torch.from_numpy(gaussian_taps(4.0)).float()
    head = rt.graph.head
    assert head.kernel_h.dtype == torch.float32
    assert torch.equal(head.kernel_h.flatten(), taps) and torch.equal(head.kernel_v.flatten(), taps)
    assert next(rt.graph.backbone.parameters()).dtype == torch.float16


def test_fp16_runtime_does_not_cast_the_callers_model(small_model) -> None:
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    TorchRuntime(small_model, precision="fp16")
    after = small_model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    s1, m1 = TorchRuntime(small_model).predict(x)  # the model still runs in fp32 afterwards
    assert s1.dtype == np.float32 and m1.shape == (1, 64, 64)
