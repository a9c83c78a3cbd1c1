"""The small Python API: load a bundle or an exported model, score arrays or image files.

    from edge_ad.detector import Detector
    det = Detector.load("models/washer")            # torch backend from a bundle
    det = Detector.load("models/washer/model.fp32.onnx")  # onnxruntime, no torch needed
    for p in det.predict(["part1.png", "part2.png"]):
        print(p.source, p.image_score, p.verdict)

Only the torch backend imports torch, and only when it is chosen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.data.images import ImageError, list_images, read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.results import Prediction, heat_levels
from edge_ad.runtimes.base import Runtime

BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass
class Failure:
    """An input that could not be scored, and why; predicting goes on with the rest."""

    source: str
    error: str


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); missing paths are kept to be reported."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        out.extend(list_images(path) if path.is_dir() else [path])
    return out


class Detector:
    """A runtime plus what it needs to decide: preprocessing, threshold, score statistics."""

    def __init__(self, runtime: Runtime, preprocessing: Preprocessing, threshold: float, score_stats: dict[str, Any]):
        self.runtime = runtime
        self.preprocessing = preprocessing
        self.threshold = float(threshold)
        self.score_stats = score_stats

    @property
    def heat_levels(self) -> tuple[float, float]:
        return heat_levels(self.score_stats)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], backend: str = "auto", device: str = "cpu", precision: str = "fp32"
    ) -> Detector:
        """A bundle folder (torch, or the ONNX/engine exported into it) or an ``.onnx`` / ``.engine`` file."""
        path = Path(path)
        if backend not in (*BACKENDS, "auto"):
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)} or auto")
        if path.suffix == ".onnx" or (backend == "onnxruntime" and path.is_dir()):
            from edge_ad.runtimes.onnx_runtime import OnnxRuntime

            onnx_path = path if path.suffix == ".onnx" else path / f"model.{precision}.onnx"
            rt = OnnxRuntime(onnx_path, device=device)
            return cls(rt, rt.preprocessing, rt.threshold, rt.score_stats)
        if path.suffix == ".engine" or backend == "tensorrt":
            from edge_ad.runtimes.tensorrt_runtime import TensorRTRuntime

            engine_path = path if path.suffix == ".engine" else path / f"model.{precision}.engine"
            rt = TensorRTRuntime(engine_path)
            return cls(rt, rt.preprocessing, rt.threshold, rt.score_stats)
        from edge_ad.models.registry import load_model
        from edge_ad.runtimes.torch_runtime import TorchRuntime

        model, info = load_model(path)
        return cls(
            TorchRuntime(model, device=device, precision=precision),
            info.preprocessing,
            info.threshold,
            info.score_stats,
        )

    def predict_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None) -> list[Prediction]:
        """Score RGB uint8 images (any size); each is resized/cropped exactly as in training."""
        crops = [self.preprocessing.geometry(img) for img in images]
        batch = np.stack([self.preprocessing.normalize(c) for c in crops]) if crops else None
        if batch is None:
            return []
        scores, maps = self.runtime.predict(batch)
        names = sources or [f"array[{i}]" for i in range(len(images))]
        return [
            Prediction(str(name), float(s), self.threshold, m, crop)
            for name, s, m, crop in zip(names, scores, maps, crops, strict=True)
        ]

    def predict_paths(
        self, inputs: Iterable[str | os.PathLike[str]], batch_size: int = 8
    ) -> Iterator[Prediction | Failure]:
        """Score files and folders in batches; unreadable files come out as :class:`Failure`, in order."""
        paths = expand_inputs(inputs)
        for start in range(0, len(paths), batch_size):
            good: list[tuple[Path, np.ndarray]] = []
            results: dict[int, Prediction | Failure] = {}
            for j, p in enumerate(paths[start : start + batch_size]):
                try:
                    good.append((p, read_image(p)))
                except ImageError as exc:
                    results[j] = Failure(str(p), str(exc))
            preds = iter(self.predict_arrays([img for _, img in good], [str(p) for p, _ in good]))
            for j in range(min(batch_size, len(paths) - start)):
                yield results[j] if j in results else next(preds)

    def predict(self, images: np.ndarray | str | os.PathLike[str] | Sequence[Any]) -> list[Prediction]:
        """Convenience: one array (HxWx3), a list of arrays, or paths/folders; raises on unreadable files."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            return self.predict_arrays([images])
        items = [images] if isinstance(images, str | os.PathLike) else list(images)
        if items and all(isinstance(x, np.ndarray) for x in items):
            return self.predict_arrays(items)
        out = []
        for result in self.predict_paths(items):
            if isinstance(result, Failure):
                raise ImageError(result.error)
            out.append(result)
        return out
