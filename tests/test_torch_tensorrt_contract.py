"""The torch-tensorrt backend against a fake Torch-TensorRT that checks its arguments as the real one does.

On the CPU the compiled module is the fused graph itself, so results can be held to the torch runtime.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ad.models.simplenet.model import SimpleNet
from edge_ad.runtimes import torch_tensorrt_runtime as ttr
from edge_ad.runtimes.torch_runtime import TorchRuntime
from tests import fake_torch_tensorrt
from tests.layering import assert_runs_without


@pytest.fixture(scope="module")
def model() -> SimpleNet:
    torch.manual_seed(0)
    return SimpleNet(image_size=64).eval()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    def install(version: str = "2.9.0"):
        mod = fake_torch_tensorrt.make(version)
        monkeypatch.setitem(sys.modules, "torch_tensorrt", mod)
        monkeypatch.setattr(ttr, "_require_cuda", lambda device: None)  # the fake runs on the CPU
        return mod

    return install


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


def test_without_torch_tensorrt_the_error_names_the_extra(model: SimpleNet) -> None:
    if "torch_tensorrt" in sys.modules or importlib.util.find_spec("torch_tensorrt"):
        pytest.skip("torch_tensorrt is installed here")
    with pytest.raises(ttr.TorchTensorRTUnavailable, match=r"\[torch-tensorrt\] extra"):
        ttr.TorchTensorRTRuntime(model)


def test_needs_a_cuda_device(model: SimpleNet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake_torch_tensorrt.make())
    with pytest.raises(ValueError, match="CUDA device"):
        ttr.TorchTensorRTRuntime(model, device="cpu")


def test_fp32_compiles_one_dynamic_profile_and_chunks_to_it(fake, model: SimpleNet) -> None:
    mod = fake()
    rt = ttr.TorchTensorRTRuntime(model, precision="fp32", device="cpu", max_batch=2)
    (call,) = mod.calls
    assert call["ir"] == "dynamo" and call["use_explicit_typing"] is True and rt.typing == "explicit"
    assert "enabled_precisions" not in call
    (spec,) = rt.compiled.spec
    assert spec.shape == {"min_shape": (1, 3, 64, 64), "opt_shape": (1, 3, 64, 64), "max_shape": (2, 3, 64, 64)}
    x = _batch(5)
    score, amap = rt.predict(x)
    assert rt.compiled.batches == [2, 2, 1]  # never outside the profile
    ref_score, ref_map = TorchRuntime(model).predict(x)
    np.testing.assert_allclose(score, ref_score, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(amap, ref_map, rtol=1e-5, atol=1e-5)
    empty_score, empty_map = rt.predict(x[:0])
    assert empty_score.shape == (0,) and empty_map.shape == (0, 64, 64)


def test_fp16_keeps_the_head_in_fp32_and_leaves_the_model_alone(fake, model: SimpleNet) -> None:
    fake()
    rt = ttr.TorchTensorRTRuntime(model, precision="fp16", device="cpu", max_batch=4)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not cast
    assert next(rt.module.graph.backbone.parameters()).dtype == torch.float16
    assert rt.module.graph.head.kernel_h.dtype == torch.float32
    x = _batch(2, seed=1)
    score, amap = rt.predict(x)
    assert score.dtype == np.float32 and amap.shape == (2, 64, 64)
    ref_score, _ = TorchRuntime(model).predict(x)
    assert np.abs(score - ref_score).max() <= 0.05 * max(1.0, np.abs(ref_score).max())


def test_release_without_explicit_typing_gets_fp16_precisions(fake, model: SimpleNet) -> None:
    mod = fake("2.5.0")
    rt = ttr.TorchTensorRTRuntime(model, precision="fp16", device="cpu")
    (call,) = mod.calls
    assert call["enabled_precisions"] == {torch.float16} and "use_explicit_typing" not in call
    assert rt.typing == "weak"


def test_save_writes_an_exported_program_atomically(fake, model: SimpleNet, tmp_path: Path) -> None:
    fake()
    rt = ttr.TorchTensorRTRuntime(model, precision="fp32", device="cpu")
    out = rt.save(tmp_path / "engines" / "model.fp32.ep")
    assert json.loads(out.read_text()) == {"format": "exported_program", "inputs": [[1, 3, 64, 64]]}
    assert [p.name for p in out.parent.iterdir()] == ["model.fp32.ep"]  # no temporary left behind


def test_bench_reaches_the_backend(tiny_bundle: Path) -> None:
    from edge_ad.bench.run import run_bench

    report = run_bench(tiny_bundle, backends=["torch-tensorrt"], batches=[1], warmup=0, iters=1, reference=False)
    if "torch_tensorrt" not in sys.modules and importlib.util.find_spec("torch_tensorrt") is None:
        (skipped,) = report["not_available"]  # not installed: listed with the extra to install, never a row
        assert report["rows"] == [] and "[torch-tensorrt] extra" in skipped["reason"]
    else:
        assert report["rows"][0]["backend"] == "torch-tensorrt"


def test_module_import_does_not_load_torch_tensorrt() -> None:
    assert_runs_without("import edge_ad.runtimes.torch_tensorrt_runtime", ["torch_tensorrt"])
