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

from edge_ad.data.gate import InputLimits, InputRejected, check_frame
from edge_ad.data.images import IMAGE_EXTENSIONS, ImageError, list_images, read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.results import Prediction, heat_levels
from edge_ad.runtimes.base import Runtime

BACKENDS = ("torch", "onnxruntime", "tensorrt", "torch-tensorrt")


@dataclass
class Failure:
    """An input that could not be scored, and why; predicting goes on with the rest.

    ``rejected`` is True when the input gate refused it (too small, too many pixels or bytes, a blank frame): the
    file could be read, but no verdict on it can be trusted.
    """

    source: str
    error: str
    rejected: bool = False


def _folder_items(folder: Path) -> list[Path | Failure]:
    """A folder's images, and a Failure for each entry that looks like an image but is a folder (not searched)."""
    images: list[Path | Failure] = list(list_images(folder))
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS:
            error = f"{entry} is a folder, not an image file (folders inside an input folder are not searched)"
            images.append(Failure(str(entry), error))
    images.sort(key=lambda item: Path(item.source).name if isinstance(item, Failure) else item.name)
    if not images:
        kinds = ", ".join(IMAGE_EXTENSIONS)
        images.append(Failure(str(folder), f"no images in folder {folder} (looked for {kinds}; not recursive)"))
    return images


