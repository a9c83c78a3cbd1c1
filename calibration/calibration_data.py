"""Calibration images for INT8: good images only, preprocessed exactly as at inference. Torch-free.

:class:`CalibrationReader` implements onnxruntime's ``CalibrationDataReader``. It

* takes good images only: by default the training images recorded in the model's bundle
  (``training.data`` + ``training.train_images`` under ``train/good``; the held-out images that set the
  threshold are not used), or any folder given (a category folder's ``train/good``, else the images directly
  in the folder), or an explicit list of image files; ``exclude`` removes images from the candidates (the
  calibration stage passes the bundle's held-out images, which choose the recipe and set the INT8 threshold,
  so a folder that holds them never calibrates on them);
* samples ``count`` of them (default 128) deterministically: a seeded permutation of the sorted file list,
  taken in order until ``count`` images decoded (unreadable files are skipped and listed in ``skipped``);
* preprocesses them with the preprocessing stored in the ONNX model's own metadata
  (``Preprocessing.from_dict(json.loads(meta["preprocessing"]))``), so calibration sees exactly the tensors
  inference will see;
* yields ``{input_name: float32 [B, 3, S, S]}`` batches of the model's static batch size ``B``. When the
  number of images is not a multiple of ``B``, the last batch is completed with the first images of the
  sample again (each image then counts at most twice in the statistics; nothing synthetic, e.g. zeros, is
  ever fed). Models with a dynamic batch axis get batches of ``batch_size`` (default 8).

Fewer than ``min_images`` (default :data:`MIN_IMAGES`) readable images is a ``ValueError`` naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from edge_ad.bundle import CONFIG_NAME, read_bundle
from edge_ad.data.images import ImageError, read_image
from edge_ad.data.layout import DatasetError, train_images
from edge_ad.data.preprocess import Preprocessing

__all__ = [
    "DEFAULT_COUNT",
    "MIN_IMAGES",
    "CalibrationReader",
    "ModelInfo",
    "calibration_images",
    "model_info",
    "names_sha256",
]

DEFAULT_COUNT = 128
MIN_IMAGES = 8
DEFAULT_DYNAMIC_BATCH = 8

CalibSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


class ModelInfo:
    """What calibration needs from an exported edge-ad ONNX model: input name, batch, preprocessing, metadata."""

    def __init__(self, path: Path | None, input_name: str, batch_size: int | None, metadata: dict[str, str]):
        self.path = path
        self.input_name = input_name
        self.batch_size = batch_size  # None: dynamic batch axis
        self.metadata = metadata
        if "preprocessing" not in metadata:
            where = path if path is not None else "the model"
            raise ValueError(
                f"{where} has no 'preprocessing' metadata: it was not written by edge-ad's ONNX export "
                "(re-export it with `edge-ad export`)"
            )
        self.preprocessing = Preprocessing.from_dict(json.loads(metadata["preprocessing"]))


def model_info(model: str | os.PathLike[str] | onnx.ModelProto | ModelInfo) -> ModelInfo:
    """Read the input name, static batch size (None if dynamic) and metadata of an exported model (a
    :class:`ModelInfo` is returned as it is, so a model read once is not read again)."""
    if isinstance(model, ModelInfo):
        return model
    if isinstance(model, onnx.ModelProto):
        proto, path = model, None
    else:
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        proto = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one graph input, found {[i.name for i in inputs]}")
    dim0 = inputs[0].type.tensor_type.shape.dim[0]
    batch = int(dim0.dim_value) if dim0.HasField("dim_value") and dim0.dim_value > 0 else None
    meta = {p.key: p.value for p in proto.metadata_props}
    return ModelInfo(path, inputs[0].name, batch, meta)


def names_sha256(names: Sequence[str]) -> str:
    """SHA-256 of the image names in order, one per line: identifies a calibration set in metadata/reports."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def _bundle_training_images(bundle_dir: Path) -> tuple[Path, list[Path]]:
    """The good images a bundle was trained on (``training.train_images`` of ``training.data``)."""
    info = read_bundle(bundle_dir, verify_weights=False)
    data = info.training.get("data")
    if not data:
        raise ValueError(
            f"bundle {bundle_dir} does not record its training data (training.data); "
            "pass a folder of good images as the calibration source"
        )
    try:
        available = train_images(data)
    except DatasetError as exc:
        raise ValueError(f"the training images of bundle {bundle_dir} are not available: {exc}") from exc
    folder = available[0].parent
    wanted = info.training.get("train_images")
    if wanted:
        by_name = {p.name: p for p in available}
        missing = [n for n in wanted if n not in by_name]
        chosen = [by_name[n] for n in wanted if n in by_name]
        if missing and len(chosen) < MIN_IMAGES:
            raise ValueError(
                f"{folder}: {len(missing)} of the bundle's {len(wanted)} training images are missing "
                f"(e.g. {missing[0]}); pass a folder of good images as the calibration source"
            )
        return folder, sorted(chosen, key=lambda p: p.name)
    return folder, available


