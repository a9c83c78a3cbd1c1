"""ONNX export of the fused SimpleNet graph, the TensorRT op check, and the onnxruntime backend.

Tolerances (stated once, used below):

* fp32 onnxruntime vs torch ``SimpleNetGraph``: ``|diff| <= 1e-4 * (max - min of the torch anomaly maps)``
  for both image scores and maps (relative to the map's range: on random-normal input a trained model's
  maps span ~150, so an absolute 1e-4 would be below float32 resolution). Measured: ~1e-6 of the range.
* fp16 vs fp32 export: ``|diff| <= 1e-2 * map range``. Measured: ~1e-3 of the range.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_ad import BUNDLE_FORMAT_VERSION
from edge_ad.bundle import read_bundle
from edge_ad.export.onnx_export import METADATA_KEYS, OUTPUT_NAMES, export_onnx, graph_flops
from edge_ad.onnx_tools.op_check import TENSORRT_ONNX_OPS, assert_tensorrt_compatible, check_ops
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from tests.layering import assert_runs_without

FP32_REL_TOL = 1e-4
FP16_REL_TOL = 1e-2


@pytest.fixture(scope="module")
def bundle(private_bundle: Path) -> Path:
    return private_bundle


@pytest.fixture(scope="module")
def fp32_path(bundle: Path) -> Path:
    return export_onnx(bundle)  # default: static batch 1, opset 17, BUNDLE/model.fp32.onnx


@pytest.fixture(scope="module")
def dynamic_path(bundle: Path) -> Path:
    # verify=False: test_dynamic_batch_runs_n1_and_n3 compares with torch itself
    return export_onnx(bundle, bundle / "model.fp32.dynamic.onnx", dynamic_batch=True, verify=False)


@pytest.fixture(scope="module")
def fp16_cli(bundle: Path) -> tuple[Path, str]:
    """`edge-ad export BUNDLE --precision fp16`: the written path and what the command printed."""
    from typer.testing import CliRunner

    from edge_ad.cli.main import app

    result = CliRunner().invoke(app, ["export", str(bundle), "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    return bundle / "model.fp16.onnx", result.output


@pytest.fixture(scope="module")
def fp16_path(fp16_cli: tuple[Path, str]) -> Path:
    return fp16_cli[0]


@pytest.fixture(scope="module")
def torch_reference(bundle: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batch, image_score, anomaly_map) of the torch fused graph on a random batch of 3."""
    import torch

    from edge_ad.models.registry import load_model

    model, info = load_model(bundle)
    size = info.image_size
    batch = np.random.default_rng(7).standard_normal((3, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        score, amap, _ = model.inference_graph()(torch.from_numpy(batch))
    return batch, score.numpy(), amap.numpy()


def _assert_close(got: np.ndarray, ref: np.ndarray, tol: float) -> float:
    err = float(np.abs(got - ref).max())
    assert err <= tol, f"max |diff| {err:.3g} > {tol:.3g}"
    return err


# ----------------------------------------------------------------------------- export + checks
def test_fp32_export_passes_checker_and_op_check(bundle: Path, fp32_path: Path) -> None:
    assert fp32_path == bundle / "model.fp32.onnx"
    assert not [p for p in bundle.iterdir() if p.name.endswith(".tmp")], "atomic write left a temp file"
    model = onnx.load(str(fp32_path))
    onnx.checker.check_model(model, full_check=True)
    assert check_ops(model) == []
    assert check_ops(fp32_path) == []
    assert_tensorrt_compatible(model)
    used = {n.op_type for n in model.graph.node}
    assert used <= TENSORRT_ONNX_OPS
    assert "BatchNormalization" not in used  # folded into the convolutions
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]  # static by default
    flops = graph_flops(model)  # WRN50 to layer3 at 64x64: ~1.6 GFLOP per image, nearly all in the backbone
    assert flops["total"] == pytest.approx(sum(v for k, v in flops.items() if k != "total"))
    assert flops["backbone"] > 1e9 and flops["aggregation"] > 0 and flops["discriminator"] > 0
    assert 0 < flops["postprocess"] < 1e-2 * flops["total"]
    assert graph_flops(bundle) == flops  # a bundle folder counts its exported model


def test_metadata_round_trips_into_onnx_runtime(bundle: Path, fp32_path: Path) -> None:
    info = read_bundle(bundle)
    rt = OnnxRuntime(fp32_path, threads=1)
    meta = rt.metadata
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["bundle_weights_sha256"] == info.raw["files"]["model.safetensors"]
    assert meta["bundle_format_version"] == str(BUNDLE_FORMAT_VERSION)
    assert rt.name == "onnxruntime"
    assert rt.preprocessing == info.preprocessing
    assert rt.threshold == info.threshold
    assert rt.score_stats == info.score_stats
    assert rt.image_size == info.image_size == 64
    assert rt.precision == "fp32"
    assert rt.family == "simplenet"
    assert rt.batch_size == 1


def test_detector_loads_onnx(fp32_path: Path) -> None:
    from edge_ad.detector import Detector

    det = Detector.load(fp32_path)
    assert isinstance(det.runtime, OnnxRuntime)
    image = np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8)  # the input gate refuses flat frames
    (pred,) = det.predict(image)
    assert np.isfinite(pred.image_score)


