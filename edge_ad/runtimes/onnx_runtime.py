"""onnxruntime backend for models written by ``edge_ad.export.onnx_export``. Torch-free.

The model carries what a runtime needs in its ``metadata_props`` (preprocessing, threshold, score
statistics, image size, precision, bundle format version); a model without them, or from another bundle
format, is refused with a ValueError (:class:`edge_ad.bundle.BundleError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from edge_ad.artifacts import INPUT_NAME, OUTPUT_NAMES, PATCH_OUTPUT, ArtifactInfo, BundleError
from edge_ad.runtimes.base import check_batch

__all__ = ["OnnxRuntime"]

#: Whether onnxruntime's intra-op threads busy-wait for work between operators (its default) or sleep. Off: the
#: prefetching reader decodes the next batch on the same cores while the graph runs, and a spinning pool takes
#: those cycles. On a 2-core AMD EPYC shared with other jobs (load 8-11), the Lite0 graph ran 1.20-1.23x faster at
#: batch 8 without spinning and files -> maps pipelined 1.27-1.47x (``benchmarks/results/e2e_pipeline_cpu.json``);
#: not yet measured on an idle machine, where spinning saves the threads' wake-ups.
SPIN = False


def _providers(device: str) -> list[Any]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                "device 'cuda' was asked for, but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu, or use device='cpu'"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ValueError(f"bad CUDA device {device!r}; use 'cuda' or 'cuda:N'")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def _errors(*names: str) -> tuple[type[Exception], ...]:
    return tuple(e for e in (getattr(_ort_errors, n, None) for n in names) if isinstance(e, type))


# onnxruntime's errors for a file that is not a loadable ONNX model (they derive from Exception, not RuntimeError).
_NOT_A_MODEL = _errors("InvalidProtobuf", "InvalidArgument", "InvalidGraph", "NoModel")
_CANNOT_LOAD = _errors("Fail", "NotImplemented", "RuntimeException")


def _open_session(path: Path, options: ort.SessionOptions, providers: list[Any]) -> ort.InferenceSession:
    """An inference session, or one line naming the file when onnxruntime cannot read it as a model."""
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except _NOT_A_MODEL as exc:
        raise BundleError(
            f"{path} is not a valid ONNX model ({_reason(exc)}): a damaged, truncated or wrong file; "
            "re-export it with `edge-ad export`"
        ) from exc
    except _CANNOT_LOAD as exc:
        raise BundleError(f"onnxruntime cannot load {path}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :`` prefix, on one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.rsplit(" : ", 1)[-1]
    return text.split("failed:", 1)[-1].strip().rstrip(".")  # "Load model from PATH failed:Protobuf parsing failed."


class OnnxRuntime:
    """Runs an exported edge-ad ONNX model; ``predict(batch) -> (image_score[N], anomaly_map[N,H,W])``.

    A model with a static batch of B runs any N in chunks of B (the last one zero-padded); a model with a
    dynamic batch axis runs the whole batch at once.
    """

    name = "onnxruntime"

    def __init__(
        self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None, spin: bool = SPIN
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        providers = _providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if not spin:  # idle intra-op threads sleep instead of busy-waiting (see SPIN)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self.device = device
        self.session = _open_session(self.path, options, providers)
        if device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise RuntimeError(
                f"onnxruntime could not start CUDAExecutionProvider for {self.path} (CUDA/cuDNN libraries missing?)"
            )
        self._read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self._check_io()

    # ----------------------------------------------------------------- metadata
    def _read_metadata(self, meta: dict[str, str]) -> None:
        info = ArtifactInfo.parse(meta, self.path)
        self.info = info
        self.preprocessing = info.preprocessing
        self.image_size = info.image_size
        self.threshold = info.threshold
        self.score_stats: dict[str, Any] = dict(info.score_stats)
        self.family = info.family
        self.precision = info.precision
        self.edge_ad_version = info.edge_ad_version
        self.bundle_weights_sha256 = info.bundle_weights_sha256
        self.metadata = dict(meta)
        self.declared_head = info.declared_head

    def _check_io(self) -> None:
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise BundleError(f"{self.path} has inputs {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
        outputs = {o.name for o in self.session.get_outputs()}
        if not set(OUTPUT_NAMES) <= outputs:
            raise BundleError(f"{self.path} lacks outputs {sorted(set(OUTPUT_NAMES) - outputs)}")
        self.has_patch_scores = PATCH_OUTPUT in outputs
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1:] != [3, self.image_size, self.image_size]:
            raise BundleError(f"{self.path}: input shape {shape} does not match image size {self.image_size}")
        # A static batch is an int; a dynamic one is a name (str) or None.
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    # ----------------------------------------------------------------- inference
    def _run(self, batch: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        return [np.asarray(out, dtype=np.float32) for out in self.session.run(list(names), {INPUT_NAME: batch})]

    def _run_batch(self, arr: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
        """``names``' outputs for a checked batch of any size: one call, or chunks of the static batch (the last
        zero-padded)."""
        step = self.batch_size
        if step is None or arr.shape[0] == step:
            return self._run(arr, names)
        parts: list[list[np.ndarray]] = []
        for start in range(0, arr.shape[0], step):
            chunk = arr[start : start + step]
            valid = chunk.shape[0]
            if valid < step:
                pad = np.zeros((step - valid, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            parts.append([out[:valid] for out in self._run(chunk, names)])
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arr = check_batch(batch, self.image_size)
        if arr.shape[0] == 0:
            return np.zeros((0,), np.float32), np.zeros((0, self.image_size, self.image_size), np.float32)
        score, amap = self._run_batch(arr, OUTPUT_NAMES)
        return score, amap

    def patch_scores(self, batch: np.ndarray) -> np.ndarray:
        """The graph's raw patch map ``[N, 1, h, w]`` (the head's input; what ``edge-ad bench`` times the numpy head
        on, with :attr:`declared_head`)."""
        if not self.has_patch_scores:
            raise BundleError(f"{self.path} has no {PATCH_OUTPUT} output (re-export it with `edge-ad export`)")
        return self._run_batch(check_batch(batch, self.image_size), (PATCH_OUTPUT,))[0]

    def __repr__(self) -> str:
        batch = self.batch_size if self.batch_size is not None else "dynamic"
        return f"OnnxRuntime({str(self.path)!r}, precision={self.precision}, batch={batch}, device={self.device})"