def calibration_images(source: CalibSource, model_path: Path | None = None) -> tuple[str, list[Path]]:
    """Resolve a calibration source to ``(folder description, sorted candidate image paths)``.

    ``source``: None (the training images of the bundle holding ``model_path``), a bundle folder (its
    training images), a category folder (``train/good``) or a plain folder of good images, or a list of
    image files.
    """
    if source is None:
        if model_path is None:
            raise ValueError("no calibration source given and no model path to find its bundle from")
        bundle = model_path.parent
        if not (bundle / CONFIG_NAME).is_file():
            raise ValueError(
                f"{model_path} is not inside a model bundle ({bundle / CONFIG_NAME} missing): "
                "pass a folder of good images as the calibration source"
            )
        folder, paths = _bundle_training_images(bundle)
        return str(folder), paths
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.exists():
            raise ValueError(f"calibration image folder not found: {root}")
        if root.is_dir() and (root / CONFIG_NAME).is_file():
            folder, paths = _bundle_training_images(root)
            return str(folder), paths
        if not root.is_dir():
            raise ValueError(f"calibration source is not a folder: {root}")
        try:
            paths = train_images(root)
        except DatasetError as exc:
            raise ValueError(f"{root}: no good images for INT8 calibration ({exc})") from exc
        return str(paths[0].parent), paths
    paths = sorted((Path(p) for p in source), key=lambda p: (p.parent.as_posix(), p.name))
    if not paths:
        raise ValueError("the calibration image list is empty")
    parents = sorted({str(p.parent) for p in paths})
    return (parents[0] if len(parents) == 1 else f"{len(paths)} files in {len(parents)} folders"), paths


class CalibrationReader(CalibrationDataReader):
    """Deterministic batches of preprocessed good images for onnxruntime's INT8 calibration.

    ``model``: the fp32 ONNX model (path, ModelProto or :class:`ModelInfo`) whose metadata gives the
    preprocessing and whose input gives the batch size. ``source``: see :func:`calibration_images`.
    ``exclude``: image files never to calibrate on. ``count``: how many images to use (fewer if the folder
    has fewer). ``seed``: the sampling seed. Attributes after construction:
    ``paths``/``names`` (the images used, in batch order), ``folder``, ``skipped`` (unreadable files),
    ``images_sha256`` (:func:`names_sha256` of ``names``), ``batch_size``, ``data`` (float32 [N,3,S,S]),
    ``excluded`` (how many candidates ``exclude`` removed).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | onnx.ModelProto | ModelInfo,
        source: CalibSource = None,
        *,
        count: int = DEFAULT_COUNT,
        seed: int = 0,
        min_images: int = MIN_IMAGES,
        batch_size: int | None = None,
        exclude: Sequence[str | os.PathLike[str]] = (),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        if count < min_images:
            raise ValueError(f"count ({count}) must be at least min_images ({min_images})")
        info = model_info(model)
        self.model = info
        self.input_name = info.input_name
        self.preprocessing = info.preprocessing
        if info.batch_size is not None:
            if batch_size is not None and batch_size != info.batch_size:
                raise ValueError(f"the model has a static batch of {info.batch_size}; batch_size={batch_size}")
            self.batch_size = info.batch_size
        else:
            self.batch_size = int(batch_size or DEFAULT_DYNAMIC_BATCH)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.count = count
        self.seed = seed

        self.folder, candidates = calibration_images(source, info.path)
        if exclude:
            excluded = {Path(p).resolve() for p in exclude}
            kept = [p for p in candidates if p.resolve() not in excluded]
            self.excluded = len(candidates) - len(kept)
            candidates = kept
        else:
            self.excluded = 0
        order = np.random.default_rng(seed).permutation(len(candidates))
        chosen: list[tuple[int, np.ndarray]] = []
        self.skipped: list[str] = []
        for index in order:
            if len(chosen) == count:
                break
            try:
                image = read_image(candidates[index])
            except ImageError as exc:
                self.skipped.append(f"{candidates[index].name}: {exc}")
                continue
            chosen.append((int(index), self.preprocessing(image)))
        if len(chosen) < min_images:
            raise ValueError(
                f"{self.folder}: only {len(chosen)} readable good image(s) for INT8 calibration "
                f"({len(candidates)} found, {len(self.skipped)} unreadable); at least {min_images} are needed"
            )
        chosen.sort(key=lambda item: item[0])  # file-name order: the same batches on every machine
        self.paths = [candidates[i] for i, _ in chosen]
        self.names = [p.name for p in self.paths]
        self.images_sha256 = names_sha256(self.names)
        self.data = np.stack([x for _, x in chosen]).astype(np.float32, copy=False)
        self._start, self._end = 0, self.num_batches
        self._next = 0

    # ----------------------------------------------------------------- CalibrationDataReader
    @property
    def num_batches(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def batch(self, index: int) -> np.ndarray:
        """Batch ``index`` (0-based); the last one wraps around to the first images to fill it."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range (0..{self.num_batches - 1})")
        n, b = len(self.data), self.batch_size
        rows = [(index * b + j) % n for j in range(b)]
        return np.ascontiguousarray(self.data[rows])

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        batch = self.batch(self._next)
        self._next += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = self._start

    def __len__(self) -> int:
        return self._end - self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict iteration to batches ``start_index..end_index-1`` (onnxruntime's strided calibration)."""
        self._start = max(0, int(start_index))
        self._end = min(self.num_batches, int(end_index))
        self._next = self._start

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary for metadata and reports."""
        return {
            "folder": self.folder,
            "count": len(self.names),
            "requested": self.count,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "names": list(self.names),
            "images_sha256": self.images_sha256,
            "skipped": list(self.skipped),
            "excluded": self.excluded,
        }
