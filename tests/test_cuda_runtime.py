"""GPU-only: the fused CUDA post-processing kernel against its CPU reference, the torch head module."""

from __future__ import annotations

import pytest
import torch

from edge_ad.postprocess.torch_ops import AnomalyMapHead

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("grid", "size", "batch"), [(28, 224, 4), (36, 288, 2), (20, 160, 1)])
def test_kernel_matches_the_torch_head(grid: int, size: int, batch: int) -> None:
    from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

    patch = torch.randn(batch, grid, grid, device="cuda") * 3
    score, amap = CudaAnomalyMap((grid, grid), (size, size), backend="torch")(patch)
    ref_score, ref_map = AnomalyMapHead((size, size)).cuda()(patch[:, None])
    assert (amap - ref_map).abs().max().item() <= 1e-4
    assert torch.equal(score, ref_score)


@pytest.mark.gpu
@cuda
def test_torch_runtime_with_kernel_equals_graph_head() -> None:
    import numpy as np

    from edge_ad.models.simplenet import SimpleNet
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    torch.manual_seed(0)
    model = SimpleNet(image_size=224).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    s1, m1 = TorchRuntime(model, device="cuda").predict(x)
    s2, m2 = TorchRuntime(model, device="cuda", postprocess="cuda").predict(x)
    assert np.abs(m1 - m2).max() <= 1e-4 * max(1.0, np.abs(m1).max())
    assert np.allclose(s1, s2)


def test_kernel_postprocess_needs_a_cuda_device() -> None:
    from edge_ad.models.simplenet import SimpleNet
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    with pytest.raises(ValueError, match="CUDA device"):
        TorchRuntime(SimpleNet(image_size=64), device="cpu", postprocess="cuda")