# ----------------------------------------------------------------------------- parity
def test_fp32_onnx_matches_torch_graph(fp32_path: Path, torch_reference: tuple) -> None:
    batch, ref_score, ref_map = torch_reference
    rt = OnnxRuntime(fp32_path)
    score, amap = rt.predict(batch)  # static batch 1, N=3: three chunks
    assert score.shape == (3,) and amap.shape == (3, 64, 64)
    assert score.dtype == np.float32 and amap.dtype == np.float32
    tol = FP32_REL_TOL * float(np.ptp(ref_map))
    _assert_close(score, ref_score, tol)
    _assert_close(amap, ref_map, tol)


def test_onnx_runtime_threads_sleep_unless_spinning_is_asked_for(fp32_path: Path) -> None:
    key = "session.intra_op.allow_spinning"
    assert OnnxRuntime(fp32_path).session.get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # never set: onnxruntime's default
        OnnxRuntime(fp32_path, spin=True).session.get_session_options().get_session_config_entry(key)


def test_dynamic_batch_runs_n1_and_n3(dynamic_path: Path, torch_reference: tuple) -> None:
    batch, ref_score, ref_map = torch_reference
    dims = onnx.load(str(dynamic_path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    rt = OnnxRuntime(dynamic_path)
    assert rt.batch_size is None
    tol = FP32_REL_TOL * float(np.ptp(ref_map))
    one_score, one_map = rt.predict(batch[:1])
    assert one_score.shape == (1,) and one_map.shape == (1, 64, 64)
    _assert_close(one_map, ref_map[:1], tol)
    score, amap = rt.predict(batch)
    assert score.shape == (3,) and amap.shape == (3, 64, 64)
    _assert_close(score, ref_score, tol)
    _assert_close(amap, ref_map, tol)
    assert rt.predict(batch[0])[1].shape == (1, 64, 64)  # a single CHW image is a batch of one


def test_fp16_export_runs_and_agrees_with_fp32(fp16_path: Path, fp32_path: Path, torch_reference: tuple) -> None:
    batch, _, ref_map = torch_reference
    model = onnx.load(str(fp16_path))
    onnx.checker.check_model(model, full_check=True)
    assert check_ops(model) == []
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT  # I/O stay float32
    dtypes = Counter(t.data_type for t in model.graph.initializer)
    assert dtypes[TensorProto.FLOAT16] > dtypes[TensorProto.FLOAT]  # the network's weights are fp16
    # The post-processing head stays float32: its resize + Gaussian matrices ([64, 8] and [8, 64]) are float32.
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"})
    head = [n for n in model.graph.node if n.name.startswith("/head/") and n.op_type == "MatMul"]
    matrices = [constants[name] for n in head for name in n.input if name in constants]
    assert sorted(tuple(t.dims) for t in matrices) == [(8, 64), (64, 8)]
    assert all(t.data_type == TensorProto.FLOAT for t in matrices)
    assert os.path.getsize(fp16_path) < 0.6 * os.path.getsize(fp32_path)

    rt16 = OnnxRuntime(fp16_path)
    assert rt16.precision == "fp16" and rt16.batch_size == 1
    score16, map16 = rt16.predict(batch)
    assert score16.shape == (3,) and map16.shape == (3, 64, 64) and map16.dtype == np.float32
    assert np.isfinite(map16).all()
    score32, map32 = OnnxRuntime(fp32_path).predict(batch)
    tol = FP16_REL_TOL * float(np.ptp(ref_map))
    _assert_close(map16, map32, tol)
    _assert_close(score16, score32, tol)


def test_export_command_prints_the_parity_figures_it_measured(fp16_cli: tuple[Path, str]) -> None:
    path, output = fp16_cli
    assert f"onnx: {path}" in output
    assert "onnx.checker passed" in output and "TensorRT op check passed" in output
    figures = re.search(
        r"parity vs fp32 torch graph \(1 random image\(s\)\): max \|score diff\| (\S+), max \|map diff\| (\S+) "
        r"\(allowed (\S+)\)",
        output,
    )
    assert figures, output
    score, amap, allowed = (float(v) for v in figures.groups())
    assert 0 < amap <= allowed and 0 <= score <= allowed  # fp16 moves the map a little, within the export's bound


def test_fp16_threshold_comes_from_its_own_good_scores(fp16_cli: tuple[Path, str], bundle: Path) -> None:
    from edge_ad.data.images import read_image
    from edge_ad.thresholds.rules import image_score_threshold

    path, output = fp16_cli
    info = read_bundle(bundle)
    rt = OnnxRuntime(path)
    folder = Path(info.training["data"]) / "train" / "good"
    held = info.training["holdout_images"]
    scores, _ = rt.predict(rt.preprocessing.batch([read_image(folder / name) for name in held]))
    expected = image_score_threshold(scores, info.training["threshold_sigmas"])["threshold"]
    assert rt.threshold == pytest.approx(expected, rel=1e-6)
    assert rt.threshold != info.threshold  # fp16 moved the scores, so its threshold moved with them
    assert rt.score_stats["fp32_threshold"] == info.threshold and rt.score_stats["image"]["good_count"] == len(held)
    assert f"threshold: {rt.threshold:.6g}" in output


# ----------------------------------------------------------------------------- op check
def _tiny_model(nodes: list, inputs: list, outputs: list, initializers: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])


def test_check_ops_flags_unsupported_ops() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    u = helper.make_tensor_value_info("u", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="cubic"),
        helper.make_node("Unique", ["x"], ["u"]),  # not supported by TensorRT's ONNX parser
        helper.make_node("FancyBlur", ["x"], ["z"], domain="acme"),  # made-up custom op
    ]
    model = _tiny_model(nodes, [x], [y, u, z], [scales])
    assert check_ops(model) == ["Resize(mode=cubic)", "Unique", "acme:FancyBlur"]
    with pytest.raises(ValueError, match="Unique") as excinfo:
        assert_tensorrt_compatible(model)
    assert "acme:FancyBlur" in str(excinfo.value) and "Resize(mode=cubic)" in str(excinfo.value)

    ok = _tiny_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    assert check_ops(ok) == []
    assert_tensorrt_compatible(ok)


