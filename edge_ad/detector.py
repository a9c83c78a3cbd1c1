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
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import BundleError, artifact_path, artifact_weights_sha256, read_sidecar
from edge_ad.bundle import bundle_beside, check_artifact_current, warn_threshold
from edge_ad.data.gate import InputLimits, InputRejected, check_frame
from edge_ad.data.images import IMAGE_EXTENSIONS, ImageError, list_images, read_image
from edge_ad.data.prefetch import prefetched
from edge_ad.data.preprocess import Preprocessing
from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of
from edge_ad.results import Prediction, heat_levels
from edge_ad.runtimes.base import Runtime
from edge_ad.runtimes.scoring import score_batches

BACKENDS = ("torch", "onnxruntime", "tensorrt", "torch-tensorrt")
POSTPROCESS = ("graph", "cuda")  # the graph's own head, or the fused CUDA kernel on its patch scores


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


def open_runtime(
    path: str | os.PathLike[str],
    backend: str = "auto",
    *,
    device: str = "cpu",
    precision: str = "fp32",
    postprocess: str = "graph",
) -> Runtime:
    """The one place a runtime is chosen and opened, for :meth:`Detector.load`, ``edge-ad bench`` and the commands.

    ``path``: a bundle folder (``backend`` torch / torch-tensorrt, or onnxruntime / tensorrt for the
    ``model.<precision>.onnx|engine`` exported into it), an ``.onnx`` / ``.engine`` file, or for ``triton`` the
    server's ``http://HOST:PORT[/MODEL]`` / ``grpc://...``. ``postprocess="cuda"`` runs the fused CUDA kernel on the
    patch scores instead of the graph's head (torch bundle and TensorRT engine, CUDA devices only).

    Every runtime returned carries ``preprocessing``, ``threshold`` and ``score_stats`` (what a verdict needs). An
    export inside a bundle folder must come from the bundle's current weights; a stale one is refused.
    """
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {', '.join(POSTPROCESS)}, not {postprocess!r}")
    if backend == "triton":
        from edge_ad.runtimes.triton_runtime import TritonRuntime

        if postprocess == "cuda":
            raise ValueError(f"--postprocess cuda is for the torch (bundle) and tensorrt backends, not {backend}")
        return TritonRuntime(str(path))
    path = Path(path)
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}, triton or auto")
    if postprocess == "cuda" and not device.startswith("cuda"):
        raise ValueError("--postprocess cuda needs --device cuda")
    if path.suffix == ".onnx" or (backend == "onnxruntime" and path.is_dir()):
        if postprocess == "cuda":
            raise ValueError(f"--postprocess cuda is for the torch (bundle) and tensorrt backends, not {backend}")
        return _open_onnx(path, device, precision)
    if path.suffix == ".engine" or backend == "tensorrt":
        return _open_engine(path, precision, postprocess)
    return _open_torch(path, backend, device, precision, postprocess)


def _open_onnx(path: Path, device: str, precision: str) -> Runtime:
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime

    onnx_path = path if path.suffix == ".onnx" else artifact_path(path, precision)
    if path.is_dir() and not onnx_path.is_file():
        raise BundleError(
            f"{path} has no {onnx_path.name}: export it first with `edge-ad export {path} --precision {precision}`"
        )
    rt = OnnxRuntime(onnx_path, device=device)
    bundle = bundle_beside(onnx_path)
    if bundle is not None:
        check_artifact_current(bundle, rt.bundle_weights_sha256, onnx_path)
    return rt


def _open_engine(path: Path, precision: str, postprocess: str) -> Runtime:
    from edge_ad.runtimes.tensorrt_runtime import TensorRTRuntime

    engine_path = path if path.suffix == ".engine" else artifact_path(path, precision, "engine")
    bundle = bundle_beside(engine_path)
    if bundle is not None and engine_path.is_file():  # the sidecar carries the ONNX's weights hash
        check_artifact_current(bundle, artifact_weights_sha256(engine_path), engine_path)
    if postprocess == "cuda":
        _check_engine_image_score(engine_path)
        return TensorRTRuntime(engine_path, postprocess="cuda")
    return TensorRTRuntime(engine_path)


def _check_engine_image_score(engine: Path) -> None:
    """Refuse the CUDA kernel for an engine whose sidecar says its graph's image score is not the max (a missing or
    unreadable sidecar is left to the runtime, which reports it)."""
    try:
        metadata = read_sidecar(engine).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return
    check_cuda_postprocess(image_score_of(metadata, str(engine)), str(engine))


