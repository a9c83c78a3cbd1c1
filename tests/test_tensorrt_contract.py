"""The TensorRT builder against ``tests/fake_tensorrt.py``, a fake that behaves like TensorRT 10/11 (TensorRT
cannot be installed here). Issue 11's defect numbers are in the test names' docstrings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edge_ad.artifacts import read_sidecar
from edge_ad.export import tensorrt_builder as tb
from edge_ad.export import tensorrt_options as to
from edge_ad.export.onnx_info import OnnxFormatError, read_onnx_info
from edge_ad.runtimes import tensorrt_engine as te
from tests.fake_tensorrt import MAGIC, make_tensorrt, tiny_edge_onnx
from tests.layering import assert_runs_without

GPU = {"name": "FakeGPU", "compute_capability": "8.7", "source": "test"}


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch):
    def install(**kwargs: object):
        trt = make_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tb, "gpu_identity", lambda: dict(GPU))
        return trt

    return install


def sidecar(engine: Path) -> dict:
    return json.loads(tb.sidecar_path(engine).read_text())


def engine_header(engine: Path) -> dict:
    data = engine.read_bytes()
    assert data.startswith(MAGIC)
    return json.loads(data[len(MAGIC) :].partition(b"\n")[0])


def test_sidecar_batch_range_is_the_built_engines_own(use_fake, tmp_path: Path) -> None:
    """Defect 1: a static batch-4 ONNX records [4, 4, 4], whatever max_batch was asked; a dynamic one its profile."""
    use_fake()
    static = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch=4)
    engine = tb.build_engine(static, options=tb.BuildOptions("fp32", max_batch=8))
    assert sidecar(engine)["batch"] == [4, 4, 4]
    assert sidecar(engine)["io"]["images"]["shape"] == [4, 3, 32, 32]
    dynamic = tiny_edge_onnx(tmp_path / "d" / "model.fp32.onnx", "fp32", batch="batch")
    engine = tb.build_engine(dynamic, options=tb.BuildOptions("fp32", max_batch=8))
    assert sidecar(engine)["batch"] == [1, 1, 8]  # the opt point is batch 1 (line inspection)
    assert set(sidecar(engine)["layers"]["by_precision"]) == {"fp32"}  # formats read through a context


def test_engine_is_named_after_its_precision_and_mismatches_are_refused(use_fake, tmp_path: Path) -> None:
    """Defect 3: model.fp32.onnx built as fp16 is model.fp16.engine; an fp16/int8 ONNX is never labelled fp32."""
    use_fake()
    fp32 = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32")
    engine = tb.build_engine(fp32, options=tb.BuildOptions("fp16"))
    assert engine.name == "model.fp16.engine" and sidecar(engine)["typing"] == "weak-fp16"
    fp16 = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16")
    with pytest.raises(ValueError, match="this ONNX is fp16; it cannot be built as a fp32 engine"):
        tb.build_engine(fp16, options=tb.BuildOptions("fp32"))
    engine = tb.build_engine(fp16, options=tb.BuildOptions("fp16"))
    assert sidecar(engine)["precision"] == "fp16" and sidecar(engine)["typing"] == "strong"
    assert sidecar(engine)["onnx_precision"] == "fp16"


def test_weak_fp16_keeps_the_head_in_fp32(use_fake, tmp_path: Path) -> None:
    """Defect 4: the inspector reports the head's layers (resize, smoothing, reshape, max) in FP32, the rest FP16."""
    use_fake(version="10.3.0")
    engine = tb.build_engine(tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32"), options=tb.BuildOptions("fp16"))
    header = engine_header(engine)
    assert "FP16" in header["flags"] and "OBEY" in header["flags"]
    layers = {layer["name"]: layer["precision"] for layer in sidecar(engine)["layers"]["layers"]}
    assert {layers[n] for n in ("head/resize", "head/smooth", "head/reshape", "head/max")} == {"fp32"}
    assert layers["net/mean"] == "fp16" and layers["net/pool"] == "fp16"


def test_strongly_typed_builds_set_no_precision_flags_and_record_layer_precision(use_fake, tmp_path: Path) -> None:
    use_fake(version="10.3.0")
    engine = tb.build_engine(tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16"), options=tb.BuildOptions("fp16"))
    assert not {"FP16", "INT8"} & set(engine_header(engine)["flags"])
    counts = sidecar(engine)["layers"]["by_precision"]
    assert counts.get("fp16", 0) >= 2 and counts.get("fp32", 0) >= 4


def test_trt11_builds_fp16_onnx_and_refuses_the_weak_fallback(use_fake, tmp_path: Path) -> None:
    use_fake(version="11.0.0")
    with pytest.raises(ValueError, match="strongly typed networks only"):
        tb.build_engine(tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32"), options=tb.BuildOptions("fp16"))
    engine = tb.build_engine(tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16"), options=tb.BuildOptions("fp16"))
    assert sidecar(engine)["layers"]["by_precision"].get("fp16", 0) >= 2  # TensorRT 11's inspector schema


def test_a_rejected_timing_cache_is_replaced_not_ignored(use_fake, tmp_path: Path) -> None:
    """Defect 11: set_timing_cache returning False (a cache from another GPU) starts a fresh cache."""
    use_fake()
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"FAKE-CACHE:some other GPU")
    onnx = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32")
    with pytest.warns(UserWarning, match="rejected the timing cache"):
        engine = tb.build_engine(onnx, options=tb.BuildOptions("fp32", timing_cache=cache))
    assert sidecar(engine)["timing_cache"] == "replaced"
    assert cache.read_bytes().startswith(b"FAKE-CACHE:FakeGPU")
    engine = tb.build_engine(onnx, options=tb.BuildOptions("fp32", timing_cache=cache))
    assert sidecar(engine)["timing_cache"] == "loaded"


def test_dynamic_batch_on_a_static_onnx_is_refused(use_fake, tmp_path: Path) -> None:
    """Defect 11: --dynamic-batch (e.g. with int8, whose calibration exports static) never builds static silently."""
    use_fake()
    onnx = tiny_edge_onnx(tmp_path / "model.int8.onnx", "int8", batch=1)
    with pytest.raises(ValueError, match="static batch of 1; a dynamic-batch engine needs a dynamic-batch ONNX"):
        tb.build_engine(onnx, options=tb.BuildOptions("int8", max_batch=8, dynamic=True))


def test_dla_build_sets_device_core_and_gpu_fallback(use_fake, tmp_path: Path) -> None:
    use_fake(dla_cores=2)
    onnx = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16")
    engine = tb.build_engine(onnx, options=tb.BuildOptions("fp16", dla_core=1))
    header = engine_header(engine)
    assert header["dla"] == 1 and "GPU_FALLBACK" in header["flags"]
    dynamic = tiny_edge_onnx(tmp_path / "d" / "model.fp16.onnx", "fp16", batch="batch")
    engine = tb.build_engine(dynamic, options=tb.BuildOptions("fp16", max_batch=4, dla_core=0))
    assert sidecar(engine)["batch"] == [4, 4, 4]  # DLA has no dynamic dimensions
    use_fake(dla_cores=0)
    with pytest.raises(ValueError, match="0 DLA cores"):
        tb.build_engine(onnx, options=tb.BuildOptions("fp16", dla_core=0))
    with pytest.raises(ValueError, match="DLA runs fp16 or int8 only"):
        tb.BuildOptions("fp32", dla_core=0)


def test_cuda_head_engine_stops_at_patch_scores(use_fake, tmp_path: Path) -> None:
    """Defect 8 (TensorRT part): with --head cuda the engine no longer computes the head it would discard."""
    use_fake()
    engine = tb.build_engine(
        tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32"), options=tb.BuildOptions("fp32", head="cuda")
    )
    outputs = [n for n, e in sidecar(engine)["io"].items() if e["mode"] == "output"]
    assert outputs == ["patch_scores"] and sidecar(engine)["head"] == "cuda"


def test_trtexec_line_fits_static_dynamic_and_version(tmp_path: Path) -> None:
    """Defect 2: no shape flags for a static ONNX; shapes from the ONNX for a dynamic one; no --fp16 on 11."""
    static = read_onnx_info(tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32", batch=1))
    line = to.trtexec_command(static, tb.BuildOptions("fp32", max_batch=8), "10.3.0")
    assert "Shapes" not in line and "--stronglyTyped" in line and "model.fp32.engine" in line
    weak = to.trtexec_command(static, tb.BuildOptions("fp16"), "10.3.0")
    assert "--fp16" in weak and "--precisionConstraints=obey" in weak and "head/resize:fp32" in weak
    assert "--saveEngine=" + str(tmp_path / "model.fp16.engine") in weak
    with pytest.raises(ValueError, match="strongly typed networks only"):
        to.trtexec_command(static, tb.BuildOptions("fp16"), "11.0.0")
    dynamic = read_onnx_info(tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16", batch="batch"))
    line = to.trtexec_command(dynamic, tb.BuildOptions("fp16", max_batch=8), "11.0.0")
    assert "--fp16" not in line and "--minShapes=images:1x3x32x32" in line and "--maxShapes=images:8x3x32x32" in line
    assert "--optShapes=images:1x3x32x32" in line


def test_adopting_a_trtexec_engine_writes_its_sidecar(use_fake, tmp_path: Path) -> None:
    """Defect 2: an engine trtexec built (no sidecar) is adopted from what the engine itself reports."""
    trt = use_fake()
    onnx = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16", batch="batch")
    logger = trt.Logger()
    builder = trt.Builder(logger)
    net = builder.create_network(1 << 1)
    assert trt.OnnxParser(net, logger).parse(onnx.read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32))
    config.add_optimization_profile(profile)
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(builder.build_serialized_network(net, config))
    with pytest.raises(ValueError, match="--from-trtexec"):
        read_sidecar(engine)
    tb.adopt_engine(onnx, engine, "fp16")
    assert sidecar(engine)["batch"] == [1, 2, 4] and sidecar(engine)["built_by"] == "trtexec"
    assert sidecar(engine)["bundle_weights_sha256"] == "ab" * 32


def test_foreign_and_broken_onnx_files_are_refused_in_one_line(tmp_path: Path) -> None:
    """Issue 9 point 7: text, truncated and metadata-less files give a ValueError, not a DecodeError."""
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n" * 20)
    good = tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (text, truncated):
        with pytest.raises(OnnxFormatError, match="is not a readable ONNX model"):
            tb.edge_ad_onnx(path)
    bare = tiny_edge_onnx(tmp_path / "bare.onnx", "fp32", metadata={"preprocessing": None, "threshold": None})
    with pytest.raises(ValueError, match="lacks edge-ad metadata"):
        tb.edge_ad_onnx(bare)


def test_onnx_reader_agrees_with_onnx(tmp_path: Path) -> None:
    import onnx

    path = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16", batch="batch")
    info, model = read_onnx_info(path), onnx.load(str(path))
    assert info.metadata == {p.key: p.value for p in model.metadata_props}
    assert [o.name for o in info.outputs] == [o.name for o in model.graph.output]
    assert info.input.dims == ("batch", 3, 32, 32) and info.static_batch is None
    assert info.descendants("patch_scores") == ["head/resize", "head/smooth", "head/reshape", "head/max"]


def test_engine_build_path_needs_neither_onnx_nor_torch(tmp_path: Path) -> None:
    """Defect 11: the base install (no onnx package) reads the ONNX and prints the trtexec line."""
    path = tiny_edge_onnx(tmp_path / "model.fp16.onnx", "fp16")
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from edge_ad.export import tensorrt_builder as tb\n"
        f"info = tb.edge_ad_onnx({str(path)!r})\n"
        "from edge_ad.export import tensorrt_options as to\n"
        "assert '--stronglyTyped' in to.trtexec_command(info, tb.BuildOptions('fp16'))\n"
    )
    assert_runs_without(code, ["torch", "tensorrt"])


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_without_tensorrt_the_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(te.TensorRTUnavailable, match="JetPack"):
        tb.build_engine(tiny_edge_onnx(tmp_path / "model.fp32.onnx", "fp32"), options=tb.BuildOptions("fp32"))


def test_tensorrt_runtime_module_imports_without_torch_or_tensorrt() -> None:
    assert_runs_without(
        "import edge_ad.runtimes.tensorrt_runtime, edge_ad.export.tensorrt_builder, edge_ad.export.tensorrt_verify",
        ["torch", "tensorrt", "onnx"],
    )
