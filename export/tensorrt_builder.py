"""Build a TensorRT engine from an exported ONNX model, on the machine that will run it (e.g. the Jetson).

Precision lives in the ONNX: an fp16 ONNX (float16 network, float32 head) or a Q/DQ ONNX (INT8) builds a
*strongly typed* network, which TensorRT 10 supports and TensorRT 11 requires. Only an fp32 ONNX asked to run
in fp16 on TensorRT 10.x uses the weakly typed FP16 flag, and then the post-processing head (every layer
that depends on ``patch_scores``: resize, smoothing, max) is pinned to FP32 with per-layer precision, output
types and OBEY_PRECISION_CONSTRAINTS. TensorRT 11 has no such flag and says so. Any other pairing of ONNX and
``--precision`` is refused rather than silently building something else.

Engines are tied to the GPU and the TensorRT version, so a JSON sidecar records both, plus what the built
engine itself reports (I/O tensors, batch range of its optimisation profile, per-layer precision from the
engine inspector). ``trtexec`` users get the equivalent command line, and :func:`adopt_engine` writes the
sidecar for an engine trtexec built. Torch-free, and free of the ``onnx`` package (not a base dependency).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_ad.bundle import file_sha256
from edge_ad.io import atomic_write_bytes, atomic_write_json
from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of

from .onnx_info import OnnxInfo, read_onnx_info

PRECISIONS = ("fp32", "fp16", "int8")
HEADS = ("graph", "cuda")
SIDECAR_FORMAT = 2
HEAD_BOUNDARY = "patch_scores"  # the head (resize, smoothing, max) is everything that depends on it
GRAPH_HEAD_OUTPUTS = ("image_score", "anomaly_map")
# ONNX ops whose outputs are integers whatever their input: not pinned to FP32, not followed (trtexec line).
INTEGER_OPS = ("Shape", "Size", "ArgMax", "ArgMin", "NonZero")
INSTALL_HINT = (
    "TensorRT is not installed. On a Jetson it ships with JetPack (python3-libnvinfer); on a desktop: "
    "pip install tensorrt (NVIDIA's index). Alternatively build on the target with the printed trtexec line "
    "(edge-ad export --format engine --dry-run) and adopt it with --from-trtexec."
)
# Compute capability of Jetson modules by the name in /proc/device-tree/model (no CUDA binding needed).
JETSON_CC = (("Orin", "8.7"), ("Xavier", "7.2"), ("TX2", "6.2"), ("Nano", "5.3"))


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU) is missing; the message says how to get it."""


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise TensorRTUnavailable(INSTALL_HINT) from exc
    return trt


def trt_major(version: str | None) -> int:
    """Major version of a TensorRT version string; 10 (JetPack 6) when unknown."""
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else 10


