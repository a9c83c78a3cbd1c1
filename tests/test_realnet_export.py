"""RealNet through the shared export stages: the exporter its graph declares (quiet, module-path node names), fp16
and INT8 ONNX (checks, the declared layout's recipes, the RRS ranking left in float), bench rows, and `edge-ad serve`
answering over HTTP on its ONNX. Tiny model (64 px, one epoch) on the tiny demo category."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edge_ad.calibration.graph_parts import Int8Layout, graph_parts, quantized_nodes, resolve_exclude
from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.export.onnx_trace import ExportError, exporter_of, scope_names, trace_export
from edge_ad.models.realnet.model import RealNetGraph
from edge_ad.onnx_tools.op_check import check_ops
from edge_ad.runtimes.onnx_runtime import OnnxRuntime

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SELECTION_OPS = {"TopK", "GatherElements", "BatchNormalization", "ReduceMax", "ReduceMean"}


@pytest.fixture(scope="module")
def realnet_bundle(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("realnet_export") / "realnet-washer"
    args = ["train", str(tiny_demo), "--model", "realnet", "--out", str(bundle), "--image-size", "64",
            "--resize", "64", "--epochs", "1", "--batch-size", "4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return bundle


@pytest.fixture(scope="module")
def fp32_onnx(realnet_bundle: Path) -> Path:
    from edge_ad.export.onnx_export import export_onnx

    path = export_onnx(realnet_bundle, dynamic_batch=True)  # traced on one image: the batch axis stays symbolic
    (images,) = onnx.load(str(path)).graph.input
    assert images.type.tensor_type.shape.dim[0].dim_param == "batch"
    return path


@pytest.fixture(scope="module")
def test_batch(fp32_onnx: Path, tiny_demo: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    runtime = OnnxRuntime(fp32_onnx)
    x = runtime.preprocessing.batch([read_image(p) for p in sorted((tiny_demo / "test").glob("*/*.png"))])
    scores, maps = runtime.predict(x)
    return x, scores, maps


def _deviation(path: Path, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[float, float, float]:
    """(max |score change|, max |map change|, mean |map change|), each over the fp32 maps' range."""
    x, scores, maps = batch
    got_scores, got_maps = OnnxRuntime(path).predict(x)
    span = float(np.ptp(maps))
    d_map = np.abs(got_maps - maps)
    return float(np.abs(got_scores - scores).max()) / span, float(d_map.max()) / span, float(d_map.mean()) / span


