"""Verify a built engine: run it and onnxruntime on the same few good images and record the largest differences.

This is what Polygraphy's ``run --onnxrt --trt`` does, done with edge-ad's own runtimes so the comparison
covers exactly the path ``predict`` takes (preprocessing, chunking, padding, buffers). The images are good
images (``--calib-data`` or the bundle's own training images); with none available, a fixed seeded random
batch is used and the report says so. The result goes into the engine's sidecar. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import ArtifactInfo, read_sidecar, sidecar_path
from edge_ad.io import atomic_write_json
from edge_ad.runtimes.scoring import score_batches

from .onnx_info import OnnxInfo

# Largest map difference allowed, as a fraction of the onnxruntime map's range (as in the ONNX export check);
# the engine's precision decides. An engine beyond it is reported, not deleted: the user decides.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 5e-2}


def verification_images(info: OnnxInfo, source: Path | None = None, count: int = 8) -> tuple[np.ndarray, str]:
    """Up to ``count`` preprocessed good images (evenly spread over the sorted list) and where they came from."""
    from edge_ad.bundle import CONFIG_NAME, read_bundle
    from edge_ad.data.images import ImageError, read_image
    from edge_ad.data.layout import DatasetError, train_images

    preprocessing = ArtifactInfo.parse(info.metadata, info.path).preprocessing
    reason = ""
    try:
        if source is not None:
            paths = train_images(source)
        elif (info.path.parent / CONFIG_NAME).is_file():
            data = read_bundle(info.path.parent, verify_weights=False).training.get("data")
            if not data:
                raise DatasetError("the bundle does not record its training data")
            paths = train_images(data)
        else:
            raise DatasetError(f"{info.path.parent} is not a bundle folder and no --calib-data was given")
    except (DatasetError, ValueError) as exc:
        paths, reason = [], str(exc)
    picks = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))] if paths else []
    arrays = []
    for path in picks:
        try:
            arrays.append(preprocessing(read_image(path)))
        except ImageError as exc:  # an unreadable or rejected image is left out, not fatal
            reason = str(exc)
    if arrays:
        return np.stack(arrays).astype(np.float32), f"{len(arrays)} good images from {picks[0].parent}"
    size = preprocessing.image_size
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((count, 3, size, size)).astype(np.float32)
    return batch, f"{count} seeded random inputs (no good images: {reason})"


def verify_engine(
    engine_path: str | Path, onnx_path: str | Path, images: np.ndarray, source: str, runtime: Any = None
) -> dict[str, Any]:
    """Largest |score| and |map| differences engine vs onnxruntime on ``images``; written into the sidecar.

    ``runtime``: an open :class:`TensorRTRuntime` to use (tests pass one with a fake buffer layer).
    """
    from edge_ad.runtimes.onnx_runtime import OnnxRuntime
    from edge_ad.runtimes.tensorrt_runtime import TensorRTRuntime

    engine_path = Path(engine_path)
    ref_scores, ref_maps = score_batches(OnnxRuntime(onnx_path).predict, images)
    own = runtime is None
    runtime = runtime or TensorRTRuntime(engine_path)
    try:
        scores, maps = score_batches(runtime.predict, images)
    finally:
        if own:
            runtime.close()
    sidecar = read_sidecar(engine_path)
    scale = max(float(np.ptp(ref_maps)), 1e-6)
    map_diff = float(np.abs(maps - ref_maps).max())
    score_diff = float(np.abs(scores - ref_scores).max())
    tolerance = TOLERANCE[sidecar["precision"]]
    result = {
        "against": f"onnxruntime CPU on {Path(onnx_path).name}",
        "images": source,
        "max_abs_score_diff": score_diff,
        "max_abs_map_diff": map_diff,
        "map_range": scale,
        "max_map_diff_of_range": map_diff / scale,
        "tolerance_of_range": tolerance,
        "within_tolerance": bool(map_diff <= tolerance * scale and score_diff <= tolerance * scale),
    }
    sidecar["verification"] = result
    atomic_write_json(sidecar_path(engine_path), sidecar)
    return result
