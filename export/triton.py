"""Bundle -> Triton Inference Server model repository (``edge-ad export MODEL --format triton``).

Writes ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/`` holding one of:

- ``model.onnx`` for the ``onnxruntime_onnx`` platform (the default);
- ``model.plan`` for ``tensorrt_plan`` when a TensorRT engine built on the target is given (``engine=``);
- ``model.py`` + ``model.onnx`` for Triton's Python backend (``python_backend=True``): the same exported ONNX run by
  onnxruntime inside the backend's stub. That is what the CPU-only ``tritonserver`` of the ``nvidia-pytriton`` wheel
  can serve (it ships no onnxruntime or TensorRT backend); the tests and the benchmark use it.

The ONNX is always the batch-dynamic export of the very graph edge-ad evaluates (Triton's ``max_batch_size`` > 0
needs the first axis free). Inputs and outputs are named and shaped from the ONNX; the scalar-per-image
``image_score`` is declared ``dims: [1]`` with ``reshape { shape: [] }``, as Triton documents for a model whose
output has only the batch axis.

Dynamic batching: ``preferred_batch_size`` [4, 8] (capped by ``max_batch``) and ``max_queue_delay_microseconds``
2000. Why: a batch of 4-8 is where a GPU is well used by a 224x224 WRN50 trunk (TensorRT's throughput per image
flattens out there on Jetson-class GPUs), and Triton sends such a batch as soon as it is formed without waiting.
2 ms is small against one image's compute (the paper's 77 FPS is 13 ms; this CPU needs ~100 ms), so a lone request
loses at most that much latency, while requests from many cameras arriving within 2 ms are merged.

The bundle's threshold, preprocessing, score statistics and hashes go into the config's ``parameters`` (string
values, the ONNX metadata keys plus ``onnx_sha256``), so a client (:mod:`edge_ad.runtimes.triton_runtime`) preprocesses
and decides exactly as edge-ad does in-process, reading them from the server's model config.

Stale thresholds: an existing ONNX (``model.int8.onnx``, a given ``.onnx``) or engine that sits in a bundle is reused
only when :func:`edge_ad.bundle.check_artifact_current` accepts it (same weights and, after ``edge-ad threshold``, the
bundle's current threshold); and ``bundle_dir`` (the bundle's absolute path) goes into the parameters, so a client
on a machine that holds the bundle refuses a repository written before the bundle's threshold or weights changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.artifacts import artifact_path
from edge_ad.bundle import bundle_beside, require_current
from edge_ad.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_QUEUE_DELAY_US",
    "TritonExport",
    "config_pbtxt",
    "onnx_interface",
    "preferred_batch_sizes",
    "write_triton_repository",
]

DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 2000
PREFERRED_BATCH = (4, 8)
PYTHON_BACKEND_MODEL = "model.py"
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8"}


@dataclass(frozen=True)
class TritonExport:
    """What was written: the model folder, its config, the platform/backend and the model file."""

    model_dir: Path
    config: Path
    kind: str  # "onnxruntime_onnx", "tensorrt_plan" or "python"
    model_file: Path
    name: str


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """[4, 8] capped by ``max_batch`` (always at least ``[max_batch]`` for tiny limits)."""
    sizes = [b for b in PREFERRED_BATCH if b <= max_batch]
    return sizes or [max_batch]


def onnx_interface(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Inputs and outputs (name, Triton data type, dims without the batch axis) and the metadata of an ONNX file.

    Refuses a model whose batch axis is not dynamic: Triton batches on the first axis.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def describe(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        if not dims or not isinstance(dims[0], str):
            raise ValueError(
                f"{path}: {value.name} has a static batch axis {dims[:1]}; Triton batches on a dynamic first axis. "
                "Export it with a dynamic batch (edge-ad export --format triton does)"
            )
        rest = [int(d) if isinstance(d, int) and d > 0 else -1 for d in dims[1:]]
        return {"name": value.name, "data_type": _TRITON_TYPES.get(tensor.elem_type, "TYPE_FP32"), "dims": rest}

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model.graph.output]
    metadata = {p.key: p.value for p in model.metadata_props}
    return inputs, outputs, metadata


def _quote(text: str) -> str:
    """A protobuf text-format string literal (C escapes; non-ASCII as octal UTF-8 bytes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensor_block(kind: str, tensors: list[dict[str, Any]], reshape: bool = True) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims = t["dims"] or [1]
        body = f'  {{ name: {_quote(t["name"])}, data_type: {t["data_type"]}, dims: [ {", ".join(map(str, dims))} ]'
        if not t["dims"] and reshape:  # only the batch axis in the model: Triton's documented [1] + empty reshape
            body += ", reshape: { shape: [ ] }"
        lines.append(body + (" }," if i < len(tensors) - 1 else " }"))
    lines.append("]")
    return lines


def config_pbtxt(
    name: str,
    kind: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    parameters: dict[str, str],
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    preferred: list[int] | None = None,
) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format)."""
    if kind == "python":
        head = ['backend: "python"']
        instance = "KIND_CPU"
    elif kind in ("onnxruntime_onnx", "tensorrt_plan"):
        head = [f"platform: {_quote(kind)}"]
        instance = "KIND_GPU"
    else:
        raise ValueError(f"unknown Triton model kind {kind!r}")
    preferred = preferred if preferred is not None else preferred_batch_sizes(max_batch)
    if any(p < 1 or p > max_batch for p in preferred):
        raise ValueError(f"preferred batch sizes {preferred} must lie in 1..max_batch ({max_batch})")
    lines = [f"name: {_quote(name)}", *head, f"max_batch_size: {int(max_batch)}"]
    # The Python backend gets no reshape: its model.py returns the score as [N, 1] itself.
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs, reshape=kind != "python")
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {int(queue_delay_us)}",
        "}",
        f"instance_group [ {{ count: 1, kind: {instance} }} ]",
    ]
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)}, value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_onnx(model: Path, precision: str, scratch: Path) -> Path:
    """A batch-dynamic ONNX for ``model``: exported from a bundle (fp32/fp16), or an existing current .onnx file."""
    if model.suffix == ".onnx":
        return require_current(model)
    if precision == "int8":
        candidate = artifact_path(model, "int8")
        if not candidate.is_file():
            raise ValueError(f"{model} has no model.int8.onnx: run `edge-ad export {model} --precision int8` first")
        return require_current(candidate)  # onnx_interface refuses it if its batch is static
    from edge_ad.export.onnx_export import export_onnx

    return export_onnx(model, artifact_path(scratch, precision), precision=precision, dynamic_batch=True)


PYTHON_MODEL_SOURCE = '''"""Triton Python-backend model by edge-ad: runs model.onnx (beside it) in onnxruntime, CPU.

