"""``edge-ad threshold``: the synthetic-f1 rule, re-deriving a bundle's threshold on new good images, refusals,
--dry-run, and exports made with the old threshold being refused afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.artifacts import artifact_metadata
from edge_ad.bundle import (
    MIN_THRESHOLD_IMAGES,
    BundleError,
    artifact_weights_sha256,
    check_artifact_current,
    read_bundle,
)
from edge_ad.cli.main import app
from edge_ad.data.images import read_image
from edge_ad.data.layout import train_images
from edge_ad.thresholds.rules import image_score_threshold, synthetic_f1_threshold


def _f1_of(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    flagged = scores > threshold  # the verdict's rule
    tp = int((flagged & labels).sum())
    return 2 * tp / (int(flagged.sum()) + int(labels.sum()))


def test_synthetic_f1_picks_the_f1_best_threshold() -> None:
    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(40, bool), np.ones(25, bool)]
    scores = np.r_[rng.normal(1.0, 0.3, 40), rng.normal(1.6, 0.4, 25)]
    # brute force: every cut between two neighbouring distinct scores, and below the lowest
    values = np.unique(scores)
    cuts = np.r_[values[0] - 1.0, (values[1:] + values[:-1]) / 2]
    best = max(_f1_of(labels, scores, t) for t in cuts)
    got = synthetic_f1_threshold(labels, scores)
    assert got["rule"] == "synthetic-f1" and got["good_count"] == 40 and got["anomalous_count"] == 25
    assert got["f1"] == pytest.approx(best, abs=1e-12)
    assert _f1_of(labels, scores, got["threshold"]) == pytest.approx(best, abs=1e-12)
    assert 0 < best < 1  # the classes overlap: the threshold is a real trade-off
    # the stored value sits strictly between two scores, so "score > threshold" flags what F1 counted
    assert not np.any(np.isclose(scores, got["threshold"], rtol=0, atol=1e-12))
    with pytest.raises(ValueError, match="both"):
        synthetic_f1_threshold(np.zeros(5), np.arange(5.0))


def _new_good_images(tiny_demo: Path, folder: Path, n: int, gain: float = 1.25) -> list[Path]:
    """The training images, brighter: the line's lighting changed."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in train_images(tiny_demo)[:n]:
        image = cv2.imread(str(path))
        cv2.imwrite(str(folder / path.name), np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8))
        out.append(folder / path.name)
    return out


