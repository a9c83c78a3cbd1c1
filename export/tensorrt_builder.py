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

The code is split by job: :mod:`~edge_ad.export.tensorrt_options` (the request, the typing decision, the
trtexec line), :mod:`~edge_ad.runtimes.tensorrt_engine` (GPU and engine facts, reading sidecars) and this module,
which drives the build and writes the sidecar.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_ad.artifacts import GRAPH_HEAD_OUTPUTS, HEAD_BOUNDARY, sidecar_path
from edge_ad.bundle import file_sha256
from edge_ad.io import atomic_write_bytes, atomic_write_json
from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of
from edge_ad.runtimes.tensorrt_engine import (
    engine_batch_range,
    engine_io,
    gpu_identity,
    import_tensorrt,
    layer_precisions,
)

from .onnx_info import OnnxInfo
from .tensorrt_options import (
    SIDECAR_FORMAT,
    BuildOptions,
    _batch_plan,
    edge_ad_onnx,
    engine_path_for,
    typing_mode,
)

__all__ = ["adopt_engine", "build_engine", "write_sidecar"]

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
