"""Facts the engine sidecar records: which GPU this is, and what a built engine reports about itself.

Split from :mod:`edge_ad.export.tensorrt_builder`: these readers only look (at the CUDA bindings, ``nvidia-smi``,
the Jetson device tree, a deserialised engine, a sidecar on disk) and never build, so the runtime can use them
to check an engine against the machine. The order in which GPU sources are tried, ``IDENTITY_SOURCES``, stays in
the builder module with :func:`~edge_ad.export.tensorrt_builder.gpu_identity`. Torch-free (torch is consulted
only when already loaded).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Compute capability of Jetson modules by the name in /proc/device-tree/model (no CUDA binding needed).
JETSON_CC = (("Orin", "8.7"), ("Xavier", "7.2"), ("TX2", "6.2"), ("Nano", "5.3"))


# -------------------------------------------------------------------------------------------- GPU identity
def _from_cuda_python() -> dict[str, str] | None:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


def _from_pycuda() -> dict[str, str] | None:
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]

        drv.init()  # no context needed (pycuda.autoinit would create a non-primary one)
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return {"name": str(dev.name()), "compute_capability": f"{major}.{minor}"}
    except Exception:  # noqa: BLE001 - not installed, no driver, no device: try the next source
        return None


def _from_torch() -> dict[str, str] | None:
    torch = sys.modules.get("torch")  # only when already loaded: running an engine never imports torch
    if torch is None or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def _from_nvidia_smi() -> dict[str, str] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    name, _, cc = out.partition(",")
    cc = cc.strip()
    return {"name": name.strip(), "compute_capability": cc if re.fullmatch(r"\d+\.\d+", cc) else "unknown"}


def _from_jetson(model_file: Path = Path("/proc/device-tree/model")) -> dict[str, str] | None:
    try:
        model = model_file.read_bytes().decode(errors="replace").strip("\x00\n ")
    except OSError:
        return None
    cc = next((c for key, c in JETSON_CC if key.lower() in model.lower()), "unknown")
    return {"name": model, "compute_capability": cc}


# ------------------------------------------------------------------------------------------ engine facts
def _dtype_name(trt: ModuleType, dtype: Any) -> str:
    import numpy as np

    try:
        return str(np.dtype(trt.nptype(dtype)))
    except (TypeError, KeyError):
        return str(dtype)


def engine_io(trt: ModuleType, engine: Any) -> dict[str, dict[str, Any]]:
    """Every I/O tensor of a deserialised engine: mode, dtype, shape (-1 = dynamic) and profile 0's range."""
    out = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        entry: dict[str, Any] = {
            "mode": "input" if mode == trt.TensorIOMode.INPUT else "output",
            "dtype": _dtype_name(trt, engine.get_tensor_dtype(name)),
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        }
        if entry["mode"] == "input" and any(d < 0 for d in entry["shape"]):
            entry["profile"] = [[int(d) for d in s] for s in engine.get_tensor_profile_shape(name, 0)]
        out[name] = entry
    return out


def engine_batch_range(io: dict[str, dict[str, Any]], input_name: str = "images") -> list[int]:
    """[min, opt, max] batch of what the engine accepts: its profile, or its static batch three times."""
    entry = io[input_name]
    if "profile" in entry:
        return [int(shape[0]) for shape in entry["profile"]]
    return [int(entry["shape"][0])] * 3


_PRECISION_WORDS = (("fp32", ("FP32", "FLOAT")), ("fp16", ("FP16", "HALF")), ("int8", ("INT8",)), ("bf16", ("BF16",)))


def _precision_of(text: str) -> str:
    upper = text.upper()
    for label, words in _PRECISION_WORDS:
        if any(w in upper for w in words):
            return label
    return "other"


def layer_precisions(trt: ModuleType, engine: Any) -> dict[str, Any]:
    """Per-layer output precision from TensorRT's engine inspector (needs ProfilingVerbosity.DETAILED).

    TensorRT 10 describes a tensor as "Format/Datatype" (e.g. "Row major linear FP32"); TensorRT 11 splits
    that into "DataType" and "Format". Both are read.
    """
    try:
        inspector = engine.create_engine_inspector()
        io = engine_io(trt, engine)
        dynamic = {n: e["profile"][1] for n, e in io.items() if "profile" in e}
        if dynamic:  # formats of a dynamic engine are shown only for a context with every input shape set
            context = engine.create_execution_context()
            for name, shape in dynamic.items():
                context.set_input_shape(name, tuple(shape))
            try:
                inspector.execution_context = context  # TensorRT 10+
            except AttributeError:
                inspector.context = context  # older bindings
        info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception as exc:  # noqa: BLE001 - the inspector is diagnostic: record why it failed, keep the engine
        return {"available": False, "reason": f"engine inspector failed: {exc}"}
    layers = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # built without detailed profiling verbosity: names only
            layers.append({"name": layer, "type": "?", "precision": "unknown"})
            continue
        outputs = layer.get("Outputs", [])
        texts = [str(o.get("DataType") or o.get("Format/Datatype") or "") for o in outputs if isinstance(o, dict)]
        precision = _precision_of(" ".join(texts)) if texts else "unknown"
        layers.append({"name": layer.get("Name", "?"), "type": layer.get("LayerType", "?"), "precision": precision})
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return {"available": True, "count": len(layers), "by_precision": counts, "layers": layers}


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ValueError(
            f"{engine_path} has no {path.name} sidecar: build it with `edge-ad export ONNX --format engine`, or, "
            "for an engine trtexec built, `edge-ad export ONNX --format engine --from-trtexec ENGINE`"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the engine") from None
