"""What a prediction produces: verdict, heat-map overlay, JSON record. Torch-free."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.io import atomic_write_with


@dataclass
class Prediction:
    """One scored image. ``anomaly_map`` and ``image`` are on the network's input grid (after the crop)."""

    source: str
    image_score: float
    threshold: float
    anomaly_map: np.ndarray
    image: np.ndarray | None = None  # uint8 RGB crop that was scored, for overlays

    @property
    def is_anomalous(self) -> bool:
        return self.image_score > self.threshold

    @property
    def verdict(self) -> str:
        return "anomalous" if self.is_anomalous else "good"

    def record(self, **extra: Any) -> dict[str, Any]:
        """JSON-ready summary (no map): one line of the predictions file."""
        return {
            "source": self.source,
            "image_score": round(float(self.image_score), 6),
            "threshold": round(float(self.threshold), 6),
            "verdict": self.verdict,
            "map_max": round(float(self.anomaly_map.max()), 6),
            **extra,
        }


def heat_levels(score_stats: dict[str, Any]) -> tuple[float, float]:
    """Map range for colouring: good images' median pixel is cold; twice their spread above it is hot."""
    pixel = score_stats.get("pixel", {})
    lo = float(pixel.get("good_p50", 0.0))
    top = float(pixel.get("good_max", lo + 1.0))
    return lo, lo + 2.0 * max(top - lo, 1e-6)


def overlay(
    image_rgb: np.ndarray, anomaly_map: np.ndarray, levels: tuple[float, float], alpha: float = 0.5
) -> np.ndarray:
    """Blend a JET heat map over the image where the map rises above the good level; returns RGB uint8."""
    lo, hi = levels
    heat = np.clip((anomaly_map.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if heat.shape != image_rgb.shape[:2]:
        heat = cv2.resize(heat, (image_rgb.shape[1], image_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * np.clip(heat * 2.0, 0.0, 1.0))[..., None]
    return (image_rgb * (1 - weight) + colour * weight).astype(np.uint8)


def overlay_png(prediction: Prediction, levels: tuple[float, float]) -> bytes:
    """The heat-map overlay as PNG bytes, with the verdict and score written in the corner (predict and serve)."""
    if prediction.image is None:
        raise ValueError("prediction has no image to draw on")
    bgr = np.ascontiguousarray(overlay(prediction.image, prediction.anomaly_map, levels)[..., ::-1])
    label = f"{prediction.verdict} {prediction.image_score:.3f}"
    colour = (0, 0, 255) if prediction.is_anomalous else (0, 200, 0)
    cv2.putText(bgr, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(bgr, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise RuntimeError(f"could not encode the overlay of {prediction.source}")
    return data.tobytes()


def write_overlay(path: str | Path, prediction: Prediction, levels: tuple[float, float]) -> Path:
    """Write :func:`overlay_png` to ``path`` atomically."""
    path = Path(path)
    png = overlay_png(prediction, levels)
    atomic_write_with(path, lambda tmp: tmp.write_bytes(png))
    return path


def new_run_dir(parent: str | Path, now: datetime | None = None) -> Path:
    """Create ``parent/run-YYYYmmdd-HHMMSS`` (``-2``, ``-3``... within the same second) for one prediction run.

    Why: a second run into the same output folder must not mix its overlays and records with the first one's, and
    nothing a person may still be looking at is deleted; each run owns its folder, the newest sorts last.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now()).strftime("run-%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        run = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        return run
    raise FileExistsError(f"no free run folder name for {stamp} in {parent}")


def append_jsonl(fh: Any, record: dict[str, Any]) -> None:
    fh.write(json.dumps(record) + "\n")
    fh.flush()
