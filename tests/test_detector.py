"""The Python API: load a bundle, predict on arrays and paths."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad.data.gate import InputRejected
from edge_ad.data.images import ImageError, read_image
from edge_ad.detector import Detector, Failure, expand_inputs


def test_predict_on_arrays_and_paths_agree(tiny_bundle: Path, tiny_demo: Path) -> None:
    det = Detector.load(tiny_bundle)
    paths = sorted((tiny_demo / "test" / "rust").glob("*.png"))
    from_paths = det.predict(paths)
    from_arrays = det.predict([read_image(p) for p in paths])
    assert [p.image_score for p in from_paths] == pytest.approx([p.image_score for p in from_arrays])
    single = det.predict(read_image(paths[0]))
    assert len(single) == 1 and single[0].anomaly_map.shape == (64, 64)
    assert single[0].verdict == ("anomalous" if single[0].image_score > det.threshold else "good")


def test_failures_are_reported_in_order(tiny_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    det = Detector.load(tiny_bundle)
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    good = sorted((tiny_demo / "test" / "good").glob("*.png"))[0]
    results = list(det.predict_paths([good, bad, good]))
    assert [type(r).__name__ for r in results] == ["Prediction", "Failure", "Prediction"]
    assert isinstance(results[1], Failure) and "empty.png" in results[1].error
    with pytest.raises(ImageError):
        det.predict([good, bad])


def test_wrong_batch_shape_is_a_clear_error(tiny_bundle: Path) -> None:
    det = Detector.load(tiny_bundle)
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\]"):
        det.runtime.predict(np.zeros((1, 3, 32, 32), np.float32))


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])), path
    return path


def test_gate_rejections_are_failures_never_verdicts(tiny_bundle: Path, tiny_demo: Path, tmp_path: Path) -> None:
    det = Detector.load(tiny_bundle)
    good = sorted((tiny_demo / "test" / "good").glob("*.png"))[0]
    black = _write_rgb(tmp_path / "black.png", np.zeros((256, 256, 3), np.uint8))
    dot = _write_rgb(tmp_path / "dot.png", np.full((1, 1, 3), 200, np.uint8))
    results = list(det.predict_paths([good, black, dot, good]))
    assert [type(r).__name__ for r in results] == ["Prediction", "Failure", "Failure", "Prediction"]
    assert isinstance(results[1], Failure) and results[1].rejected and "black.png: blank or flat" in results[1].error
    assert isinstance(results[2], Failure) and results[2].rejected
    assert "dot.png: 1x1 (HxW) is too small" in results[2].error
    with pytest.raises(InputRejected, match="black.png"):
        det.predict([good, black])
    unreadable = tmp_path / "empty.png"
    unreadable.write_bytes(b"")
    (failure,) = det.predict_paths([unreadable])
    assert isinstance(failure, Failure) and not failure.rejected


def test_arrays_are_gated_too(tiny_bundle: Path, tiny_demo: Path) -> None:
    det = Detector.load(tiny_bundle)
    img = read_image(sorted((tiny_demo / "test" / "good").glob("*.png"))[0])
    with pytest.raises(InputRejected, match=r"array\[1\]: blank or flat frame"):
        det.predict_arrays([img, np.zeros_like(img)])
    with pytest.raises(InputRejected, match="cam-2: blank or flat frame"):
        det.predict_arrays([np.full((480, 640, 3), 17, np.uint8)], sources=["cam-2"])
    with pytest.raises(InputRejected, match=r"array\[0\]: 1x1 \(HxW\) is too small"):
        det.predict(np.zeros((1, 1, 3), np.uint8))
    (pred,) = det.predict(img)
    assert np.isfinite(pred.image_score)


def test_image_named_folders_and_empty_folders_are_reported(
    tiny_bundle: Path, tiny_demo: Path, tmp_path: Path
) -> None:
    det = Detector.load(tiny_bundle)
    parts = tmp_path / "parts"
    parts.mkdir()
    src = sorted((tiny_demo / "test" / "good").glob("*.png"))[0]
    (parts / "a.png").write_bytes(src.read_bytes())
    (parts / "folder.png").mkdir()
    (parts / "zz.png").write_bytes(src.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    items = expand_inputs([parts, empty])
    assert expand_inputs(items) == items  # failures pass through a second expansion
    results = list(det.predict_paths([parts, empty]))
    assert [Path(r.source).name for r in results] == ["a.png", "folder.png", "zz.png", "empty"]
    assert [type(r).__name__ for r in results] == ["Prediction", "Failure", "Prediction", "Failure"]
    assert isinstance(results[1], Failure) and "folder.png is a folder, not an image file" in results[1].error
    assert isinstance(results[3], Failure) and "no images in folder" in results[3].error
