"""What a predictions.jsonl line holds: every field is described in the README, and ``map_max`` is the highest value of
the full-resolution anomaly map (for SimpleNet at most the image score, which is the patch map's maximum)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge_ad.detector import Detector
from edge_ad.results import Prediction

README = Path(__file__).parents[1] / "README.md"


def _record_paragraph() -> str:
    text = README.read_text()
    match = re.search(r"Each line of `predictions.jsonl` is one input:(.*?)\n\n", text, re.S)
    assert match, "README describes the predictions.jsonl fields"
    return match.group(1)


def test_every_field_of_a_prediction_record_is_described_in_the_readme() -> None:
    record = Prediction("a.png", 1.5, 1.0, np.zeros((4, 4), np.float32), np.zeros((4, 4, 3), np.uint8)).record(
        overlay="o.png"
    )
    described = _record_paragraph()
    for key in [*record, "error", "rejected"]:
        assert f"`{key}`" in described, key
    assert "never decides the verdict" in described


def test_map_max_is_the_anomaly_maps_maximum_not_the_image_score() -> None:
    amap = np.zeros((8, 8), np.float32)
    amap[2, 3] = 2.463
    record = Prediction("dent.png", 1.938, 2.0, amap, np.zeros((8, 8, 3), np.uint8)).record()
    assert record["map_max"] == 2.463 and record["image_score"] == 1.938
    assert record["verdict"] == "good"  # map_max above the threshold does not make it anomalous


def test_simplenet_map_max_is_at_most_its_image_score(tiny_bundle: Path, tiny_demo: Path) -> None:
    det = Detector.load(tiny_bundle)
    images = sorted((tiny_demo / "test").glob("*/*.png"))[:6]
    for p in det.predict(images):
        record = p.record()
        assert record["map_max"] == round(float(p.anomaly_map.max()), 6)
        assert p.anomaly_map.shape == (det.preprocessing.image_size,) * 2  # the full-resolution map
        assert record["map_max"] <= record["image_score"] + 1e-5
