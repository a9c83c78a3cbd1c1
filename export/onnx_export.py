"""Bundle -> ONNX: the fused SimpleNet graph, fp32 or fp16, with the metadata a runtime needs.

What is exported is :meth:`SimpleNet.inference_graph` -- the very module evaluation and the torch runtime run:
``images[N,3,H,W] float32 (normalised) -> image_score[N], anomaly_map[N,H,W], patch_scores[N,1,h,w]``
(all float32). The legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is used; it folds
the backbone's eval-mode BatchNorm into its convolutions. If it is unavailable or fails, the torch.export
based exporter is tried before giving up.

FP16: the network part (backbone, patch aggregation, fused adapter/discriminator) is run through ``.half()``
in torch before export, with an explicit cast of ``images`` to float16 at the entrance and of the patch
scores back to float32 at its exit; the post-processing head (bilinear resize of the patch map, the two
Gaussian convolutions, ReduceMax) stays float32. This is the same precision split as the torch runtime's
fp16 mode, and the graph's input and its three outputs are float32 either way.

Every export is checked before it is written: ``onnx.checker`` (full check, with shape inference), the
TensorRT op check (:mod:`edge_ad.export.op_check`), and -- unless ``verify=False`` -- a parity run of
onnxruntime against the fp32 torch graph on a fixed random batch. Any failure raises; nothing is written.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from edge_ad import BUNDLE_FORMAT_VERSION, __version__
from edge_ad.bundle import WEIGHTS_NAME, BundleInfo, file_sha256
from edge_ad.export.op_check import assert_tensorrt_compatible
from edge_ad.io import atomic_path
from edge_ad.models.registry import load_model
from edge_ad.models.simplenet import SimpleNetGraph

__all__ = [
    "INPUT_NAME",
    "METADATA_KEYS",
    "OUTPUT_NAMES",
    "PRECISIONS",
    "ExportError",
    "export_onnx",
    "graph_flops",
    "onnx_metadata",
]

PRECISIONS = ("fp32", "fp16")
INPUT_NAME = "images"
OUTPUT_NAMES = ("image_score", "anomaly_map", "patch_scores")
# metadata_props every edge-ad ONNX model carries (all values are strings; JSON where structured).
METADATA_KEYS = (
    "edge_ad_version",
    "bundle_format_version",
    "family",
    "preprocessing",
    "image_size",
    "threshold",
    "score_stats",
    "precision",
    "bundle_weights_sha256",
    "model_config",
)
MIN_OPSET, MAX_OPSET = 13, 20  # TensorRT 10.0's ONNX parser reads opsets 9..20
FP16_MAX = 65504.0
# Parity of the exported graph against the fp32 torch graph on the export's check batch, as a fraction of the
# torch anomaly map's value range (max - min). Measured: fp32 ~1e-6, fp16 ~1e-3 on random-backbone models.
VERIFY_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}


class ExportError(RuntimeError):
    """The exported graph failed a check (checker, TensorRT ops, parity, fp16 range)."""


class _HalfGraph(nn.Module):
    """Network in float16 between two explicit casts; the post-processing head stays float32."""

    def __init__(self, graph: SimpleNetGraph):
        super().__init__()
        self.graph = graph.half()
        self.graph.head.float()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        patch = self.graph.patch_scores(images.to(torch.float16)).to(torch.float32)
        image_score, anomaly_map = self.graph.head(patch)
        return image_score, anomaly_map, patch


def onnx_metadata(info: BundleInfo, precision: str) -> dict[str, str]:
    """The ``metadata_props`` for a model exported from bundle ``info`` (see :data:`METADATA_KEYS`)."""
    sha = info.raw.get("files", {}).get(WEIGHTS_NAME) or file_sha256(info.weights_path)
    return {
        "edge_ad_version": __version__,
        "bundle_format_version": str(BUNDLE_FORMAT_VERSION),
        "family": info.family,
        "preprocessing": json.dumps(info.preprocessing.to_dict()),
        "image_size": str(int(info.image_size)),
        "threshold": repr(float(info.threshold)),
        "score_stats": json.dumps(info.score_stats),
        "precision": precision,
        "bundle_weights_sha256": str(sha),
        "model_config": json.dumps(info.model),
    }


def _check_fp16_range(module: nn.Module) -> None:
    """Refuse an fp16 export whose (folded) weights do not fit float16."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and tensor.numel():
            peak = float(tensor.detach().abs().max())
            if not math.isfinite(peak) or peak > FP16_MAX:
                raise ExportError(
                    f"{name} holds values up to {peak:g}, beyond float16's range ({FP16_MAX:g}); export fp32 instead"
                )


