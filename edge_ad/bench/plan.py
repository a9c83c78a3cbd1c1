"""What `edge-ad bench` will run, decided before anything is timed: which backend, precision and file each row is,
which options contradict the target (refused in one line), and which rows this machine cannot run ("not available
here: <reason>", listed beside the table and never written as a result).

Why a module of its own: a row must say exactly what ran. A bare ``.onnx`` is onnxruntime at the file's own
precision, an ``.engine`` is TensorRT at its own, and a bundle folder runs torch on its weights or the ONNX/engine
exported into it. Read without torch (a Jetson benchmarks its onnxruntime and TensorRT rows torch-free).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import artifact_path
from edge_ad.data.images import list_images
from edge_ad.data.layout import DatasetError, resolve_category
from edge_ad.extras import EXTRA_BY_NAME, missing_extra_message

__all__ = [
    "ALL_BACKENDS",
    "KNOWN_BACKENDS",
    "PRECISIONS",
    "artifact_for",
    "bench_images",
    "file_precision",
    "resolve_options",
    "sample_files",
    "unavailable_reason",
    "what_ran",
]

ALL_BACKENDS = ("torch", "onnxruntime", "tensorrt")  # what --backend all means for a bundle folder
KNOWN_BACKENDS = (*ALL_BACKENDS, "torch-tensorrt", "triton")
TORCH_FAMILY = ("torch", "torch-tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
_FILE_BACKEND = {".onnx": "onnxruntime", ".engine": "tensorrt"}


def _is_remote(target: str | Path) -> bool:
    """A Triton server's model: ``http://HOST:PORT/MODEL`` (``Path`` has folded its ``//`` into ``/``)."""
    return bool(re.match(r"^(https?|grpc):/", str(target)))


def file_precision(target: Path, metadata: dict[str, str]) -> str | None:
    """The precision an exported file holds: its own metadata, else its name (``model.fp16.onnx``), else None."""
    if metadata.get("precision") in PRECISIONS:
        return metadata["precision"]
    match = re.search(r"\.(fp32|fp16|int8)\.(onnx|engine)$", target.name)
    return match.group(1) if match else None


def _split(value: str | None, name: str, known: Sequence[str], extra: Sequence[str] = ()) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError(f"--{name} is empty; choose from {', '.join((*known, *extra))}")
    for item in items:
        if item not in (*known, *extra):
            raise ValueError(f"unknown --{name} {item!r}; choose from {', '.join((*known, *extra))}")
    return list(dict.fromkeys(items))


