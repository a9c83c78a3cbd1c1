"""Every artifact edge-ad loads is trustworthy, or refused with one clear line (issue 9, points 3, 5, 6, 7, 8).

Stale exports (ONNX, INT8 ONNX, engine), non-finite thresholds, thresholds on too few images, an offline
ImageNet download, files that are not ONNX models, and bundles whose config or weights were tampered with.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edge_ad.bundle import (
    CONFIG_NAME,
    MIN_THRESHOLD_IMAGES,
    WEIGHTS_NAME,
    BundleError,
    check_artifact_current,
    file_sha256,
    read_bundle,
    threshold_warning,
)
from edge_ad.cli.main import app
from edge_ad.detector import Detector
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from tests.layering import assert_runs_without

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(private_bundle: Path) -> Path:
    return private_bundle


@pytest.fixture(scope="module")
def fp32_onnx(bundle: Path) -> Path:
    from edge_ad.export.onnx_export import export_onnx

    return export_onnx(bundle)


@pytest.fixture(scope="module")
def stale_bundle(bundle: Path, fp32_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundle whose weights were replaced (as retraining does) after the ONNX was exported."""
    from edge_ad.models.registry import load_model
    from edge_ad.training.finish import save_model

    out = _copy_bundle(bundle, tmp_path_factory.mktemp("stale") / "washer")
    shutil.copy2(fp32_onnx, out / "model.fp32.onnx")
    shutil.copy2(fp32_onnx, out / "model.int8.onnx")  # same path through the runtime as a real INT8 export
    model, info = load_model(out)
    for param in model.discriminator.parameters():
        param.data.add_(0.01)
        break
    save_model(
        model,
        out,
        preprocessing=info.preprocessing,
        threshold=info.threshold,
        score_stats=info.score_stats,
        backbone=info.backbone,
        training=info.training,
    )
    assert read_bundle(out).raw["files"][WEIGHTS_NAME] != read_bundle(bundle).raw["files"][WEIGHTS_NAME]
    return out


