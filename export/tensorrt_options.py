"""What a TensorRT build is asked for, and whether an edge-ad ONNX can give it.

Split from :mod:`edge_ad.export.tensorrt_builder` so the request side (build options, the strongly or weakly
typed decision, the engine's name, the batch profile) and its ``trtexec`` equivalent live apart from the code
that drives TensorRT: the checks here run before TensorRT is imported, and ``--dry-run`` needs nothing else.
Torch-free, and free of the ``onnx`` package.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from edge_ad.artifacts import GRAPH_HEAD_OUTPUTS, HEAD_BOUNDARY, REQUIRED_METADATA

from .onnx_info import OnnxInfo, read_onnx_info

PRECISIONS = ("fp32", "fp16", "int8")
HEADS = ("graph", "cuda")
SIDECAR_FORMAT = 2
# ONNX ops whose outputs are integers whatever their input: not pinned to FP32, not followed (trtexec line).
INTEGER_OPS = ("Shape", "Size", "ArgMax", "ArgMin", "NonZero")
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