class _ThreeOutputs(nn.Module):
    """The smallest graph with the exported interface (score, map, patch scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        patch = torch.sigmoid(self.conv(x))
        return patch.amax(dim=(1, 2, 3)), patch[:, 0], patch


def test_realnet_declares_the_dynamo_exporter_and_others_default_to_torchscript() -> None:
    from edge_ad.models.nsa.model import NsaGraph
    from edge_ad.models.simplenet.model import SimpleNetGraph

    assert RealNetGraph.onnx_exporter == "dynamo"
    assert exporter_of(_ThreeOutputs()) == "torchscript"
    assert not hasattr(SimpleNetGraph, "onnx_exporter") and not hasattr(NsaGraph, "onnx_exporter")
    bad = _ThreeOutputs()
    bad.onnx_exporter = "onnx-by-hand"  # type: ignore[assignment]
    with pytest.raises(ExportError, match="onnx_exporter"):
        exporter_of(bad)


def test_realnet_export_is_quiet_and_names_nodes_by_module(realnet_bundle: Path, tmp_path: Path, capfd) -> None:
    from edge_ad.export.onnx_export import export_onnx_checked

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_onnx_checked(realnet_bundle, tmp_path / "quiet.onnx")
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out[-2000:], err[-2000:])  # no traceback, no exporter chatter
    assert [str(w.message) for w in caught] == []
    model = onnx.load(str(result.path))
    assert result.parity is not None and result.parity["max_abs_map_diff"] <= 1e-4
    names = {n.name: n.op_type for n in model.graph.node}
    assert names["/parts.0/rrs/TopK"] == "TopK" and names["/parts.0/rrs/GatherElements"] == "GatherElements"
    assert any(n.startswith("/backbone/") for n in names) and any(n.startswith("/head/") for n in names)
    assert all(len(n.metadata_props) == 0 for n in model.graph.node)  # no stack traces of this machine
    assert model.opset_import[0].version >= 18  # the torch.export-based exporter's own opset, not down-converted
    parts = graph_parts(model)  # every node belongs to a part the layout declares
    assert "other" not in set(parts.values()), sorted(n for n, p in parts.items() if p == "other")[:5]


def test_an_undeclared_graph_the_legacy_exporter_refuses_warns_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_ad.export.onnx_trace as trace

    def refuse(*_: object, **__: object) -> onnx.ModelProto:
        raise RuntimeError("Unsupported: ONNX export of batch_norm\nTraceback-like line 1\nline 2")

    monkeypatch.setattr(trace, "_legacy", refuse)
    module, example = _ThreeOutputs().eval(), torch.randn(1, 3, 8, 8)
    with pytest.warns(RuntimeWarning) as caught:
        proto = trace_export(module, example, 17, False, ("image_score", "anomaly_map", "patch_scores"))
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and "batch_norm" in message and "onnx_exporter" in message
    assert "/conv/Conv" in {n.name for n in proto.graph.node}
    module.onnx_exporter = "dynamo"  # type: ignore[assignment]  # declared: the legacy path is never tried
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace_export(module, example, 17, False, ("image_score", "anomaly_map", "patch_scores"))


def test_scope_names_follow_the_module_path_and_stay_unique() -> None:
    def node(op: str, scopes: list[str] | None) -> onnx.NodeProto:
        n = onnx.helper.make_node(op, ["x"], [f"y{id(scopes)}{op}"], name=f"node_{op}")
        if scopes is not None:
            n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
        n.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="File /home/someone/model.py")
        return n

    nodes = [
        node("TopK", ["", "parts.0", "parts.0.rrs", "topk"]),
        node("TopK", ["", "parts.0", "parts.0.rrs", "topk_1"]),
        node("Softmax", ["", "softmax"]),
        node("Relu", None),
    ]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [], []))
    graph = scope_names(model).graph
    assert [n.name for n in graph.node] == ["/parts.0/rrs/TopK", "/parts.0/rrs/TopK_1", "/Softmax", "node_Relu"]
    assert all(len(n.metadata_props) == 0 for n in graph.node)


def test_fp16_export_keeps_the_declared_backbone_float32(realnet_bundle: Path, fp32_onnx: Path, test_batch) -> None:
    from edge_ad.export.onnx_export import export_onnx_checked, verify_tolerance

    result = export_onnx_checked(realnet_bundle, precision="fp16")
    assert result.op_check["passed"] and check_ops(result.path) == []
    assert result.parity is not None and result.parity["allowed"] == pytest.approx(
        RealNetGraph.fp16_tolerance * result.parity["map_range"]
    )
    assert verify_tolerance(nn.Module(), "fp16") == 0.02  # a graph that declares nothing keeps the default
    model = onnx.load(str(result.path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["precision"] == "fp16" and meta["family"] == "realnet"
    types = {init.name: init.data_type for init in model.graph.initializer}
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    weight = {n.name: types.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv"}
    assert {t for name, t in weight.items() if name.startswith("/backbone/")} == {single}  # fp16_float32
    assert {t for name, t in weight.items() if name.startswith(("/parts.0/", "/out/"))} == {half}
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 3 and "images" not in {i for n in casts for i in n.input}  # two levels in, patch map out
    score, map_max, map_mean = _deviation(result.path, test_batch)
    # measured on this tiny bundle: score 4e-3, map max 0.03, map mean 1e-3 of the fp32 map range
    assert score <= 0.05 and map_max <= 0.2 and map_mean <= 0.01, (score, map_max, map_mean)


def test_every_declared_int8_recipe_resolves_and_keeps_the_selection_float(fp32_onnx: Path) -> None:
    model = onnx.load(str(fp32_onnx))
    layout = Int8Layout.from_dict(RealNetGraph.int8_layout)
    parts = graph_parts(model, layout)
    selection = {n.name for n in model.graph.node if parts[n.name] == "selection"}
    assert {n.op_type for n in model.graph.node if n.name in selection} >= {"TopK", "GatherElements"}
    for recipe in layout.recipes:
        excluded = resolve_exclude(model, recipe, layout)
        assert selection <= excluded.nodes, recipe
    counts = {recipe: len(resolve_exclude(model, recipe, layout).nodes) for recipe in layout.recipes}
    assert counts["all"] < counts["keep_decoder_fp"] < counts["backbone_only"]  # from most to least quantized


def test_int8_export_through_the_cli(realnet_bundle: Path, fp32_onnx: Path, test_batch) -> None:
    args = ["export", str(realnet_bundle), "--precision", "int8", "--calib-method", "minmax", "--calib-count", "8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    path = realnet_bundle / "model.int8.onnx"
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    recipe = json.loads(meta["int8_recipe"])
    assert meta["precision"] == "int8" and recipe["recipe"] in RealNetGraph.int8_layout["recipes"]
    parts = graph_parts(model)
    quantized = {parts[name] for name in quantized_nodes(model)}
    assert "backbone" in quantized and not quantized & {"head", "selection"}
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ranking = [n for n in model.graph.node if n.op_type in SELECTION_OPS and parts[n.name] == "selection"]
    assert ranking and not any(i in dq_outputs for n in ranking for i in n.input)  # ranks float values
    assert check_ops(path) == []
    score, map_max, map_mean = _deviation(path, test_batch)
    assert np.isfinite([score, map_max, map_mean]).all() and map_mean <= 0.25, (score, map_max, map_mean)


def test_bench_prints_realnet_rows_with_gflop(realnet_bundle: Path, fp32_onnx: Path) -> None:
    out = realnet_bundle / "bench.json"
    result = runner.invoke(
        app,
        ["bench", str(realnet_bundle), "--backend", "torch,onnxruntime", "--precision", "fp32", "--batch", "1",
         "--iters", "2", "--warmup", "1", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {(r["backend"], r["precision"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32")}
    assert all(r["error"] is None and r["latency"]["images_per_s"] > 0 for r in rows.values())
    assert all(r["gflop_per_image"] and r["gflop_per_image"] > 0 for r in rows.values())


def test_serve_answers_over_http_on_a_realnet_onnx(fp32_onnx: Path, tiny_demo: Path, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from edge_ad.detector import Detector
    from edge_ad.serve.service import ServeConfig, build_service
    from tests.serve_http import post_image, running_app

    images = sorted((tiny_demo / "test").glob("*/*.png"))[:3]
    detector = Detector.load(fp32_onnx)
    service = build_service(ServeConfig(model=fp32_onnx, out=tmp_path / "served"), detector=detector)
    service.start()
    try:
        with running_app(service.app) as port:
            answers = [post_image(port, path.read_bytes(), query=f"?name={path.name}") for path in images]
    finally:
        assert service.shutdown()
    for (status, _, body), want in zip(answers, detector.predict(images), strict=True):
        assert status == 200, body
        assert body["image_score"] == pytest.approx(want.image_score, abs=1e-5) and body["verdict"] == want.verdict
        assert body["threshold"] == pytest.approx(detector.threshold, abs=1e-6)


def test_triton_repository_of_a_realnet_bundle_parses(realnet_bundle: Path, tmp_path: Path) -> None:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    args = ["export", str(realnet_bundle), "--format", "triton", "--out", str(tmp_path), "--max-batch", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / realnet_bundle.name / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    from edge_ad.models.registry import load_model

    grid = load_model(realnet_bundle)[0].grid_size
    assert [list(o.dims) for o in config.output] == [[1], [64, 64], [1, grid, grid]]
    assert config.parameters["family"].string_value == "realnet"


@pytest.mark.triton
def test_real_tritonserver_serves_realnet_like_onnxruntime(fp32_onnx: Path, tiny_demo: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.http")
    from edge_ad.export.triton import write_triton_repository
    from edge_ad.export.triton_server import TritonServer, find_tritonserver
    from edge_ad.runtimes.triton_runtime import TritonRuntime

    if find_tritonserver() is None:
        pytest.skip("no tritonserver: pip install --no-deps nvidia-pytriton")
    repo = tmp_path / "repo"
    write_triton_repository(fp32_onnx, repo, name="realnet", python_backend=True, max_batch=4, intra_op_threads=1)
    local = OnnxRuntime(fp32_onnx, threads=1)
    x = local.preprocessing.batch([read_image(p) for p in sorted((tiny_demo / "test").glob("*/*.png"))[:6]])
    want_score, want_map = local.predict(x)
    server = TritonServer(repo, startup_timeout_s=180)
    try:
        server.start()
        remote = TritonRuntime(server.http_url + "/realnet", timeout_s=120)
        assert remote.threshold == local.threshold
        score, amap = remote.predict(x)  # more than max_batch: the runtime chunks
    finally:
        server.stop()
    np.testing.assert_allclose(score, want_score, atol=1e-5, rtol=0)
    np.testing.assert_allclose(amap, want_map, atol=1e-5, rtol=0)