def expand_inputs(inputs: Iterable[str | os.PathLike[str] | Failure]) -> list[Path | Failure]:
    """Files as given, folders expanded to their images (sorted by name); nothing is dropped without a word.

    Missing paths are kept (reading reports them); an image-named folder inside an input folder, and an input folder
    with no images, become a :class:`Failure`. Failures given as inputs are passed on, so expanding twice is harmless.
    """
    out: list[Path | Failure] = []
    for item in inputs:
        if isinstance(item, Failure):
            out.append(item)
            continue
        path = Path(item)
        out.extend(_folder_items(path) if path.is_dir() else [path])
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
        """A bundle folder (torch, or the ONNX/engine exported into it) or an ``.onnx`` / ``.engine`` file.

        An export that sits in a bundle folder (given directly or through the bundle) must have been made from
        the bundle's current weights; a stale one is refused. A threshold on too few images is warned about.
        """
        from edge_ad.bundle import (
            BundleError,
            artifact_weights_sha256,
            bundle_beside,
            check_artifact_current,
            finite_threshold,
            warn_threshold,
        )

        if backend == "triton":  # path is the server's address: http://HOST:PORT[/MODEL] or grpc://HOST:PORT[/MODEL]
            from edge_ad.runtimes.triton_runtime import TritonRuntime

            remote = TritonRuntime(str(path))
            det = cls(remote, remote.preprocessing, remote.threshold, remote.score_stats)
            warn_threshold(det.threshold, det.score_stats, remote.url)
            return det
        path = Path(path)
        if backend not in (*BACKENDS, "auto"):
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}, triton or auto")
        if path.suffix == ".onnx" or (backend == "onnxruntime" and path.is_dir()):
            from edge_ad.runtimes.onnx_runtime import OnnxRuntime

            onnx_path = path if path.suffix == ".onnx" else path / f"model.{precision}.onnx"
            if path.is_dir() and not onnx_path.is_file():
                raise BundleError(
                    f"{path} has no {onnx_path.name}: export it first with "
                    f"`edge-ad export {path} --precision {precision}`"
                )
            rt = OnnxRuntime(onnx_path, device=device)
            bundle = bundle_beside(onnx_path)
            if bundle is not None:
                check_artifact_current(bundle, rt.bundle_weights_sha256, onnx_path)
            det = cls(rt, rt.preprocessing, rt.threshold, rt.score_stats)
        elif path.suffix == ".engine" or backend == "tensorrt":
            from edge_ad.runtimes.tensorrt_runtime import TensorRTRuntime

            engine_path = path if path.suffix == ".engine" else path / f"model.{precision}.engine"
            bundle = bundle_beside(engine_path)
            if bundle is not None and engine_path.is_file():  # the sidecar carries the ONNX's weights hash
                check_artifact_current(bundle, artifact_weights_sha256(engine_path), engine_path)
            rt = TensorRTRuntime(engine_path)
            det = cls(rt, rt.preprocessing, finite_threshold(rt.threshold, engine_path), rt.score_stats)
        else:
            from edge_ad.models.registry import load_model
            from edge_ad.runtimes.torch_runtime import TorchRuntime

            rt_cls: type = TorchRuntime
            if backend == "torch-tensorrt":
                from edge_ad.runtimes.torch_tensorrt_runtime import TorchTensorRTRuntime

                rt_cls = TorchTensorRTRuntime
            model, info = load_model(path)
            det = cls(
                rt_cls(model, device=device, precision=precision),
                info.preprocessing,
                info.threshold,
                info.score_stats,
            )
        warn_threshold(det.threshold, det.score_stats, path)
        return det

    def predict_arrays(
        self,
        images: Sequence[np.ndarray],
        sources: Sequence[str] | None = None,
        limits: InputLimits | None = None,
    ) -> list[Prediction]:
        """Score RGB uint8 images (any size); each is resized/cropped exactly as in training.

        Every array goes through the input gate's frame checks first (:func:`edge_ad.data.gate.check_frame`): the
        first one that fails raises :class:`InputRejected` naming it (``sources[i]`` or ``array[i]``) and nothing is
        scored, since a frame from a dead camera must not come out with a verdict.
        """
        names = [str(n) for n in sources] if sources is not None else [f"array[{i}]" for i in range(len(images))]
        if len(names) != len(images):
            raise ValueError(f"{len(images)} images but {len(names)} sources")
        for img, name in zip(images, names, strict=True):
            check_frame(img, name, limits)
        return self._score(images, names)

    def _score(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Prediction]:
        """Run the model on frames that passed the gate."""
        if not images:
            return []
        crops = [self.preprocessing.geometry(img) for img in images]
        batch = np.stack([self.preprocessing.normalize(c) for c in crops])
        scores, maps = self.runtime.predict(batch)
        return [
            Prediction(name, float(s), self.threshold, m, crop)
            for name, s, m, crop in zip(names, scores, maps, crops, strict=True)
        ]

    def predict_paths(
        self,
        inputs: Iterable[str | os.PathLike[str] | Failure],
        batch_size: int = 8,
        limits: InputLimits | None = None,
    ) -> Iterator[Prediction | Failure]:
        """Score files and folders in batches, in order (see :func:`expand_inputs`).

        A file that cannot be read comes out as a :class:`Failure`, and so does one the input gate refuses
        (``rejected=True``), an image-named subfolder and an input folder without images.
        """
        items = expand_inputs(inputs)
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            readable: list[tuple[Path, np.ndarray]] = []
            results: dict[int, Prediction | Failure] = {}
            for j, item in enumerate(chunk):
                if isinstance(item, Failure):
                    results[j] = item
                    continue
                try:
                    readable.append((item, read_image(item, limits)))
                except ImageError as exc:
                    results[j] = Failure(str(item), str(exc), rejected=isinstance(exc, InputRejected))
            preds = iter(self._score([img for _, img in readable], [str(p) for p, _ in readable]))
            for j in range(len(chunk)):
                yield results[j] if j in results else next(preds)

    def predict(
        self, images: np.ndarray | str | os.PathLike[str] | Sequence[Any], limits: InputLimits | None = None
    ) -> list[Prediction]:
        """Convenience: one array (HxWx3), a list of arrays, or paths/folders.

        Raises :class:`ImageError` on the first file that cannot be scored and :class:`InputRejected` (a subclass)
        on an input the gate refuses, whether a file or an array.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            return self.predict_arrays([images], limits=limits)
        items = [images] if isinstance(images, str | os.PathLike) else list(images)
        if items and all(isinstance(x, np.ndarray) for x in items):
            return self.predict_arrays(items, limits=limits)
        out = []
        for result in self.predict_paths(items, limits=limits):
            if isinstance(result, Failure):
                raise (InputRejected if result.rejected else ImageError)(result.error)
            out.append(result)
        return out
