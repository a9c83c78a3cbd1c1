"""TensorRT facts both the runtime and the builder need: importing TensorRT, which GPU this is, what a built engine
reports about itself, and whether an engine's sidecar matches this machine.

These readers only look (at the CUDA bindings, ``nvidia-smi``, the Jetson device tree, a deserialised engine) and
never build, so they live with the runtime and the exporter imports them from here (never the other way round).
Torch-free (torch is consulted only when already loaded).
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

INSTALL_HINT = (
    "TensorRT is not installed. On a Jetson it ships with JetPack (python3-libnvinfer); on a desktop: "
    "pip install tensorrt (NVIDIA's index). Alternatively build on the target with the printed trtexec line "
    "(edge-ad export --format engine --dry-run) and adopt it with --from-trtexec."
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU) is missing; the message says how to get it."""


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise TensorRTUnavailable(INSTALL_HINT) from exc
    return trt


class EngineMismatch(ValueError):
    """The engine was built for another GPU or TensorRT version (or cannot run here)."""


UNKNOWN = ("unknown", "", None)

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


# -------------------------------------------------------------------------------------------- GPU identity
# The order in which the sources are tried (tests replace it to take one out).
IDENTITY_SOURCES = (
    ("cuda-python", _from_cuda_python),
    ("pycuda", _from_pycuda),
    ("torch", _from_torch),
    ("nvidia-smi", _from_nvidia_smi),
    ("jetson-device-tree", _from_jetson),
)


def gpu_identity() -> dict[str, str]:
    """Name and compute capability of device 0 from the first source that knows (and which one it was).

    TensorRT's Python API exposes no device properties, so the sources are the CUDA bindings, torch if
    already loaded, ``nvidia-smi`` and, on a Jetson, the device-tree model name.
    """
    for source, probe in IDENTITY_SOURCES:
        found = probe()
        if found:
            return {**found, "source": source}
    return {"name": "unknown", "compute_capability": "unknown", "source": "none"}


def is_jetson() -> bool:
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_bytes().decode(errors="replace").lower()
    except OSError:
        return False


def check_engine_matches(sidecar: dict[str, Any], trt_version: str, gpu: dict[str, Any]) -> list[str]:
    """Refuse an engine from another TensorRT version or GPU architecture; return notes for softer differences.

    The rule: a differing TensorRT version, or compute capability known on both sides and different, is
    refused, naming every difference. An unknown identity on either side never refuses by itself (a note
    says so; TensorRT checks the device when it deserialises), nor does another GPU name of the same
    compute capability (a note).
    """
    built = sidecar.get("gpu", {}) or {}
    problems = []
    if sidecar.get("tensorrt_version") != trt_version:
        problems.append(f"TensorRT {sidecar.get('tensorrt_version')} built it, this machine has {trt_version}")
    cc_built, cc_here = built.get("compute_capability"), gpu.get("compute_capability")
    if cc_built not in UNKNOWN and cc_here not in UNKNOWN and cc_built != cc_here:
        problems.append(
            f"built for {built.get('name')} (sm {cc_built}), this GPU is {gpu.get('name')} (sm {cc_here})"
        )
    if problems:
        raise EngineMismatch("engine does not match this machine: " + "; ".join(problems) + ": rebuild it here")
    notes = []
    if cc_built in UNKNOWN or cc_here in UNKNOWN:
        notes.append(
            f"GPU identity not fully known (built on {built.get('name', 'unknown')} via "
            f"{built.get('source', '?')}, here {gpu.get('name', 'unknown')} via {gpu.get('source', '?')}); "
            "TensorRT itself refuses an engine for another device"
        )
    elif built.get("name") not in UNKNOWN and gpu.get("name") not in UNKNOWN and built.get("name") != gpu.get("name"):
        notes.append(f"built on {built.get('name')}, running on {gpu.get('name')} (same sm {cc_here})")
    return notes
