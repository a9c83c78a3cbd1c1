"""A served frame passes the input gate once: at its source (HTTP decode, hot folder, camera), or in the worker when
a job comes without it; never again inside the detector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_ad.data import gate
from edge_ad.detector import Detector
from edge_ad.serve import worker as worker_mod
from edge_ad.serve.metrics import Metrics
from edge_ad.serve.sinks import ResultsLog, Sinks
from edge_ad.serve.worker import InferenceWorker, Job


@pytest.fixture(scope="module")
def detector(private_bundle: Path) -> Detector:
    pytest.importorskip("prometheus_client")
    from edge_ad.export.onnx_export import export_onnx

    return Detector.load(export_onnx(private_bundle, private_bundle / "model.fp32.onnx", verify=False))


def test_each_frame_is_gated_once(detector: Detector, tiny_demo: Path, tmp_path: Path, monkeypatch) -> None:
    from edge_ad import detector as detector_mod
    from edge_ad.data.images import read_image

    calls: list[str] = []

    def counting(rgb: np.ndarray, source: str, limits: Any = None) -> None:
        calls.append(source)
        gate.check_frame(rgb, source, limits)

    monkeypatch.setattr(worker_mod, "check_frame", counting)
    monkeypatch.setattr(detector_mod, "check_frame", counting)
    image = read_image(sorted((tiny_demo / "test" / "good").glob("*.png"))[0])
    done: list[dict[str, Any]] = []
    worker = InferenceWorker(detector, Sinks(ResultsLog(tmp_path / "results.jsonl")), Metrics(), max_queue=4)
    worker.start()
    jobs = [
        Job(image=image, source="http", name="gated", on_done=done.append, gated=True),
        Job(image=image, source="test", name="ungated", on_done=done.append),
        Job(image=np.zeros((64, 64, 3), np.uint8), source="test", name="blank", on_done=done.append),
    ]
    for job in jobs:
        assert worker.submit(job, block=True, timeout=10)
    assert worker.drain_and_stop(30)
    assert sorted(calls) == ["blank", "ungated"]  # the gated job is not checked again, the others once each
    by_name = {r["name"]: r for r in done}
    assert "image_score" in by_name["gated"] and "image_score" in by_name["ungated"] and "error" in by_name["blank"]
    assert by_name["gated"]["image_score"] == by_name["ungated"]["image_score"]
