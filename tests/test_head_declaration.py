"""The head a family's graph declares (image score max/mean, smoothing sigma) travels into the ONNX metadata, and the
numpy head built from that declaration -- what ``edge-ad bench``'s post-processing column times -- gives what each
runtime's own head gives, for SimpleNet and for NSA (the demo preset's sigma 4 and the paper's sigma 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from edge_ad.bench.head import head_of, numpy_head, patch_map_of
from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.export.onnx_export import ExportError, graph_metadata
from edge_ad.models.nsa.model import NsaConfig, NsaModel
from edge_ad.models.registry import load_model
from edge_ad.postprocess.image_score import HeadDeclaration, smoothing_sigma_of
from edge_ad.postprocess.numpy_ops import postprocess
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from edge_ad.runtimes.torch_runtime import TorchRuntime

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _exported(bundle: Path) -> Path:
    result = runner.invoke(app, ["export", str(bundle), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    return bundle / "model.fp32.onnx"


def _batch(runtime: OnnxRuntime, tiny_demo: Path) -> np.ndarray:
    files = sorted((tiny_demo / "test").glob("*/*.png"))[:6]
    return runtime.preprocessing.batch([read_image(p) for p in files])


@pytest.fixture(scope="module")
def simplenet_onnx(private_bundle: Path) -> Path:
    return _exported(private_bundle)


@pytest.fixture(scope="module")
def nsa_onnx(private_nsa_bundle: Path) -> Path:
    return _exported(private_nsa_bundle)


@pytest.mark.parametrize("which", ["simplenet", "nsa"])
def test_export_writes_the_graphs_head_and_the_numpy_head_matches_the_onnx_one(
    which: str, simplenet_onnx: Path, nsa_onnx: Path, tiny_demo: Path
) -> None:
    path = simplenet_onnx if which == "simplenet" else nsa_onnx
    model, _ = load_model(path.parent)
    declared = HeadDeclaration.of_graph(model.eval().inference_graph())
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert float(meta["smoothing_sigma"]) == declared.smoothing_sigma
    runtime = OnnxRuntime(path)
    assert runtime.declared_head == head_of(runtime) == declared
    assert declared.image_score == ("max" if which == "simplenet" else "mean")
    x = _batch(runtime, tiny_demo)
    patch = patch_map_of(runtime, x)
    assert patch.shape[1:] == ((8, 8) if which == "simplenet" else (64, 64))  # 64 px images: 1/8 grid vs per pixel
    scores, maps = runtime.predict(x)
    got_scores, got_maps = numpy_head(runtime)(patch, maps.shape[1:])
    span = float(np.ptp(maps)) + 1e-12
    assert np.abs(got_scores - scores).max() / span < 1e-4
    assert np.abs(got_maps - maps).max() / span < 1e-4


@pytest.mark.parametrize("sigma", [0.0, 4.0, 2.5])
def test_numpy_head_matches_the_nsa_torch_head_for_any_declared_sigma(sigma: float) -> None:
    torch.manual_seed(0)
    model = NsaModel(NsaConfig(width=8, smoothing_sigma=sigma), image_size=64).eval()
    runtime = TorchRuntime(model)
    assert head_of(runtime) == HeadDeclaration("mean", sigma)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    scores, maps = runtime.predict(x)
    got_scores, got_maps = numpy_head(runtime)(patch_map_of(runtime, x), (64, 64))
    assert np.allclose(got_scores, scores, atol=1e-6)
    assert np.allclose(got_maps, maps, atol=1e-5)
    if sigma == 0:  # no smoothing: the map is the patch map itself
        assert np.array_equal(got_maps, patch_map_of(runtime, x))


def test_the_mean_and_the_max_head_differ_on_one_hot_spot() -> None:
    patch = np.zeros((1, 20, 20), np.float32)
    patch[0, 3, 4] = 1.0
    assert postprocess(patch, (20, 20), 0.0, image_score="max")[0][0] == 1.0
    assert postprocess(patch, (20, 20), 0.0, image_score="mean")[0][0] == pytest.approx(1 / 400)
    with pytest.raises(ValueError, match="max or mean"):
        postprocess(patch, (20, 20), 0.0, image_score="median")
    with pytest.raises(ValueError, match=">= 0"):
        postprocess(patch, (20, 20), -1.0)


def test_smoothing_sigma_is_read_strictly_and_older_exports_are_simplenets() -> None:
    assert smoothing_sigma_of({}) == 4.0  # exported before the key existed: SimpleNet's sigma
    assert smoothing_sigma_of({"smoothing_sigma": "0.0"}) == 0.0
    for bad in ("-1", "nan", "inf", "four"):
        with pytest.raises(ValueError, match="smoothing_sigma") as err:
            smoothing_sigma_of({"smoothing_sigma": bad}, "m.onnx")
        assert "\n" not in str(err.value) and "m.onnx" in str(err.value)


def test_export_refuses_a_graph_that_declares_no_head() -> None:
    class Undeclared(torch.nn.Module):
        image_score = "max"
        int8_layout: dict[str, object] = {}

    with pytest.raises(ExportError, match="smoothing_sigma"):
        graph_metadata(Undeclared())
