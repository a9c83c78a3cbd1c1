"""Build a TensorRT engine from an exported ONNX model, on the machine that will run it (e.g. the Jetson).

Precision lives in the ONNX: an fp16 ONNX (float16 weights) or a Q/DQ ONNX (INT8) builds a *strongly
typed* network, which TensorRT 10 supports and TensorRT 11 requires. Only when an fp32 ONNX is asked to run
in fp16 on TensorRT 10.x does the builder fall back to the weakly typed FP16 flag (TensorRT 11 has none and
says so). Engines are tied to the GPU and the TensorRT version, so a JSON sidecar records both; the runtime
refuses an engine built elsewhere. Torch-free: needs only ``tensorrt`` (and ``onnx`` to read metadata).
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_ad.bundle import file_sha256
from edge_ad.io import atomic_write_bytes, atomic_write_json

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = (
    "TensorRT is not installed. On a Jetson it ships with JetPack (python3-libnvinfer); on a desktop: "
    "pip install tensorrt (NVIDIA's index). Alternatively build on the target with the printed trtexec line "
    "(edge-ad export --format engine --dry-run)."
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU) is missing; the message says how to get it."""


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise TensorRTUnavailable(INSTALL_HINT) from exc
    return trt


@dataclass
class BuildOptions:
    """What the builder is asked for; the defaults suit a Jetson Orin."""

    precision: str = "fp16"
    workspace_mib: int = 1024
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    timing_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("batch sizes must satisfy 1 <= min <= opt <= max")


def onnx_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The metadata_props the export stage wrote (precision, preprocessing, threshold, ...)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def onnx_input_shape(onnx_path: str | Path) -> list[int | str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def typing_mode(trt: ModuleType, onnx_precision: str, precision: str) -> str:
    """'strong' when the ONNX carries the precision asked for; 'weak-fp16' for the TensorRT 10.x fallback."""
    if onnx_precision == precision or precision == "fp32":
        return "strong"
    if precision == "fp16" and onnx_precision == "fp32":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ValueError(
                f"TensorRT {trt.__version__} builds strongly typed networks only: export an fp16 ONNX "
                "(edge-ad export --precision fp16) and build from that"
            )
        return "weak-fp16"
    raise ValueError(
        f"an {onnx_precision} ONNX cannot be built as {precision}: export the model with --precision {precision}"
    )


def build_engine(
    onnx_path: str | Path, engine_path: str | Path | None = None, options: BuildOptions | None = None
) -> Path:
    """Parse the ONNX, configure the builder (precision, memory pool, profile, timing cache), serialise."""
    trt = import_tensorrt()
    options = options or BuildOptions()
    onnx_path = Path(onnx_path)
    meta = onnx_metadata(onnx_path)
    onnx_precision = meta.get("precision", "fp32")
    if json.loads(meta.get("int8_recipe", "{}")).get("target") == "cpu":
        raise ValueError(
            f"{onnx_path} is the CPU-placement INT8 model (onnxruntime only); export with --int8-target tensorrt"
        )
    mode = typing_mode(trt, onnx_precision, options.precision)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if mode == "strong" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if mode == "weak-fp16":
        config.set_flag(trt.BuilderFlag.FP16)

    images = network.get_input(0)
    if any(d < 0 for d in tuple(images.shape)):  # dynamic batch: one profile covering min..max
        chw = tuple(images.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(images.name, (options.min_batch, *chw), (options.opt_batch, *chw), (options.max_batch, *chw))
        config.add_optimization_profile(profile)

    cache_bytes = b""
    if options.timing_cache and Path(options.timing_cache).is_file():
        cache_bytes = Path(options.timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    if options.timing_cache:
        atomic_write_bytes(options.timing_cache, bytes(config.get_timing_cache().serialize()))

    atomic_write_json(
        sidecar_path(engine_path),
        {
            "tensorrt_version": trt.__version__,
            "gpu": gpu_identity(),
            "precision": options.precision,
            "typing": mode,
            "workspace_mib": options.workspace_mib,
            "batch": [options.min_batch, options.opt_batch, options.max_batch],
            "onnx": onnx_path.name,
            "onnx_sha256": file_sha256(onnx_path),
            "metadata": meta,
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return engine_path


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def gpu_identity() -> dict[str, Any]:
    """Name and compute capability of device 0, through whichever CUDA binding is installed."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"name": name.strip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}
    except ImportError:
        pass
    try:
        import pycuda.autoinit  # type: ignore[import-not-found]  # noqa: F401
        import pycuda.driver as drv  # type: ignore[import-not-found]

        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    return {"name": "unknown", "compute_capability": "unknown"}


def trtexec_command(
    onnx_path: str | Path, options: BuildOptions, onnx_precision: str = "fp32", image_size: int = 224
) -> str:
    """The equivalent ``trtexec`` line, for Jetson users who build on the device."""
    onnx_path = Path(onnx_path)
    engine = onnx_path.with_suffix(".engine")
    args = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine}",
        f"--memPoolSize=workspace:{options.workspace_mib}M",
        f"--timingCacheFile={options.timing_cache or onnx_path.with_suffix('.timing.cache')}",
    ]
    if onnx_precision == options.precision or options.precision == "fp32":
        args.append("--stronglyTyped")
    elif options.precision == "fp16":
        args.append("--fp16")  # TensorRT 10.x only; TensorRT 11 needs an fp16 ONNX instead
    if options.max_batch > 1 or options.min_batch != options.max_batch:
        shape = f"x3x{image_size}x{image_size}"
        args += [
            f"--minShapes=images:{options.min_batch}{shape}",
            f"--optShapes=images:{options.opt_batch}{shape}",
            f"--maxShapes=images:{options.max_batch}{shape}",
        ]
    return " ".join(shlex.quote(a) if " " in a else a for a in args)


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ValueError(f"{engine_path} has no {path.name} sidecar: rebuild it with edge-ad export --format engine")
    return json.loads(path.read_text())
