"""The Python API: load a bundle, predict on arrays and paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ad.data.images import ImageError, read_image
from edge_ad.detector import Detector, Failure


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