def _copy_bundle(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy2(src / name, dst / name)
    return dst


def _edit_config(bundle: Path, **changes: object) -> None:
    config = json.loads((bundle / CONFIG_NAME).read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (bundle / CONFIG_NAME).write_text(json.dumps(config))


def _image(tiny_demo: Path) -> str:
    return str(sorted((tiny_demo / "test" / "good").glob("*.png"))[0])


def _assert_one_line_error(result: object, *needles: str) -> None:
    """Exit code 2, no traceback, one ``error:`` line holding every needle."""
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], errors[0]


# ----------------------------------------------------------------------------- point 3: stale exports
def test_stale_onnx_is_refused_through_the_bundle_and_directly(
    stale_bundle: Path, bundle: Path, fp32_onnx: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    for target, kwargs in ((stale_bundle, {"backend": "onnxruntime"}), (stale_bundle / "model.fp32.onnx", {})):
        with pytest.raises(BundleError, match="stale") as info:
            Detector.load(target, **kwargs)
        assert f"edge-ad export {stale_bundle} --precision fp32" in str(info.value)
    with pytest.raises(BundleError, match=r"stale.*--precision int8"):
        Detector.load(stale_bundle, backend="onnxruntime", precision="int8")
    result = runner.invoke(app, ["predict", str(stale_bundle), _image(tiny_demo), "--backend", "onnxruntime",
                                 "--out", str(tmp_path / "p")])
    _assert_one_line_error(result, "stale", "edge-ad export")
    # controls: the same file is fine beside the bundle it came from, and on its own (no bundle to compare with)
    assert Detector.load(fp32_onnx).threshold == read_bundle(bundle).threshold
    alone = tmp_path / "alone" / "model.fp32.onnx"
    alone.parent.mkdir()
    shutil.copy2(fp32_onnx, alone)
    assert np.isfinite(Detector.load(alone).threshold)


def test_stale_engine_is_refused_from_its_sidecar(stale_bundle: Path, bundle: Path, fp32_onnx: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(fp32_onnx)).metadata_props}
    engine = stale_bundle / "model.fp32.engine"
    engine.write_bytes(b"not built here")
    (stale_bundle / "model.fp32.json").write_text(json.dumps({"onnx": "model.fp32.onnx", "metadata": meta}))
    with pytest.raises(BundleError, match=r"stale.*--format engine"):
        Detector.load(engine)
    with pytest.raises(BundleError, match="stale"):
        Detector.load(stale_bundle, backend="tensorrt")
    # control: the same recorded hash is current for the bundle the ONNX came from
    check_artifact_current(bundle, meta["bundle_weights_sha256"], bundle / "model.fp32.engine")
    with pytest.raises(BundleError, match="records no bundle weights hash"):
        check_artifact_current(bundle, None, bundle / "model.fp32.engine")


def test_loading_a_current_onnx_beside_its_bundle_needs_no_torch(fp32_onnx: Path) -> None:
    assert_runs_without(f"from edge_ad.detector import Detector\nDetector.load({str(fp32_onnx)!r})", ["torch"])


def test_retraining_sets_aside_old_exports_and_warns_on_a_thin_threshold(
    fp32_onnx: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy2(fp32_onnx, out / "model.fp32.onnx")  # from other weights (the tiny bundle, seed 1)
    (out / "model.fp32.engine").write_bytes(b"old engine")
    meta = {p.key: p.value for p in onnx.load(str(fp32_onnx)).metadata_props}
    (out / "model.fp32.json").write_text(json.dumps({"metadata": meta}))
    good = tmp_path / "good"  # three good images: one to train on, two held out (fast, and a thin threshold)
    good.mkdir()
    for src in sorted((tiny_demo / "train" / "good").glob("*.png"))[:3]:
        shutil.copy2(src, good / src.name)
    args = ["train", str(good), "--out", str(out), "--random-backbone", "--image-size", "64", "--resize", "72",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (out / "model.fp32.onnx").exists() and not (out / "model.fp32.engine").exists()
    for name in ("model.fp32.onnx.stale", "model.fp32.engine.stale", "model.fp32.json.stale"):
        assert (out / name).is_file(), name
    count = read_bundle(out).score_stats["image"]["good_count"]
    assert count < MIN_THRESHOLD_IMAGES
    assert f"only {count} held-out good image" in result.output


# ----------------------------------------------------------------------------- point 5: thresholds
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True])
def test_non_finite_or_non_number_threshold_is_refused(bad: object, bundle: Path, tmp_path: Path) -> None:
    copy = _copy_bundle(bundle, tmp_path / "b")
    _edit_config(copy, threshold=bad)
    with pytest.raises(BundleError, match="threshold"):
        read_bundle(copy)


def test_nan_threshold_bundle_is_one_line_in_predict(bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    copy = _copy_bundle(bundle, tmp_path / "b")
    _edit_config(copy, threshold=float("nan"))
    result = runner.invoke(app, ["predict", str(copy), _image(tiny_demo), "--out", str(tmp_path / "p")])
    _assert_one_line_error(result, "threshold", "not finite")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "high"])
def test_non_finite_threshold_in_onnx_metadata_is_refused(bad: str, fp32_onnx: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(fp32_onnx))
    for prop in proto.metadata_props:
        if prop.key == "threshold":
            prop.value = bad
    path = tmp_path / "model.fp32.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(BundleError, match="threshold"):
        OnnxRuntime(path)