def _open_torch(path: Path, backend: str, device: str, precision: str, postprocess: str) -> Runtime:
    """A bundle's torch model, run by torch (or compiled by Torch-TensorRT); needs the ``train`` extra."""
    from edge_ad.models.registry import load_model
    from edge_ad.runtimes.torch_runtime import TorchRuntime

    model, info = load_model(path)
    if backend == "torch-tensorrt":
        from edge_ad.runtimes.torch_tensorrt_runtime import TorchTensorRTRuntime

        if postprocess == "cuda":
            raise ValueError("torch-tensorrt compiles the graph's own head; --postprocess cuda is for torch/tensorrt")
        rt: Any = TorchTensorRTRuntime(model, device=device, precision=precision)
    else:
        if postprocess == "cuda":
            check_cuda_postprocess(model.inference_graph().image_score, str(path))  # the family's declaration
        rt = TorchRuntime(model, device=device, precision=precision, postprocess=postprocess)
    rt.preprocessing, rt.threshold, rt.score_stats = info.preprocessing, info.threshold, info.score_stats
    return rt


@dataclass
class _ReadChunk:
    """One chunk of input files, read: its size, the Failures at their places, and the rest ready to score."""

    size: int
    failures: dict[int, Failure]
    names: list[str]
    crops: list[np.ndarray]
    batch: np.ndarray


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
        """A bundle folder (torch, or the ONNX/engine exported into it), an ``.onnx`` / ``.engine`` file, or a Triton
        server's address (``backend="triton"``), opened by :func:`open_runtime`.

        An export that sits in a bundle folder (given directly or through the bundle) must have been made from
        the bundle's current weights; a stale one is refused. A threshold on too few images is warned about.
        """
        rt = open_runtime(path, backend, device=device, precision=precision)
        det = cls(rt, rt.preprocessing, rt.threshold, rt.score_stats)
        warn_threshold(det.threshold, det.score_stats, getattr(rt, "url", path))
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
        return self.score_frames(images, names)

    def score_frames(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Prediction]:
        """Run the model on RGB frames that passed the input gate already (the serve worker's jobs); no check here,
        so a frame is gated once on its way in."""
        if not images:
            return []
        return self._score_crops(names, *self._prepare(images))

    def _prepare(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Gated RGB frames -> their crops (kept for overlays) and the normalised batch the runtime takes."""
        crops = [self.preprocessing.geometry(img) for img in images]
        normalize = self.preprocessing.normalize
        return crops, np.stack([normalize(c) for c in crops]) if crops else np.zeros((0,), np.float32)

    def _score_crops(self, names: Sequence[str], crops: list[np.ndarray], batch: np.ndarray) -> list[Prediction]:
        if not crops:
            return []
        # one item, the whole batch already built: no re-stacking
        scores, maps = score_batches(self.runtime.predict, [batch], lambda chunk: chunk[0], batch_size=1)
        return [
            Prediction(name, float(s), self.threshold, m, crop)
            for name, s, m, crop in zip(names, scores, maps, crops, strict=True)
        ]

    def _read_chunk(self, chunk: Sequence[Path | Failure], limits: InputLimits | None) -> _ReadChunk:
        """Read, gate and preprocess one chunk of files (the prefetching reader's work); a file that cannot be read
        or that the gate refuses becomes a :class:`Failure` at its place."""
        failures: dict[int, Failure] = {}
        names: list[str] = []
        images: list[np.ndarray] = []
        for j, item in enumerate(chunk):
            if isinstance(item, Failure):
                failures[j] = item
                continue
            try:
                images.append(read_image(item, limits))
                names.append(str(item))
            except ImageError as exc:
                failures[j] = Failure(str(item), str(exc), rejected=isinstance(exc, InputRejected))
        return _ReadChunk(len(chunk), failures, names, *self._prepare(images))

    def predict_paths(
        self,
        inputs: Iterable[str | os.PathLike[str] | Failure],
        batch_size: int = 8,
        limits: InputLimits | None = None,
    ) -> Iterator[Prediction | Failure]:
        """Score files and folders in batches, in order (see :func:`expand_inputs`).

        A file that cannot be read comes out as a :class:`Failure`, and so does one the input gate refuses
        (``rejected=True``), an image-named subfolder and an input folder without images. The next chunk is read,
        gated and preprocessed in a worker thread while the runtime scores this one
        (:func:`edge_ad.data.prefetch.prefetched`).
        """
        items = expand_inputs(inputs)
        chunks = [items[start : start + batch_size] for start in range(0, len(items), batch_size)]
        reader = prefetched(chunks, lambda chunk: self._read_chunk(chunk, limits), ahead=1)
        with closing(reader):  # leaving early (break, an error) stops the reader's thread
            for read in reader:
                preds = iter(self._score_crops(read.names, read.crops, read.batch))
                for j in range(read.size):
                    yield read.failures[j] if j in read.failures else next(preds)

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