@dataclass
class BuildOptions:
    """What the builder is asked for; the defaults suit a Jetson Orin.

    ``dynamic``: None follows the ONNX's batch axis; True demands a dynamic one (a static ONNX is refused
    instead of silently building a static engine). The profile's opt point defaults to batch 1 (line
    inspection, one part at a time). ``dla_core``: build for that DLA core with GPU fallback (DLA has no
    dynamic dimensions, so a dynamic ONNX gets a fixed ``max_batch`` profile; the runtime pads). ``head``:
    "graph" keeps the exported post-processing in the engine; "cuda" stops the engine at ``patch_scores``
    for the fused CUDA kernel (the head's layers are pruned instead of computed and ignored).
    """

    precision: str = "fp16"
    workspace_mib: int = 1024
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    timing_cache: Path | None = None
    dynamic: bool | None = None
    dla_core: int | None = None
    head: str = "graph"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("batch sizes must satisfy 1 <= min <= opt <= max")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.dla_core is not None and self.dla_core not in (0, 1):
            raise ValueError(f"--dla takes 0 or 1 (the Orin's two DLA cores), got {self.dla_core}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ValueError("DLA runs fp16 or int8 only: use --precision fp16 or int8 with --dla")


# ----------------------------------------------------------------------------------------------- the ONNX
def edge_ad_onnx(onnx_path: str | Path) -> OnnxInfo:
    """The ONNX's header, refused unless edge-ad's export wrote it (metadata, input, outputs)."""
    from edge_ad.runtimes.onnx_runtime import REQUIRED_METADATA

    info = read_onnx_info(onnx_path)
    missing = [k for k in REQUIRED_METADATA if k not in info.metadata]
    if missing:
        raise ValueError(
            f"{info.path} lacks edge-ad metadata {missing}: it was not written by edge-ad's ONNX export "
            "(export it with `edge-ad export BUNDLE`)"
        )
    names = [o.name for o in info.outputs]
    if info.input.name != "images" or not {HEAD_BOUNDARY, *GRAPH_HEAD_OUTPUTS} <= set(names):
        raise ValueError(f"{info.path} has input {info.input.name!r} and outputs {names}: not an edge-ad export")
    if json.loads(info.metadata.get("int8_recipe", "{}")).get("target") == "cpu":
        raise ValueError(
            f"{info.path} is the CPU-placement INT8 model (onnxruntime only); export with --int8-target tensorrt"
        )
    return info


def typing_mode(onnx_precision: str, precision: str, tensorrt_version: str | None) -> str:
    """'strong' when the ONNX carries the precision asked for; 'weak-fp16' for the TensorRT 10.x fallback.

    Every other pairing is refused: a strongly typed build follows the ONNX, so an fp16 or int8 ONNX built
    "as fp32" would silently be an fp16/int8 engine labelled fp32, and int8 needs calibrated Q/DQ nodes.
    """
    if onnx_precision == precision:
        return "strong"
    if precision == "fp16" and onnx_precision == "fp32":
        if trt_major(tensorrt_version) >= 11:
            raise ValueError(
                f"TensorRT {tensorrt_version} builds strongly typed networks only: export an fp16 ONNX "
                "(edge-ad export --precision fp16) and build from that"
            )
        return "weak-fp16"
    if precision == "int8":
        hint = "export the INT8 model with `edge-ad export BUNDLE --precision int8` and build model.int8.onnx"
    else:
        hint = f"build the {precision} model (model.{precision}.onnx) or pass --precision {onnx_precision}"
    raise ValueError(f"this ONNX is {onnx_precision}; it cannot be built as a {precision} engine: {hint}")


def engine_path_for(onnx_path: str | Path, precision: str) -> Path:
    """``model.fp32.onnx`` built as fp16 -> ``model.fp16.engine``: the name says what the engine runs."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    for p in PRECISIONS:
        if stem.endswith(f".{p}"):
            stem = stem[: -len(p) - 1]
            break
    return onnx_path.with_name(f"{stem}.{precision}.engine")


def _batch_plan(info: OnnxInfo, options: BuildOptions) -> tuple[int, int, int] | None:
    """The profile (min, opt, max) for a dynamic ONNX; None for a static one (checked against ``dynamic``)."""
    static = info.static_batch
    if static is not None:
        if options.dynamic:
            raise ValueError(
                f"{info.path.name} has a static batch of {static}; a dynamic-batch engine needs a dynamic-batch "
                "ONNX: re-export with --dynamic-batch (for INT8, export the fp32 model with --dynamic-batch first)"
            )
        return None
    if options.dla_core is not None:  # DLA has no dynamic dimensions: min = opt = max (TensorRT's DLA rules)
        return options.max_batch, options.max_batch, options.max_batch
    return options.min_batch, options.opt_batch, options.max_batch


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


def write_sidecar(
    engine_path: Path,
    trt: ModuleType,
    serialized: bytes,
    info: OnnxInfo,
    *,
    precision: str,
    typing: str,
    built_by: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Deserialise the engine and record what it is: what the runtime checks and what a reviewer wants."""
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialise {engine_path} on this machine")
    io = engine_io(trt, engine)
    if "images" not in io or io["images"]["mode"] != "input":
        raise ValueError(f"{engine_path} has I/O tensors {sorted(io)}; expected the input 'images'")
    expected_chw = [int(d) for d in info.input.dims[1:]]
    if io["images"]["shape"][1:] != expected_chw:
        raise ValueError(f"{engine_path} takes images {io['images']['shape']}, the ONNX {list(info.input.dims)}")
    outputs = [name for name, entry in io.items() if entry["mode"] == "output"]
    head = "graph" if set(GRAPH_HEAD_OUTPUTS) <= set(outputs) else "cuda"
    if head == "cuda" and HEAD_BOUNDARY not in outputs:
        raise ValueError(f"{engine_path} has outputs {outputs}: neither the graph head nor {HEAD_BOUNDARY!r}")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "built_by": built_by,
        "tensorrt_version": trt.__version__,
        "gpu": gpu_identity(),
        "precision": precision,
        "onnx_precision": info.metadata.get("precision", "fp32"),
        "typing": typing,
        "head": head,
        "batch": engine_batch_range(io),
        "io": io,
        "layers": layer_precisions(trt, engine),
        "onnx": info.path.name,
        "onnx_sha256": file_sha256(info.path),
        "bundle_weights_sha256": info.metadata.get("bundle_weights_sha256"),
        "metadata": info.metadata,
        "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_json(sidecar_path(engine_path), sidecar)
    return sidecar


# ---------------------------------------------------------------------------------------------- building
def _pin_head_to_fp32(trt: ModuleType, network: Any) -> list[str]:
    """Layer precision + output types FP32 for every layer downstream of ``patch_scores``; returns their names."""
    reached, pinned = {HEAD_BOUNDARY}, []
    float_types = {trt.float32, trt.float16}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        if not any(t is not None and t.name in reached for t in ins):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        reached.update(out.name for out in outs)
        floats = [j for j, out in enumerate(outs) if out.dtype in float_types]
        if not floats:  # shape arithmetic (int64) has no float precision to pin
            continue
        layer.precision = trt.float32
        for j in floats:
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def _network_outputs(network: Any) -> dict[str, Any]:
    return {network.get_output(i).name: network.get_output(i) for i in range(network.num_outputs)}


def _set_timing_cache(config: Any, path: Path | None) -> str:
    """Load the timing cache; a cache TensorRT rejects (another GPU/version) is replaced by a fresh one."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), False):
        return "loaded" if data else "new"
    warnings.warn(
        f"TensorRT rejected the timing cache {path} (another GPU or TensorRT?); starting a fresh one", stacklevel=3
    )
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise RuntimeError("TensorRT refused an empty timing cache")
    return "replaced"


def build_engine(
    onnx_path: str | Path, engine_path: str | Path | None = None, options: BuildOptions | None = None
) -> Path:
    """Parse the ONNX, configure the builder (precision, head, memory pool, profile, DLA, timing cache),
    serialise, then write the sidecar from the built engine itself. Returns the engine's path."""
    options = options or BuildOptions()
    info = edge_ad_onnx(onnx_path)
    if options.head == "cuda":  # the kernel computes a max: refuse a graph that declares another image score
        check_cuda_postprocess(image_score_of(info.metadata, str(info.path)), str(info.path))
    trt = import_tensorrt()
    onnx_precision = info.metadata.get("precision", "fp32")
    mode = typing_mode(onnx_precision, options.precision, trt.__version__)
    plan = _batch_plan(info, options)
    engine_path = Path(engine_path) if engine_path else engine_path_for(info.path, options.precision)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if mode == "strong" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(info.path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {info.path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then reports precisions
    pinned: list[str] = []
    if mode == "weak-fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_head_to_fp32(trt, network)
    if options.head == "cuda":
        outputs = _network_outputs(network)
        for name in GRAPH_HEAD_OUTPUTS:  # nothing consumes the head any more: TensorRT prunes its layers
            network.unmark_output(outputs[name])
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise ValueError(f"this device has {builder.num_DLA_cores} DLA cores; --dla {options.dla_core} needs more")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if plan is not None:
        chw = tuple(int(d) for d in info.input.dims[1:])
        profile = builder.create_optimization_profile()
        profile.set_shape(info.input.name, *((b, *chw) for b in plan))
        config.add_optimization_profile(profile)
    cache_state = _set_timing_cache(config, options.timing_cache)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {info.path} (see the log above)")
    data = bytes(serialized)
    atomic_write_bytes(engine_path, data)
    if options.timing_cache:
        atomic_write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    write_sidecar(
        engine_path,
        trt,
        data,
        info,
        precision=options.precision,
        typing=mode,
        built_by="edge-ad",
        extra={
            "workspace_mib": options.workspace_mib,
            "dla_core": options.dla_core,
            "head_pinned_fp32": pinned,
            "timing_cache": cache_state,
        },
    )
    return engine_path


def adopt_engine(onnx_path: str | Path, engine_path: str | Path, precision: str) -> Path:
    """Write the sidecar for an engine ``trtexec`` built from ``onnx_path``, so the runtime can load it."""
    info = edge_ad_onnx(onnx_path)
    trt = import_tensorrt()
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"engine not found: {engine_path}")
    mode = typing_mode(info.metadata.get("precision", "fp32"), precision, trt.__version__)
    data = engine_path.read_bytes()
    write_sidecar(engine_path, trt, data, info, precision=precision, typing=mode, built_by="trtexec")
    return sidecar_path(engine_path)


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


# ---------------------------------------------------------------------------------------------- trtexec
def trtexec_command(info: OnnxInfo, options: BuildOptions, tensorrt_version: str | None = None) -> str:
    """The ``trtexec`` line that builds what :func:`build_engine` would, for the ONNX and TensorRT version.

    A static ONNX gets no shape flags (trtexec refuses them there); TensorRT 11 gets no ``--fp16`` (removed)
    and the weakly typed fallback is refused there as in the builder. The head stays FP32 in the fallback
    through ``--precisionConstraints=obey`` and per-layer precisions/output types.
    """
    mode = typing_mode(info.metadata.get("precision", "fp32"), options.precision, tensorrt_version)
    plan = _batch_plan(info, options)
    if options.head != "graph":
        raise ValueError("trtexec cannot drop the graph's head outputs: build with edge-ad for --head cuda")
    engine = engine_path_for(info.path, options.precision)
    args = [
        "trtexec",
        f"--onnx={info.path}",
        f"--saveEngine={engine}",
        f"--memPoolSize=workspace:{options.workspace_mib}M",
        f"--timingCacheFile={options.timing_cache or info.path.with_suffix('.timing.cache')}",
        "--profilingVerbosity=detailed",
    ]
    if mode == "strong":
        args.append("--stronglyTyped")  # required on 10.x, the default on 11.x
    else:
        head = info.descendants(HEAD_BOUNDARY, stop_ops=INTEGER_OPS)
        spec = ",".join(f"{name}:fp32" for name in head)
        args += ["--fp16", "--precisionConstraints=obey", f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]
    if plan is not None:
        chw = "x".join(str(int(d)) for d in info.input.dims[1:])
        name = info.input.name
        args += [f"--{key}Shapes={name}:{b}x{chw}" for key, b in zip(("min", "opt", "max"), plan, strict=True)]
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return " ".join(shlex.quote(a) for a in args)
