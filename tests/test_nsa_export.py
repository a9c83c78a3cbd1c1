"""NSA bundles through the shared export stages: fp16 and INT8 ONNX (checks, declared metadata, deviation from fp32),
the CUDA post-processing refusal decided by the declared image score, and ``edge-ad bench`` rows. Tiny network
(width 8) on 64 px images, as tests/test_nsa.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edge_ad.calibration.graph_parts import LAYOUT_KEY, Int8Layout, graph_parts, layout_of, quantized_nodes
from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.models.nsa.model import NsaGraph
from edge_ad.models.simplenet.model import SimpleNetGraph
from edge_ad.onnx_tools.op_check import check_ops
from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of
from edge_ad.runtimes.onnx_runtime import OnnxRuntime

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def nsa_bundle(private_nsa_bundle: Path) -> Path:
    bundle = private_nsa_bundle
    result = runner.invoke(app, ["export", str(bundle), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return bundle


@pytest.fixture(scope="module")
def test_batch(nsa_bundle: Path, tiny_demo: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo's test images, preprocessed, and the fp32 ONNX model's scores and maps on them."""
    runtime = OnnxRuntime(nsa_bundle / "model.fp32.onnx")
    x = runtime.preprocessing.batch([read_image(p) for p in sorted((tiny_demo / "test").glob("*/*.png"))])
    scores, maps = runtime.predict(x)
    return x, scores, maps


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _deviation(path: Path, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[float, float, float]:
    """(max |score change|, max |map change|, mean |map change|), each over the fp32 maps' range."""
    x, scores, maps = batch
    got_scores, got_maps = OnnxRuntime(path).predict(x)
    span = float(np.ptp(maps))
    d_map = np.abs(got_maps - maps)
    return float(np.abs(got_scores - scores).max()) / span, float(d_map.max()) / span, float(d_map.mean()) / span


def test_families_declare_image_score_and_int8_layout() -> None:
    assert SimpleNetGraph.image_score == "max" and NsaGraph.image_score == "mean"
    simplenet = Int8Layout.from_dict(SimpleNetGraph.int8_layout)
    assert set(simplenet.parts) == {"head", "score", "discriminator", "aggregator", "backbone"}
    nsa = Int8Layout.from_dict(NsaGraph.int8_layout)
    assert set(nsa.parts) == {"head", "output", "decoder", "encoder"} and nsa.default in nsa.recipes
    assert all("head" in kept for kept in nsa.recipes.values())
    with pytest.raises(ValueError, match="must keep the head"):
        Int8Layout.from_dict({**NsaGraph.int8_layout, "recipes": {"all": ["encoder"]}, "default": "all"})


def test_fp32_export_declares_the_mean_score_and_the_nsa_layout(nsa_bundle: Path) -> None:
    model = onnx.load(str(nsa_bundle / "model.fp32.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["image_score"] == "mean"
    layout = layout_of(model)
    assert layout.to_dict() == json.loads(meta["int8_layout"]) == NsaGraph.int8_layout
    parts = graph_parts(model)
    compute = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Sigmoid", "ReduceMean")]
    assert {parts[name] for name in compute} == {"encoder", "decoder", "output", "head"}


def test_fresh_simplenet_export_reads_its_declared_layout(tiny_bundle: Path, tmp_path: Path) -> None:
    from edge_ad.export.onnx_export import export_onnx

    model = onnx.load(str(export_onnx(tiny_bundle, tmp_path / "simplenet.fp32.onnx", verify=False)))
    assert layout_of(model).to_dict() == SimpleNetGraph.int8_layout
    assert {"/backbone/conv1/Conv", "/out/Conv", "/head/MatMul"} <= set(graph_parts(model))
    assert graph_parts(model)["/backbone/conv1/Conv"] == "backbone"


def _strip_layout(model: onnx.ModelProto) -> onnx.ModelProto:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != LAYOUT_KEY]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(kept))
    return model


def test_an_export_without_a_declared_layout_is_refused_in_one_line(nsa_bundle: Path, tmp_path: Path) -> None:
    import shutil

    model = _strip_layout(onnx.load(str(nsa_bundle / "model.fp32.onnx")))
    assert LAYOUT_KEY not in {p.key for p in model.metadata_props} and model.metadata_props
    with pytest.raises(ValueError, match="declares no INT8 layout.*export it again with this version of edge-ad"):
        layout_of(model)
    with pytest.raises(ValueError, match="declares no INT8 layout"):
        graph_parts(model)
    # the CLI: the bundle's fp32 export is current (same weights), so it is read as it is and refused in one line
    copy = Path(shutil.copytree(nsa_bundle, tmp_path / "bundle"))
    onnx.save(model, str(copy / "model.fp32.onnx"))
    result = runner.invoke(app, ["export", str(copy), "--precision", "int8", "--calib-method", "minmax"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "declares no INT8 layout" in lines[0] and "export it again with this version of edge-ad" in lines[0]
    assert not (copy / "model.int8.onnx").exists()
    # doing what the line says mends it
    assert runner.invoke(app, ["export", str(copy), "--precision", "fp32"]).exit_code == 0
    assert layout_of(onnx.load(str(copy / "model.fp32.onnx"))).to_dict() == NsaGraph.int8_layout


def test_fp16_export_checks_and_stays_close_to_fp32(nsa_bundle: Path, test_batch) -> None:
    from edge_ad.export.onnx_export import export_onnx_checked

    result = export_onnx_checked(nsa_bundle, precision="fp16")
    assert result.path == nsa_bundle / "model.fp16.onnx" and result.path.is_file()
    assert result.op_check["passed"] and result.parity is not None
    assert check_ops(result.path) == []  # only TensorRT parser operators, in the file as written
    meta = _meta(result.path)
    assert meta["precision"] == "fp16" and meta["image_score"] == "mean" and "int8_layout" in meta
    assert float(meta["threshold"]) == pytest.approx(result.threshold["value"])
    score, map_max, map_mean = _deviation(result.path, test_batch)
    # measured on this tiny bundle: score 1e-5, map max 1.1e-3, map mean 4e-5 of the fp32 map range
    assert score <= 1e-3 and map_max <= 1e-2 and map_mean <= 1e-3, (score, map_max, map_mean)


def test_int8_export_through_the_cli(nsa_bundle: Path, test_batch) -> None:
    result = runner.invoke(app, ["export", str(nsa_bundle), "--precision", "int8", "--calib-method", "minmax"])
    assert result.exit_code == 0, result.output
    path = nsa_bundle / "model.int8.onnx"
    assert path.is_file() and (nsa_bundle / "calibration_report.md").is_file()
    assert "threshold: fp32" in result.output
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    recipe = json.loads(meta["int8_recipe"])
    assert meta["precision"] == "int8" and meta["image_score"] == "mean"
    assert recipe["recipe"] in NsaGraph.int8_layout["recipes"] and recipe["method"] == "minmax"
    assert float(meta["threshold"]) == pytest.approx(recipe["threshold"]["int8"])  # its own, from its own scores
    parts = graph_parts(model)
    quantized = {parts[name] for name in quantized_nodes(model)}
    assert {"encoder", "decoder"} <= quantized and "head" not in quantized
    producer = {out: node for node in model.graph.node for out in node.output}
    axes: dict[str, set[int]] = {}  # per-channel weights along the output channels: Conv axis 0, ConvTranspose 1
    for node in model.graph.node:
        if node.name in quantized_nodes(model) and node.op_type in ("Conv", "ConvTranspose"):
            dq = producer[node.input[1]]
            axes.setdefault(node.op_type, set()).update(a.i for a in dq.attribute if a.name == "axis")
    assert axes == {"Conv": {0}, "ConvTranspose": {1}}, axes
    assert check_ops(path) == []
    score, map_max, map_mean = _deviation(path, test_batch)
    # measured on this tiny bundle (minmax/all): score 4.5e-4, map max 0.072, map mean 1.8e-3 of the fp32 map range
    assert score <= 5e-3 and map_max <= 0.25 and map_mean <= 0.01, (score, map_max, map_mean)


def test_cuda_postprocessing_is_refused_for_a_mean_score(nsa_bundle: Path) -> None:
    onnx_path = nsa_bundle / "model.fp32.onnx"
    engine = runner.invoke(app, ["export", str(onnx_path), "--format", "engine", "--head", "cuda", "--dry-run"])
    assert engine.exit_code == 2, engine.output
    assert "mean of its map" in engine.output and "Traceback" not in engine.output
    assert len(engine.output.strip().splitlines()) <= 2  # one line (rich may wrap it once)
    bench = runner.invoke(
        app,
        ["bench", str(nsa_bundle), "--backend", "torch", "--postprocess", "cuda", "--device", "cuda", "--batch", "1",
         "--iters", "1", "--warmup", "0", "--no-reference", "--json", str(nsa_bundle / "b.json")],
    )
    assert bench.exit_code == 0, bench.output
    (row,) = json.loads((nsa_bundle / "b.json").read_text())["rows"]
    assert row["postprocess"] == "cuda" and "mean of its map" in row["error"]
    # the declaration decides, not the device: a max-scored (SimpleNet) artifact passes this check
    check_cuda_postprocess(image_score_of({"image_score": "max"}))
    assert image_score_of({}) == "max"  # exports from before the declaration were SimpleNet's


def test_bench_prints_nsa_rows(nsa_bundle: Path) -> None:
    out = nsa_bundle / "bench.json"
    result = runner.invoke(
        app,
        ["bench", str(nsa_bundle), "--backend", "torch,onnxruntime", "--precision", "fp32,int8", "--batch", "1",
         "--iters", "2", "--warmup", "1", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    errors = [r["error"] for r in rows.values()]
    assert all(r["error"] is None and r["latency"]["images_per_s"] > 0 for r in rows.values()), errors
    assert report["reference"].startswith("none: the nsa family")
    # the "vs 77 FPS" column is SimpleNet's paper figure: NSA rows get none rather than a ratio to another paper
    assert report["paper_fps"] is None and all(r["vs_paper_77fps"] is None for r in rows.values())
    assert "onnxruntime" in result.output and "int8" in result.output
    onnx_report = nsa_bundle / "bench_onnx.json"
    onnx_result = runner.invoke(
        app,
        ["bench", str(nsa_bundle / "model.fp32.onnx"), "--backend", "onnxruntime", "--batch", "1", "--iters", "1",
         "--warmup", "0", "--json", str(onnx_report)],
    )
    assert onnx_result.exit_code == 0, onnx_result.output  # the ONNX's own preprocessing (64 px), not the default
    assert json.loads(onnx_report.read_text())["paper_fps"] is None  # read from the ONNX's own metadata


def test_an_engine_sidecar_declaring_a_mean_score_refuses_the_cuda_kernel(tmp_path: Path) -> None:
    from edge_ad.bench import run as bench
    engine = tmp_path / "model.fp32.engine"
    engine.write_bytes(b"not read: refused before the runtime is built")
    engine.with_suffix(".json").write_text(json.dumps({"metadata": {"image_score": "mean", "family": "nsa"}}))
    with pytest.raises(ValueError, match="mean of its map"):
        bench.open_bench_runtime(engine, "tensorrt", "fp32", "cuda", postprocess="cuda")
