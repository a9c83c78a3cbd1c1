"""DeepStream export: the nvinfer keys are nvinfer's own, and the normalising ONNX (0-255 RGB in) equals the plain
ONNX fed edge-ad's normalised input, through onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def deepstream_dir(private_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    from edge_ad.export.deepstream_config import write_deepstream

    return write_deepstream(private_bundle, tmp_path_factory.mktemp("ds"), precision="fp32", batch_size=2)


def test_written_keys_are_nvinfer_keys(deepstream_dir, private_bundle: Path):
    from edge_ad.bundle import read_bundle
    from edge_ad.export.deepstream_config import NVINFER_PROPERTY_KEYS, read_property_keys

    keys = read_property_keys(deepstream_dir.config)
    assert set(keys) <= NVINFER_PROPERTY_KEYS, sorted(set(keys) - NVINFER_PROPERTY_KEYS)
    size = read_bundle(private_bundle).image_size
    assert keys["network-type"] == "100" and keys["output-tensor-meta"] == "1"
    assert keys["network-mode"] == "0" and keys["batch-size"] == "2"
    assert keys["infer-dims"] == f"3;{size};{size}" and keys["model-color-format"] == "0"
    assert float(keys["net-scale-factor"]) == 1.0 and [float(v) for v in keys["offsets"].split(";")] == [0, 0, 0]
    assert (deepstream_dir.config.parent / keys["onnx-file"]) == deepstream_dir.onnx and deepstream_dir.onnx.is_file()
    assert keys["model-engine-file"] == deepstream_dir.engine
    sidecar = json.loads(deepstream_dir.sidecar.read_text())
    assert sidecar["threshold"] == pytest.approx(read_bundle(private_bundle).threshold)
    assert (deepstream_dir.config.parent / "anomaly_probe.py").is_file()


def test_network_modes_follow_precision(private_bundle: Path, tmp_path: Path):
    from edge_ad.export.deepstream_config import read_property_keys, write_deepstream

    ds = write_deepstream(private_bundle, tmp_path, precision="fp16")
    assert read_property_keys(ds.config)["network-mode"] == "2"
    with pytest.raises(ValueError, match="precision"):
        write_deepstream(private_bundle, tmp_path, precision="int4")


def test_normalising_onnx_matches_plain_onnx(deepstream_dir, private_bundle: Path, tiny_demo: Path, tmp_path: Path):
    from edge_ad.bundle import read_bundle
    from edge_ad.data.images import read_image
    from edge_ad.export.onnx_export import export_onnx

    pre = read_bundle(private_bundle).preprocessing
    plain = export_onnx(private_bundle, tmp_path / "plain.onnx", dynamic_batch=True, verify=False)
    paths = sorted((tiny_demo / "test").glob("*/*.png"))[:3]
    raw = np.stack([pre.geometry(read_image(p)).transpose(2, 0, 1) for p in paths]).astype(np.float32)  # 0-255 RGB
    normalised = pre.batch([read_image(p) for p in paths])
    names = ["image_score", "anomaly_map"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(str(plain), options).run(names, {"images": normalised})
    got = ort.InferenceSession(str(deepstream_dir.onnx), options).run(names, {"images": raw})
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert float(np.abs(g - w).max()) <= 1e-5
    assert float(np.ptp(want[1])) > 0  # the maps are not constant: the comparison means something


def test_cli_export_deepstream(private_bundle: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from edge_ad.cli.main import app

    result = CliRunner().invoke(app, ["export", str(private_bundle), "--format", "deepstream", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config_infer_edge_ad.txt").is_file() and (tmp_path / "model.ds.fp32.onnx").is_file()


def test_a_stale_onnx_is_refused_after_rethreshold(tiny_bundle: Path, tiny_demo: Path, tmp_path: Path):
    """A DeepStream config made from an ONNX written before `edge-ad threshold` would carry the old threshold."""
    import shutil

    from edge_ad.bundle import BundleError
    from edge_ad.export.deepstream_config import write_deepstream
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.thresholds.rethreshold import rethreshold

    bundle = tmp_path / "washer"
    bundle.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tiny_bundle / name, bundle / name)
    onnx_path = export_onnx(bundle, dynamic_batch=True, verify=False)
    first = write_deepstream(onnx_path, tmp_path / "ds1")  # current: accepted
    assert json.loads((tmp_path / "ds1" / "edge_ad.json").read_text())["threshold"] > 0 and first is not None

    rethreshold(bundle, tiny_demo / "train" / "good", sigmas=1.0)
    with pytest.raises(BundleError, match="edge-ad threshold"):
        write_deepstream(onnx_path, tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()