def _trace_export(module: nn.Module, example: Tensor, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    """TorchScript exporter first (dynamo=False); the torch.export-based one only if that fails."""
    names = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES), "opset_version": opset}
    dynamic_axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    try:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=r".*will be removed.*")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                do_constant_folding=True,
                dynamic_axes=dynamic_axes,
                **names,
            )
        return onnx.load_from_string(buffer.getvalue())
    except Exception as legacy_exc:  # any failure of the legacy path: try the other exporter
        warnings.warn(
            f"TorchScript ONNX export failed ({legacy_exc}); retrying with the torch.export-based exporter",
            RuntimeWarning,
            stacklevel=3,
        )
        try:
            dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim("batch")}} if dynamic_batch else None
            program = torch.onnx.export(
                module, (example,), None, dynamo=True, dynamic_shapes=dynamic_shapes, optimize=True, **names
            )
            return program.model_proto
        except Exception as exc:
            raise ExportError(f"ONNX export failed with both exporters: {legacy_exc!r}; then {exc!r}") from exc


def _check_interface(proto: onnx.ModelProto, image_size: int, batch_size: int, dynamic_batch: bool) -> None:
    """Input ``images`` and the three outputs, all float32, with the expected shapes."""
    float32 = onnx.TensorProto.FLOAT
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f"exported graph inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(OUTPUT_NAMES):
        raise ExportError(f"exported graph outputs are {outputs}, expected {list(OUTPUT_NAMES)}")
    for value in [*inputs, *proto.graph.output]:
        if value.type.tensor_type.elem_type != float32:
            raise ExportError(f"{value.name} is not float32 in the exported graph")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_param if d.dim_param else d.dim_value for d in dims]
    expected_batch: Any = "batch" if dynamic_batch else batch_size
    if len(shape) != 4 or shape[1:] != [3, image_size, image_size] or (shape[0] != expected_batch):
        raise ExportError(f"exported input shape {shape} != [{expected_batch}, 3, {image_size}, {image_size}]")


def _verify(proto: onnx.ModelProto, example: np.ndarray, reference: tuple[np.ndarray, ...], precision: str) -> None:
    """Run the export in onnxruntime (CPU) and compare with the fp32 torch graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: example})
    ref_score, ref_map = reference[0], reference[1]
    for name, value, ref in zip(OUTPUT_NAMES, got, reference, strict=True):
        if value.shape != ref.shape:
            raise ExportError(f"onnxruntime {name} has shape {value.shape}, torch {ref.shape}")
        if not np.isfinite(value).all():
            raise ExportError(f"onnxruntime {name} is not finite ({precision}); the model does not fit {precision}")
    scale = max(float(np.ptp(ref_map)), 1e-6)
    tol = VERIFY_TOLERANCE[precision] * scale
    err_map = float(np.abs(got[1] - ref_map).max())
    err_score = float(np.abs(got[0] - ref_score).max())
    if err_map > tol or err_score > tol:
        raise ExportError(
            f"exported {precision} graph disagrees with torch: max |map diff| {err_map:.3g}, "
            f"max |score diff| {err_score:.3g}, allowed {tol:.3g} ({VERIFY_TOLERANCE[precision]:g} x map range)"
        )


def export_onnx(
    bundle_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    precision: str = "fp32",
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = 17,
    verify: bool = True,
    device: str = "cpu",
) -> Path:
    """Export a bundle's fused inference graph to ONNX; returns the written path.

    ``out_path`` defaults to ``BUNDLE/model.<precision>.onnx``; it is written atomically. The input shape is
    static ``[batch_size, 3, S, S]`` unless ``dynamic_batch`` (then the batch axis is named ``batch`` and
    ``batch_size`` is only the tracing batch). ``device`` is where the graph is traced ("cuda" makes fp16
    tracing much faster than torch's CPU half kernels; the file does not depend on it).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r} (INT8 lives in calibration/)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (TensorRT 10's ONNX parser), got {opset}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("export on cuda was asked for, but torch sees no CUDA device")

    model, info = load_model(bundle_dir)
    out = Path(out_path) if out_path is not None else info.path / f"model.{precision}.onnx"
    size = int(model.image_size)
    graph = model.eval().inference_graph()

    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch_size, 3, size, size, generator=generator)
    reference = None
    if verify:
        with torch.no_grad():
            reference = tuple(t.numpy() for t in graph(example))

    module: nn.Module = graph
    if precision == "fp16":
        _check_fp16_range(graph)
        module = _HalfGraph(graph)
    module = module.to(device).eval()
    proto = _trace_export(module, example.to(device), int(opset), dynamic_batch)

    onnx.helper.set_model_props(proto, onnx_metadata(info, precision))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
    assert_tensorrt_compatible(proto)
    _check_interface(proto, size, batch_size, dynamic_batch)
    if reference is not None:
        _verify(proto, example.numpy(), reference, precision)

    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return out


def graph_flops(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> int:
    """Floating-point operations per image (2 x multiply-accumulates of Conv, Gemm, MatMul).

    Element-wise ops, pooling and resizes are not counted (they are a rounding error here). A symbolic batch
    axis counts as one image.
    """
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(os.fspath(model_or_path))
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else 1 for d in dims])
    first = next((i for i in graph.input if i.name not in {t.name for t in graph.initializer}), None)
    batch = shapes[first.name][0] if first is not None and shapes.get(first.name) else 1
    macs = 0
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out:
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            macs += math.prod(out) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type in ("Gemm", "MatMul") and shapes.get(node.input[0]):
            a = shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            inner = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
            macs += math.prod(out) * inner
    return int(2 * macs // max(batch, 1))
