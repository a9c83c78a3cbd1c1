"""The TensorRT builder against a recording fake of the ``tensorrt`` module (TensorRT cannot be installed here).

These tests fail if the builder stops setting the FP16 flag on the TensorRT 10.x fallback, the strongly typed
flag when the ONNX carries the precision, the workspace limit, the optimisation profile or the timing cache.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edge_ad.export import tensorrt_builder as tb
from edge_ad.runtimes.tensorrt_runtime import EngineMismatch, check_engine_matches
from tests.layering import assert_runs_without


def fake_tensorrt(version: str = "10.3.0", has_fp16_flag: bool = True) -> tuple[types.ModuleType, dict]:
    calls: dict = {"flags": [], "pool": [], "profiles": [], "network_flags": None, "cache_in": None}

    class Enum:
        def __init__(self, **members: int) -> None:
            for k, v in members.items():
                setattr(self, k, v)

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=1)
    trt.MemoryPoolType = Enum(WORKSPACE="workspace")
    trt.BuilderFlag = Enum(FP16="fp16", INT8="int8") if has_fp16_flag else Enum()

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Input:
        name = "images"

        def __init__(self, shape: tuple) -> None:
            self.shape = shape

    class Network:
        def __init__(self) -> None:
            self.input = None

        def get_input(self, i: int) -> Input:
            return self.input

    class Parser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            model = onnx.load_from_string(data)
            dims = model.graph.input[0].type.tensor_type.shape.dim
            self.network.input = Input(tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims))
            return True

    class Profile:
        def set_shape(self, name: str, mn: tuple, opt: tuple, mx: tuple) -> None:
            calls["profiles"].append((name, mn, opt, mx))

    class Cache:
        def serialize(self) -> bytes:
            return b"TIMING"

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls["pool"].append((pool, size))

        def set_flag(self, flag: str) -> None:
            calls["flags"].append(flag)

        def add_optimization_profile(self, profile: Profile) -> None:
            calls["profile_added"] = True

        def create_timing_cache(self, data: bytes) -> Cache:
            calls["cache_in"] = data
            return Cache()

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None:
            calls["cache_set"] = True

        def get_timing_cache(self) -> Cache:
            return Cache()

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            return b"ENGINE"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    return trt, calls


def tiny_onnx(path: Path, precision: str, batch: int | str = 1) -> Path:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 64, 64])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 3, 64, 64])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y]))
    onnx.helper.set_model_props(model, {"precision": precision, "bundle_format_version": "1"})
    onnx.save(model, str(path))
    return path


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch):
    def install(**kwargs: object) -> dict:
        trt, calls = fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return calls

    return install


def test_fp32_onnx_as_fp16_on_trt10_sets_the_fp16_flag_and_the_memory_limit(use_fake, tmp_path: Path) -> None:
    calls = use_fake(version="10.3.0")
    onnx_path = tiny_onnx(tmp_path / "model.fp32.onnx", "fp32")
    engine = tb.build_engine(onnx_path, tmp_path / "m.engine", tb.BuildOptions(precision="fp16", workspace_mib=512))
    assert engine.read_bytes() == b"ENGINE"
    assert "fp16" in calls["flags"]
    assert calls["network_flags"] == 0  # weakly typed: the flag decides the precision
    assert calls["pool"] == [("workspace", 512 << 20)]
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert (
        sidecar["tensorrt_version"] == "10.3.0" and sidecar["precision"] == "fp16" and sidecar["typing"] == "weak-fp16"
    )


def test_fp16_onnx_builds_strongly_typed_without_precision_flags(use_fake, tmp_path: Path) -> None:
    calls = use_fake(version="10.3.0")
    onnx_path = tiny_onnx(tmp_path / "model.fp16.onnx", "fp16")
    tb.build_engine(onnx_path, options=tb.BuildOptions(precision="fp16"))
    assert calls["network_flags"] == 1 << 1
    assert calls["flags"] == []


def test_dynamic_batch_gets_an_optimisation_profile(use_fake, tmp_path: Path) -> None:
    calls = use_fake()
    onnx_path = tiny_onnx(tmp_path / "model.fp32.onnx", "fp32", batch="N")
    tb.build_engine(onnx_path, options=tb.BuildOptions(precision="fp32", min_batch=1, opt_batch=4, max_batch=8))
    assert calls["profiles"] == [("images", (1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))]
    assert calls.get("profile_added")


def test_static_batch_has_no_profile_and_timing_cache_round_trips(use_fake, tmp_path: Path) -> None:
    calls = use_fake()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"OLD")
    tb.build_engine(tiny_onnx(tmp_path / "m.onnx", "fp32"), options=tb.BuildOptions("fp32", timing_cache=cache))
    assert calls["profiles"] == [] and calls["cache_in"] == b"OLD" and calls.get("cache_set")
    assert cache.read_bytes() == b"TIMING"


def test_trt11_refuses_the_weakly_typed_fallback(use_fake, tmp_path: Path) -> None:
    use_fake(version="11.0.0", has_fp16_flag=False)
    with pytest.raises(ValueError, match="strongly typed networks only"):
        tb.build_engine(tiny_onnx(tmp_path / "m.onnx", "fp32"), options=tb.BuildOptions("fp16"))


def test_int8_needs_a_qdq_onnx(use_fake, tmp_path: Path) -> None:
    use_fake()
    with pytest.raises(ValueError, match="--precision int8"):
        tb.build_engine(tiny_onnx(tmp_path / "m.onnx", "fp32"), options=tb.BuildOptions("int8"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_without_tensorrt_the_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(tb.TensorRTUnavailable, match="JetPack"):
        tb.build_engine(tiny_onnx(tmp_path / "m.onnx", "fp32"))


def test_runtime_refuses_engines_from_elsewhere() -> None:
    sidecar = {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin", "compute_capability": "8.7"}}
    check_engine_matches(sidecar, "10.3.0", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(EngineMismatch, match="TensorRT 10.3.0"):
        check_engine_matches(sidecar, "10.7.0", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(EngineMismatch, match="rebuild it here"):
        check_engine_matches(sidecar, "10.3.0", {"name": "H200", "compute_capability": "9.0"})


def test_trtexec_line_matches_the_builder_policy(tmp_path: Path) -> None:
    weak = tb.trtexec_command(tmp_path / "m.onnx", tb.BuildOptions("fp16"), onnx_precision="fp32", image_size=224)
    assert "--fp16" in weak and "--stronglyTyped" not in weak and "--memPoolSize=workspace:1024M" in weak
    strong = tb.trtexec_command(tmp_path / "m.onnx", tb.BuildOptions("fp16", max_batch=8), onnx_precision="fp16")
    assert "--stronglyTyped" in strong and "--maxShapes=images:8x3x224x224" in strong


def test_tensorrt_runtime_module_imports_without_torch_or_tensorrt() -> None:
    assert_runs_without(
        "import edge_ad.runtimes.tensorrt_runtime, edge_ad.export.tensorrt_builder", ["torch", "tensorrt"]
    )


def test_qdq_int8_onnx_builds_strongly_typed_without_flags(use_fake, tmp_path: Path) -> None:
    calls = use_fake(version="10.3.0")
    tb.build_engine(tiny_onnx(tmp_path / "model.int8.onnx", "int8"), options=tb.BuildOptions("int8"))
    assert calls["network_flags"] == 1 << 1 and calls["flags"] == []