def test_check_ops_looks_inside_subgraphs() -> None:
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    then_out = helper.make_tensor_value_info("t", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("e", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Unique", ["x"], ["t"])], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [else_out])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)
    assert check_ops(_tiny_model([node], [cond, x], [out])) == ["Unique"]


# ----------------------------------------------------------------------------- runtime contract
def _fake_model(path: Path, meta: dict[str, str], batch: int | str = 1) -> Path:
    """A tiny stand-in with an edge-ad interface: image_score = max per image, anomaly_map = channel mean."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 64, 64])
    outputs = [
        helper.make_tensor_value_info("image_score", TensorProto.FLOAT, [batch]),
        helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, 64, 64]),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["image_score"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ReduceMean", ["images"], ["anomaly_map"], axes=[1], keepdims=0),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "fake", [images], outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def exported_meta(fp32_path: Path) -> dict[str, str]:
    return OnnxRuntime(fp32_path).metadata


def test_onnx_runtime_imports_no_torch(exported_meta: dict[str, str], tmp_path: Path) -> None:
    path = _fake_model(tmp_path / "fake.onnx", exported_meta, batch=2)
    code = (
        "import numpy as np\n"
        "from edge_ad.runtimes.onnx_runtime import OnnxRuntime\n"
        "from edge_ad.detector import Detector\n"
        f"rt = OnnxRuntime({str(path)!r})\n"
        "score, amap = rt.predict(np.zeros((3, 3, 64, 64), np.float32))\n"
        "assert score.shape == (3,) and amap.shape == (3, 64, 64)\n"
        "image = np.random.default_rng(0).integers(0, 256, (70, 80, 3), dtype=np.uint8)\n"
        f"Detector.load({str(path)!r}).predict(image)\n"
    )
    assert_runs_without(code, ["torch"])


def test_static_batch_chunks_and_pads_exactly(exported_meta: dict[str, str], tmp_path: Path) -> None:
    rt = OnnxRuntime(_fake_model(tmp_path / "b2.onnx", exported_meta, batch=2))
    assert rt.batch_size == 2
    batch = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    score, amap = rt.predict(batch)  # chunks of 2, 2, 1 (+1 padding image)
    np.testing.assert_allclose(score, batch.max(axis=(1, 2, 3)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(amap, batch.mean(axis=1), rtol=0, atol=1e-6)
    dyn = OnnxRuntime(_fake_model(tmp_path / "dyn.onnx", exported_meta, batch="batch"))
    assert dyn.batch_size is None
    np.testing.assert_allclose(dyn.predict(batch)[0], score, rtol=0, atol=0)


def test_wrong_bundle_format_version_is_refused(exported_meta: dict[str, str], tmp_path: Path) -> None:
    meta = {**exported_meta, "bundle_format_version": str(BUNDLE_FORMAT_VERSION + 1)}
    with pytest.raises(ValueError, match="bundle format"):
        OnnxRuntime(_fake_model(tmp_path / "old.onnx", meta))
    OnnxRuntime(_fake_model(tmp_path / "ok.onnx", exported_meta))  # the same model with the right version loads


def test_model_without_metadata_is_refused(exported_meta: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metadata"):
        OnnxRuntime(_fake_model(tmp_path / "bare.onnx", {}))
    partial = {k: v for k, v in exported_meta.items() if k != "threshold"}
    with pytest.raises(ValueError, match="threshold"):
        OnnxRuntime(_fake_model(tmp_path / "partial.onnx", partial))
    broken = {**exported_meta, "preprocessing": "{not json"}
    with pytest.raises(ValueError, match="malformed"):
        OnnxRuntime(_fake_model(tmp_path / "broken.onnx", broken))


def test_runtime_rejects_bad_input_and_device(fp32_path: Path) -> None:
    rt = OnnxRuntime(fp32_path)
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\]"):
        rt.predict(np.zeros((1, 3, 32, 32), np.float32))
    score, amap = rt.predict(np.zeros((0, 3, 64, 64), np.float32))
    assert score.shape == (0,) and amap.shape == (0, 64, 64)
    with pytest.raises(ValueError, match="unknown device"):
        OnnxRuntime(fp32_path, device="tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
            OnnxRuntime(fp32_path, device="cuda")


def test_export_rejects_bad_arguments(bundle: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        export_onnx(bundle, precision="int8")
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(bundle, batch_size=0)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(bundle, opset=9)