def test_threshold_on_few_images_warns_at_predict(bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    stats = read_bundle(bundle).score_stats
    count = stats["image"]["good_count"]
    assert count < MIN_THRESHOLD_IMAGES  # the tiny bundle holds out 2 of 12 images
    result = runner.invoke(app, ["predict", str(bundle), _image(tiny_demo), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert f"only {count} held-out good image" in result.output
    # the same bundle with enough images behind its threshold says nothing
    copy = _copy_bundle(bundle, tmp_path / "b")
    _edit_config(copy, score_stats={**stats, "image": {**stats["image"], "good_count": MIN_THRESHOLD_IMAGES}})
    result = runner.invoke(app, ["predict", str(copy), _image(tiny_demo), "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert "held-out good image" not in result.output


def test_threshold_warning_rules() -> None:
    enough = {"threshold_source": "holdout", "image": {"good_count": MIN_THRESHOLD_IMAGES}}
    assert threshold_warning(0.5, enough) is None
    few = {"threshold_source": "holdout", "image": {"good_count": MIN_THRESHOLD_IMAGES - 1}}
    assert f"only {MIN_THRESHOLD_IMAGES - 1}" in (threshold_warning(0.5, few) or "")
    on_train = {"threshold_source": "training images (too few images to hold any out)", "image": {"good_count": 1}}
    assert "training images" in (threshold_warning(0.5, on_train) or "")
    assert "no verdict threshold" in (threshold_warning(float("inf"), enough) or "")


# ----------------------------------------------------------------------------- point 6: offline ImageNet weights
def test_offline_imagenet_download_is_one_line(
    tiny_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> object:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    args = ["train", str(tiny_demo), "--out", str(tmp_path / "m"), "--backbone", "wide_resnet50_2",
            "--backbone-weights", "imagenet1k_v1",
            "--image-size", "64", "--resize", "72", "--epochs", "1", "--device", "cpu"]
    result = runner.invoke(app, args)
    _assert_one_line_error(result, "could not download", "name resolution", "--backbone-weights /path/to/")
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert not cache.exists() or not any(cache.iterdir()), "a failed download left a file behind"


def test_download_with_a_wrong_hash_is_refused_and_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_ad.models.backbones.wide_resnet import BackboneWeightsError, download_imagenet_weights

    payload = b"an intercepting proxy's login page"
    assert not hashlib.sha256(payload).hexdigest().startswith("95faca4d")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))
    with pytest.raises(BackboneWeightsError, match="expected 95faca4d"):
        download_imagenet_weights("imagenet1k_v1", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- point 7: files that are not models
def test_text_and_truncated_onnx_are_one_line(fp32_onnx: Path, tiny_demo: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(fp32_onnx.read_bytes()[: fp32_onnx.stat().st_size // 2])
    for path in (text, truncated):
        with pytest.raises(BundleError, match="not a valid ONNX model") as info:
            OnnxRuntime(path)
        assert str(path) in str(info.value)
        result = runner.invoke(app, ["predict", str(path), _image(tiny_demo), "--out", str(tmp_path / "p")])
        _assert_one_line_error(result, str(path), "not a valid ONNX model")


def test_valid_onnx_without_edge_ad_metadata_is_refused(tiny_demo: Path, tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("image_score", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["image_score"])], "g", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(BundleError, match="lacks edge-ad metadata"):
        OnnxRuntime(path)
    result = runner.invoke(app, ["predict", str(path), _image(tiny_demo), "--out", str(tmp_path / "p")])
    _assert_one_line_error(result, "lacks edge-ad metadata")


# ----------------------------------------------------------------------------- point 8: tampered bundles
def test_edited_config_names_the_parameter_and_both_shapes(bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    from edge_ad.models.registry import load_model

    copy = _copy_bundle(bundle, tmp_path / "b")
    model = json.loads((copy / CONFIG_NAME).read_text())["model"]
    hidden = model["disc_hidden"]
    _edit_config(copy, model={**model, "disc_hidden": 512})
    with pytest.raises(BundleError, match=r"discriminator\.\S+ has shape") as info:
        load_model(copy)
    assert str(hidden) in str(info.value) and "512" in str(info.value)
    result = runner.invoke(app, ["predict", str(copy), _image(tiny_demo), "--out", str(tmp_path / "p")])
    _assert_one_line_error(result, "has shape", "512")


def test_config_without_the_weights_hash_is_refused(bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    copy = _copy_bundle(bundle, tmp_path / "b")
    weights = copy / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, and the hash removed: the case
    _edit_config(copy, files=None)
    with pytest.raises(BundleError, match="records no SHA-256"):
        read_bundle(copy)
    result = runner.invoke(app, ["predict", str(copy), _image(tiny_demo), "--out", str(tmp_path / "p")])
    _assert_one_line_error(result, "records no SHA-256", WEIGHTS_NAME)


def test_unreadable_safetensors_is_a_bundle_error(bundle: Path, tmp_path: Path) -> None:
    from edge_ad.models.registry import load_model

    copy = _copy_bundle(bundle, tmp_path / "b")
    weights = copy / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    _edit_config(copy, files={WEIGHTS_NAME: file_sha256(weights)})  # hash re-sealed: only the reader can tell
    with pytest.raises(BundleError, match="not a readable safetensors file") as info:
        load_model(copy)
    assert str(weights) in str(info.value)