def resolve_options(
    target: Path,
    backend: str | None,
    precision: str | None,
    *,
    device: str = "cpu",
    postprocess: Sequence[str] = ("torch",),
    metadata: dict[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """The backends and precisions to bench on ``target`` (None: not given); a contradiction is a ``ValueError``.

    A bundle folder: torch fp32 unless told, ``all`` = torch, onnxruntime, tensorrt. An ``.onnx``/``.engine`` file: its
    one runtime at its own precision; naming another backend or precision for it is refused, not ignored.
    """
    backends = _split(backend, "backend", KNOWN_BACKENDS, ("all",))
    precisions = _split(precision, "precision", PRECISIONS)
    if "cuda" in postprocess and not device.startswith("cuda"):
        raise ValueError("--postprocess cuda runs the CUDA kernel: it needs --device cuda")
    if _is_remote(target):
        if backends not in (None, ["triton"]):
            raise ValueError(f"{target} is a Triton server's model: bench it with --backend triton only")
        return ["triton"], precisions or ["fp32"]
    if backends and "triton" in backends:
        raise ValueError(f"--backend triton benches a server's model (http://HOST:PORT/MODEL), not {target}")
    if target.is_file() and target.suffix in _FILE_BACKEND:
        runs = _FILE_BACKEND[target.suffix]
        if backends and any(b not in (runs, "all") for b in backends):
            other = next(b for b in backends if b not in (runs, "all"))
            raise ValueError(
                f"{target.name} is run by {runs}, not {other}: give the bundle folder to bench {other}, or drop "
                "--backend"
            )
        own = file_precision(target, metadata or {})
        if precisions and own and precisions != [own]:
            raise ValueError(
                f"{target.name} holds a {own} model: --precision {','.join(precisions)} contradicts it (give the "
                "bundle folder to bench other precisions, or drop --precision)"
            )
        return [runs], [own or (precisions or ["fp32"])[0]]
    if target.is_file():
        raise ValueError(f"{target} is not a bundle folder, an .onnx or an .engine file")
    if backends is None:
        chosen = ["torch"]
    elif "all" in backends:
        chosen = list(dict.fromkeys([*ALL_BACKENDS, *(b for b in backends if b != "all")]))
    else:
        chosen = backends
    precisions = precisions or ["fp32"]
    if all(b in TORCH_FAMILY for b in chosen) and precisions == ["int8"]:
        raise ValueError("int8 exists only as a Q/DQ ONNX: bench it with --backend onnxruntime or tensorrt")
    return chosen, precisions


def artifact_for(target: Path, backend: str, precision: str) -> Path | None:
    """The file a row of ``backend`` at ``precision`` runs: the file itself, or the bundle's weights/export."""
    if _is_remote(target):
        return None
    if target.is_file():
        return target
    if backend in TORCH_FAMILY:
        from edge_ad.bundle import BundleError, read_bundle

        try:
            return Path(read_bundle(target).weights_path)
        except (BundleError, OSError, ValueError):
            return target
    suffix = "engine" if backend == "tensorrt" else "onnx"
    return artifact_path(target, precision, suffix)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _ort_providers() -> list[str]:
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001 - reported as a missing provider
        return []


def unavailable_reason(target: Path, backend: str, precision: str, device: str) -> str | None:
    """Why this machine cannot run the row (a missing part or file, not a failure), or None when it can try."""
    if backend == "triton":
        return None
    if backend in TORCH_FAMILY and precision == "int8":
        return "int8 exists only as a Q/DQ ONNX (onnxruntime, tensorrt); torch runs fp32/fp16"
    if backend in TORCH_FAMILY and not _installed("torch"):
        return missing_extra_message(EXTRA_BY_NAME["train"], "torch", f"--backend {backend}")
    if backend == "torch-tensorrt":
        if not _installed("torch_tensorrt"):
            return missing_extra_message(EXTRA_BY_NAME["torch-tensorrt"], "torch_tensorrt", "--backend torch-tensorrt")
        if not device.startswith("cuda"):
            return "torch-tensorrt runs on a CUDA device: add --device cuda"
    if backend == "tensorrt" and not _installed("tensorrt"):
        return "TensorRT is not installed (JetPack ships it; desktop: pip install tensorrt)"
    if backend == "onnxruntime" and device.startswith("cuda") and "CUDAExecutionProvider" not in _ort_providers():
        return "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)"
    artifact = artifact_for(target, backend, precision)
    if artifact is not None and target.is_dir() and backend not in TORCH_FAMILY and not artifact.is_file():
        if backend == "tensorrt":
            onnx = artifact.with_suffix(".onnx")
            how = f"edge-ad export {onnx} --format engine --precision {precision}"
        else:
            how = f"edge-ad export {target} --precision {precision}"
        return f"no {artifact.name} in {target} (make it with: {how})"
    return None


def bench_images(data: Path) -> list[Path]:
    """Images to time on from ``--data``: a category's good training images, else its good test images, else all
    its test images (bench scores test images only, so a folder with only ``test/`` is enough); or a plain folder."""
    if not ((data / "train").exists() or (data / "test").exists()):
        images = list_images(resolve_category(data, None))
        if not images:
            raise DatasetError(f"no images in {data}")
        return images
    folder = resolve_category(data, None)
    for good in (folder / "train" / "good", folder / "test" / "good"):
        if good.is_dir() and (images := list_images(good)):
            return images
    test = folder / "test"
    images = [p for d in sorted(test.iterdir()) if d.is_dir() for p in list_images(d)] if test.is_dir() else []
    if not images:
        raise DatasetError(f"no images in {folder / 'train' / 'good'} or under {test}")
    return images


def sample_files(data: Path | None, image_size: int, count: int, scratch: Path) -> list[Path]:
    """Image files to time on: the data's good images when given, else synthetic PNGs written to ``scratch``."""
    if data is not None:
        paths = bench_images(data)
        return (paths * (count // max(len(paths), 1) + 1))[:count]
    import cv2

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = scratch / f"{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (image_size + 32, image_size + 32, 3), dtype=np.uint8))
        files.append(path)
    return files


def what_ran(runtime: Any, target: Path, backend: str, precision: str) -> dict[str, Any]:
    """The backend, precision and file the runtime itself reports (a bare .onnx is onnxruntime at its own
    precision, whatever was asked), falling back to what was planned."""
    name = getattr(runtime, "name", None)
    ran_precision = getattr(runtime, "precision", None)
    path = getattr(runtime, "path", None) or artifact_for(target, backend, precision)
    return {
        "backend": name if isinstance(name, str) and name else backend,
        "precision": ran_precision if isinstance(ran_precision, str) and ran_precision else precision,
        "artifact": str(path) if path is not None else None,
    }