@pytest.fixture(scope="module")
def new_good(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("relit") / "good"
    _new_good_images(tiny_demo, folder, 12)
    cv2.imwrite(str(folder / "zz_blank.png"), np.full((96, 96, 3), 128, np.uint8))  # a dead-camera frame
    return folder


def _scores(bundle: Path, paths: list[Path]) -> np.ndarray:
    """The bundle's torch model on the images, independently of the command."""
    from edge_ad.detector import Detector

    det = Detector.load(bundle, backend="torch")
    return np.array([p.image_score for p in det.predict([read_image(p) for p in paths])])


def test_threshold_command_rederives_and_records(private_bundle: Path, new_good: Path) -> None:
    from edge_ad.export.onnx_export import export_onnx

    fp32 = export_onnx(private_bundle, verify=False)  # made with the old threshold
    engine = private_bundle / "model.fp32.engine"  # an engine built from it: its sidecar carries the ONNX metadata
    engine.write_bytes(b"plan")
    sidecar = {"precision": "fp32", "metadata": artifact_metadata(fp32)}
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    check_artifact_current(private_bundle, artifact_weights_sha256(engine), engine)  # current before
    before = read_bundle(private_bundle)
    dry = CliRunner().invoke(app, ["threshold", str(private_bundle), str(new_good), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert read_bundle(private_bundle).raw == before.raw  # --dry-run writes nothing
    assert "dry run" in dry.output and "model.fp32.onnx" in dry.output

    result = CliRunner().invoke(app, ["threshold", str(private_bundle), str(new_good), "--sigmas", "2.5"])
    assert result.exit_code == 0, result.output
    after = read_bundle(private_bundle)  # loadable: the weights' hash seal still holds
    good = sorted(p for p in new_good.iterdir() if p.name != "zz_blank.png")
    expected = image_score_threshold(_scores(private_bundle, good), 2.5)
    assert after.threshold == pytest.approx(expected["threshold"], rel=1e-6)
    assert after.threshold != pytest.approx(before.threshold, rel=1e-3)  # brighter images score differently
    image = after.score_stats["image"]
    assert image["rule"] == "good-sigma" and image["good_count"] == 12 and image["sigmas"] == 2.5
    assert after.score_stats["threshold_rule"] == "good-sigma"
    (entry,) = after.raw["threshold_history"]
    assert entry["threshold"] == before.threshold and entry["rule"] == "good-sigma"
    assert entry["images"] == before.score_stats["image"]["good_count"] and entry["replaced"]
    names = [p.name for p in good]
    assert entry["by"] == {"rule": "good-sigma", "images": 12, "folder": str(new_good), "names": names, "sigmas": 2.5}
    assert f"{before.threshold:.6g}" in result.output and f"{after.threshold:.6g}" in result.output
    assert "zz_blank.png" in result.output and "input gate" in result.output  # counted and named, not scored
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["images"] == 12 and summary["new"]["threshold"] == after.threshold

    # the export still carries the old threshold: refused, with the command that fixes it
    assert "refused from now on: model.fp32.onnx" in result.output
    from edge_ad.detector import Detector

    with pytest.raises(BundleError, match=r"edge-ad threshold.*re-export it with `edge-ad export"):
        Detector.load(fp32)
    export_onnx(private_bundle, verify=False)
    assert Detector.load(fp32).threshold == pytest.approx(after.threshold, rel=1e-9)
    assert "refused from now on: model.fp32.engine" in result.output
    with pytest.raises(BundleError, match="rebuild the engine"):
        check_artifact_current(private_bundle, artifact_weights_sha256(engine), engine)


def test_threshold_modules_load_no_torch() -> None:
    from tests.layering import assert_runs_without

    code = (
        "import edge_ad.thresholds.rethreshold, edge_ad.thresholds.rules, edge_ad.calibration.recipes, "
        "edge_ad.calibration.choice"
    )
    assert_runs_without(code, ["torch"])


def test_threshold_command_refuses_in_one_line(private_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    few = tmp_path / "few"
    _new_good_images(tiny_demo, few, MIN_THRESHOLD_IMAGES - 1)
    junk = tmp_path / "junk"
    _new_good_images(tiny_demo, junk, MIN_THRESHOLD_IMAGES)
    (junk / "broken.png").write_bytes(b"not a png")
    before = (private_bundle / "config.json").read_bytes()
    cases = {
        str(few): f"{MIN_THRESHOLD_IMAGES - 1} good image",
        str(tmp_path / "missing"): "not found",
        str(junk): "broken.png",
    }
    for folder, text in cases.items():
        result = runner.invoke(app, ["threshold", str(private_bundle), folder])
        assert result.exit_code == 2, result.output
        assert text in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 2, result.output  # one line (rich may wrap it once)
    result = runner.invoke(app, ["threshold", str(private_bundle), str(junk), "--rule", "best"])
    assert result.exit_code == 2 and "unknown threshold rule" in result.output
    assert (private_bundle / "config.json").read_bytes() == before


class _NearestGood:
    """A stand-in model that tells synthetic anomalies apart: the map is the distance to the nearest of the good
    images it was given (a good image scores 0, an anomaly made on it scores its patch)."""

    name = "nearest-good"

    def __init__(self, good: np.ndarray, constant: bool = False):
        self.good, self.constant = good, constant

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps = np.stack([np.abs(self.good - x).sum(1).min(0) for x in batch]).astype(np.float32)
        if self.constant:
            maps[:] = 1.0
        return maps.reshape(len(batch), -1).max(1), maps


def _good_batch(bundle: Path, folder: Path) -> tuple[list[Path], np.ndarray]:
    pre = read_bundle(bundle).preprocessing
    good = sorted(p for p in folder.iterdir() if p.name != "zz_blank.png")
    return good, pre.batch([read_image(p) for p in good])


@pytest.mark.parametrize("constant", [False, True])
def test_synthetic_f1_rule_on_new_images(
    private_bundle: Path, new_good: Path, monkeypatch: pytest.MonkeyPatch, constant: bool
) -> None:
    import edge_ad.runtimes.torch_runtime as torch_runtime
    from edge_ad.synthesis.params import NsaParams, params_for
    from edge_ad.synthesis.validation import build_validation_set
    from edge_ad.thresholds.rethreshold import result_lines, rethreshold

    good, batch = _good_batch(private_bundle, new_good)
    fake = _NearestGood(batch, constant)
    monkeypatch.setattr(torch_runtime, "TorchRuntime", lambda model, device="cpu", **_: fake)
    if constant:  # a model that tells nothing apart (AUROC 0.5): the set is not used, good-sigma is, and it says so
        result = rethreshold(private_bundle, new_good, rule="synthetic-f1", seed=11, per_image=2, dry_run=True)
        assert result["rule"] == "good-sigma" and result["synthetic"] is None
        line = "--rule synthetic-f1: the synthetic validation set cannot separate (image AUROC 0.5000"
        assert line in result["fallback"]
        assert "good-sigma" in result["fallback"] and result["fallback"] in result_lines(result)
        return
    before = read_bundle(private_bundle)
    result = rethreshold(private_bundle, new_good, rule="synthetic-f1", seed=11, per_image=2)
    syn = result["synthetic"]
    assert syn["seed"] == 11 and syn["n_good"] == 12 and syn["n_anomalous"] == 24 and syn["kind"] == "nsa-synthetic"
    # independently: the same synthetic set, scored by the same model, and its F1-best threshold
    pre = before.preprocessing
    recorded = before.training.get("synthetic_validation") or {}
    params = NsaParams.from_json(recorded["params"]) if recorded.get("params") else params_for("washer")
    crops = [pre.geometry(read_image(p)) for p in good]
    vset = build_validation_set(crops, [p.name for p in good], params, seed=11, per_image=2)
    scores, _ = fake.predict(np.stack([pre.normalize(im) for im in vset.images]))
    expected = synthetic_f1_threshold(vset.labels, scores)
    assert expected["f1"] == 1.0 and expected["good_flagged"] == 0  # the stand-in separates the two classes
    after = read_bundle(private_bundle)  # written, seal intact
    assert after.threshold == pytest.approx(expected["threshold"], rel=1e-6)
    image = after.score_stats["image"]
    assert image["rule"] == "synthetic-f1" and image["f1"] == 1.0 and image["recall"] == 1.0
    assert after.score_stats["synthetic_validation"]["seed"] == 11
    assert scores[: len(good)].max() < after.threshold < scores[len(good) :].min()
    assert after.raw["threshold_history"][-1]["threshold"] == before.threshold


# --- exports after `edge-ad threshold`: their own threshold comes from the same images, by the same rule ---------


def _fresh_copy(tiny_bundle: Path, folder: Path) -> Path:
    """A copy of the shared tiny bundle that a test may re-threshold and export into."""
    import shutil

    out = folder / "washer"
    out.mkdir(parents=True)
    for item in tiny_bundle.iterdir():
        if item.is_file() and item.name in ("config.json", "model.safetensors"):
            shutil.copy2(item, out / item.name)
    return out


def _new_scores(runtime, bundle: Path, new_good: Path) -> np.ndarray:
    good, batch = _good_batch(bundle, new_good)
    return runtime.predict(batch)[0]


@pytest.fixture(scope="module")
def relit_bundle(tiny_bundle: Path, new_good: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle re-thresholded on the brighter images with k = 2."""
    from edge_ad.thresholds.rethreshold import rethreshold

    bundle = _fresh_copy(tiny_bundle, tmp_path_factory.mktemp("relit_bundle"))
    rethreshold(bundle, new_good, sigmas=2.0)
    return bundle


def test_fp16_export_after_rethreshold_uses_its_images(relit_bundle: Path, new_good: Path) -> None:
    from edge_ad.detector import Detector
    from edge_ad.export.onnx_export import export_onnx_checked
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime

    bundle = relit_bundle
    info = read_bundle(bundle)
    assert info.raw["threshold_history"][-1]["by"]["names"] == sorted(p.name for p in _good_batch(bundle, new_good)[0])
    result = export_onnx_checked(bundle, precision="fp16", verify=False)
    runtime = OnnxRuntime(result.path)
    # independently: thresholds.rules on the fp16 ONNX's own scores of the re-threshold images (gate-refused blank
    # frame left out, as the command did), with the command's k
    expected = image_score_threshold(_new_scores(runtime, bundle, new_good), 2.0)["threshold"]
    assert result.threshold["value"] == pytest.approx(expected, rel=1e-6)
    assert runtime.threshold == pytest.approx(expected, rel=1e-6)
    # and not the value the held-out training images would give (what the export did before)
    folder = Path(info.training["data"]) / "train" / "good"
    held = runtime.preprocessing.batch([read_image(folder / n) for n in info.training["holdout_images"]])
    old_way = image_score_threshold(runtime.predict(held)[0], info.training["threshold_sigmas"])["threshold"]
    assert abs(old_way - expected) > 1e-3 * abs(expected)
    stats = runtime.score_stats
    assert stats["threshold_basis"]["folder"] == str(new_good) and stats["threshold_basis"]["rule"] == "good-sigma"
    assert stats["image"]["good_count"] == 12 and stats["fp32_threshold"] == info.threshold
    assert str(new_good) in result.threshold["source"] and "good-sigma" in result.threshold["source"]
    Detector.load(result.path)  # current: made with the bundle's threshold


def test_int8_export_after_rethreshold_names_its_images(relit_bundle: Path, new_good: Path) -> None:
    from edge_ad.calibration import calibrate
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime

    bundle = relit_bundle
    info = read_bundle(bundle)
    report = calibrate(bundle, method="percentile", recipes=("keep_head_fp",), export_fp32=export_onnx)
    th = report["threshold"]
    assert th["basis"]["folder"] == str(new_good) and th["basis"]["rule"] == "good-sigma"
    assert th["basis"]["images"] == 12
    assert str(new_good) in th["rule"] and str(new_good) in th["int8_source"]
    assert th["names"] == sorted(p.name for p in _good_batch(bundle, new_good)[0])
    # the fp32 ONNX, by the same rule on the same images, gives back the bundle's threshold
    assert th["fp32_onnx"] == pytest.approx(info.threshold, rel=1e-4)
    int8 = OnnxRuntime(bundle / "model.int8.onnx")
    k = info.score_stats["image"]["sigmas"]
    expected = image_score_threshold(_new_scores(int8, bundle, new_good), k)["threshold"]
    assert th["int8"] == pytest.approx(expected, rel=1e-6) and int8.threshold == pytest.approx(expected, rel=1e-6)
    assert str(new_good) in (bundle / "calibration_report.md").read_text()


def test_export_refuses_when_the_rethreshold_images_are_gone(
    tiny_bundle: Path, new_good: Path, tmp_path: Path
) -> None:
    import shutil

    from edge_ad.thresholds.rethreshold import rethreshold

    bundle = _fresh_copy(tiny_bundle, tmp_path)
    images = tmp_path / "line2"
    shutil.copytree(new_good, images)
    rethreshold(bundle, images)
    shutil.rmtree(images)
    for precision in ("fp16", "int8"):
        result = CliRunner().invoke(app, ["export", str(bundle), "--precision", precision])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3, result.output
        assert str(images) in result.output.replace("\n", "") and "edge-ad threshold" in result.output
    assert not (bundle / "model.fp16.onnx").exists() and not (bundle / "model.int8.onnx").exists()


def test_synthetic_f1_basis_rebuilds_the_commands_set(
    tiny_bundle: Path, new_good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a synthetic-f1 re-threshold, an export's threshold sets are the command's synthetic set: the same model
    run on them by the same rule gives back the stored threshold exactly."""
    import edge_ad.runtimes.torch_runtime as torch_runtime
    from edge_ad.thresholds.rethreshold import rethreshold
    from edge_ad.thresholds.sets import basis_statistics, bundle_threshold_sets, run_model

    bundle = _fresh_copy(tiny_bundle, tmp_path)
    fake = _NearestGood(_good_batch(bundle, new_good)[1])
    monkeypatch.setattr(torch_runtime, "TorchRuntime", lambda model, device="cpu", **_: fake)
    rethreshold(bundle, new_good, rule="synthetic-f1", seed=5, per_image=2)
    info = read_bundle(bundle)
    sets = bundle_threshold_sets(info, info.preprocessing)
    assert sets is not None and sets.anomalies is not None and sets.basis.rule == "synthetic-f1"
    assert len(sets.good.paths) == 12 and len(sets.anomalies.paths) == 24 and "seed 5" in sets.basis.summary()
    outs = run_model(fake, sets.sets, "test", 0.0)
    stats = basis_statistics(sets, outs[0], outs[1])
    assert stats["image"]["rule"] == "synthetic-f1"
    assert stats["image"]["threshold"] == pytest.approx(info.threshold, rel=1e-9)
    with pytest.raises(ValueError, match="calls every good image anomalous"):
        constant = _NearestGood(_good_batch(bundle, new_good)[1], constant=True)
        outs = run_model(constant, sets.sets, "test", 0.0)
        basis_statistics(sets, outs[0], outs[1])