Dynamic batching hands execute() several requests; they are concatenated, run once and split back, so the batch
Triton formed is the batch onnxruntime runs. Needs numpy and onnxruntime in the Python the backend stub uses.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        path = os.path.join(here, "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        # DLPack both ways, not as_numpy() / pb_utils.Tensor(name, array): a stub built against numpy 1 misreads
        # numpy 2 arrays (garbage inputs, empty outputs; measured with nvidia-pytriton 0.7.0's stub, numpy 2.4).
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input)) for r in requests]
        sizes = [a.shape[0] for a in arrays]
        results = self.session.run(self.outputs, {self.input: np.concatenate(arrays).astype(np.float32)})
        responses, start = [], 0
        for n in sizes:
            # A per-image scalar (image_score) goes out as [n, 1], the dims the config declares for it.
            parts = [value[start : start + n].reshape(n, 1) if value.ndim == 1 else value[start : start + n]
                     for value in results]
            tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(part, dtype=np.float32))
                       for name, part in zip(self.outputs, parts)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
'''


def write_triton_repository(
    model: str | os.PathLike[str],
    repo: str | os.PathLike[str],
    *,
    name: str | None = None,
    precision: str = "fp32",
    max_batch: int = DEFAULT_MAX_BATCH,
    python_backend: bool = False,
    engine: str | os.PathLike[str] | None = None,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
    preferred: list[int] | None = None,
    intra_op_threads: int | None = None,
) -> TritonExport:
    """Write ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/<model file>`` for a bundle or a batch-dynamic ONNX.

    ``name`` defaults to the bundle folder's name. ``engine``: a TensorRT engine built on the target from this
    model with a dynamic profile up to ``max_batch`` (becomes ``model.plan``). ``intra_op_threads`` (Python backend
    only) caps onnxruntime's threads inside the server.
    """
    import tempfile

    model = Path(model)
    repo = Path(repo)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"--max-batch must be a positive integer, got {max_batch!r}")
    if python_backend and engine is not None:
        raise ValueError("--python-backend runs the ONNX with onnxruntime; it cannot serve a TensorRT engine")
    if not model.exists():
        raise FileNotFoundError(f"model not found: {model}")
    bundle = model if model.is_dir() else model.parent
    name = name or bundle.name
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad Triton model name {name!r}")
    model_dir = repo / name
    version_dir = model_dir / "1"
    with tempfile.TemporaryDirectory(prefix="edge-ad-triton-") as tmp:
        onnx_path = _source_onnx(model, precision, Path(tmp))
        inputs, outputs, metadata = onnx_interface(onnx_path)
        if "threshold" not in metadata or "preprocessing" not in metadata:
            raise ValueError(f"{onnx_path} lacks edge-ad metadata: it was not written by `edge-ad export`")
        size = int(metadata.get("image_size", 0))
        for out in outputs:  # the exporter leaves the map's H, W symbolic; the runtime contract fixes them
            if out["name"] == "anomaly_map" and size and all(d == -1 for d in out["dims"]):
                out["dims"] = [size, size]
        parameters = dict(metadata)
        parameters["onnx_sha256"] = _sha256(onnx_path)
        home = model if model.is_dir() else bundle_beside(model)
        if home is not None:  # where a client finds the bundle to check the repository against
            parameters["bundle_dir"] = str(home.resolve())
        version_dir.mkdir(parents=True, exist_ok=True)
        if engine is not None:
            kind, model_file = "tensorrt_plan", version_dir / "model.plan"
            engine = Path(engine)
            if not engine.is_file():
                raise FileNotFoundError(f"engine not found: {engine}")
            require_current(engine)
            parameters["engine_sha256"] = _sha256(engine)
            atomic_write_bytes(model_file, engine.read_bytes())
        else:
            kind = "python" if python_backend else "onnxruntime_onnx"
            model_file = version_dir / "model.onnx"
            if onnx_path.resolve() != model_file.resolve():
                tmp_copy = model_file.with_name(model_file.name + ".tmp")
                shutil.copyfile(onnx_path, tmp_copy)
                os.replace(tmp_copy, model_file)
        if python_backend:
            if intra_op_threads is not None:
                parameters["intra_op_threads"] = str(int(intra_op_threads))
            model_file = version_dir / PYTHON_BACKEND_MODEL
            atomic_write_text(model_file, PYTHON_MODEL_SOURCE)
    text = config_pbtxt(
        name, kind, inputs, outputs, parameters, max_batch=max_batch, queue_delay_us=queue_delay_us, preferred=preferred
    )
    config = model_dir / "config.pbtxt"
    atomic_write_text(config, text)
    return TritonExport(model_dir, config, kind, model_file, name)


def describe(export: TritonExport) -> str:
    """One line for people."""
    return json.dumps({"model": export.name, "kind": export.kind, "config": str(export.config)})
