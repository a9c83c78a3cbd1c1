"""Bundle -> DeepStream ``nvinfer`` configuration (``edge-ad export MODEL --format deepstream --out DIR``).

nvinfer preprocesses every frame as ``y = net-scale-factor * (x - offsets)`` with one scale for all channels, so it
cannot apply edge-ad's per-channel ImageNet normalisation. The ONNX written here takes 0-255 RGB NCHW float input and
normalises inside the graph: ``(x - 255 mean[c]) / (255 std[c])`` as a Sub and a Div prepended to the exported graph
(the same ``(x / 255 - mean) / std`` as :meth:`Preprocessing.normalize`); the config then sets net-scale-factor=1.0 and
offsets=0;0;0. ``network-type=100`` (other) with ``output-tensor-meta=1`` makes nvinfer attach the raw output tensors
(``image_score``, ``anomaly_map``) to each frame's user meta, where a pad probe reads them
(``export/deepstream/anomaly_probe.py``).

Geometry: nvinfer scales the whole frame (or object) to the network size; edge-ad's resize-then-centre-crop is not
repeated. Frame the camera like the training images (or crop upstream, e.g. with nvdspreprocess ROIs).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_ad.artifacts import ArtifactInfo, artifact_path
from edge_ad.bundle import require_current
from edge_ad.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["NETWORK_MODES", "NVINFER_PROPERTY_KEYS", "DeepStreamExport", "normalising_onnx", "write_deepstream"]

# Every key the [property] group of an nvinfer config file may hold: the CONFIG_GROUP_INFER_* names in DeepStream's
# sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h (DeepStream 6.x; 7.x and 8.x add keys, remove none
# of these).
NVINFER_PROPERTY_KEYS = frozenset(
    {
        "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id", "secondary-reinfer-interval",
        "output-tensor-meta", "enable-dla", "use-dla-core", "batch-size", "tensor-meta-pool-size", "network-mode",
        "model-engine-file", "int8-calib-file", "workspace-size", "output-blob-names", "is-classifier",
        "network-type", "force-implicit-batch-dim", "infer-dims", "output-io-formats", "layer-device-precision",
        "model-color-format", "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio",
        "symmetric-padding", "scaling-filter", "scaling-compute-hw", "network-input-order", "input-tensor-from-meta",
        "custom-lib-path", "parse-bbox-func-name", "parse-bbox-instance-mask-func-name", "engine-create-func-name",
        "parse-classifier-func-name", "custom-network-config", "model-file", "proto-file", "uff-file",
        "uff-input-order", "input-dims", "uff-input-dims", "uff-input-blob-name", "tlt-encoded-model",
        "tlt-model-key", "onnx-file", "num-detected-classes", "enable-dbscan", "cluster-mode", "classifier-type",
        "classifier-threshold", "classifier-async-mode", "segmentation-threshold", "segmentation-output-order",
        "output-instance-mask", "input-object-min-width", "input-object-min-height", "input-object-max-width",
        "input-object-max-height", "operate-on-gie-id", "operate-on-class-ids", "filter-out-class-ids",
    }
)  # fmt: skip
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # nvinfer's network-mode: 0=FP32, 1=INT8, 2=FP16
OUTPUTS = ("image_score", "anomaly_map")


@dataclass(frozen=True)
class DeepStreamExport:
    config: Path
    onnx: Path
    sidecar: Path
    engine: str


def normalising_onnx(proto: object, mean: tuple[float, ...], std: tuple[float, ...], input_name: str = "images"):
    """A copy of an edge-ad ONNX whose ``input_name`` takes 0-255 RGB and is normalised per channel in the graph."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    inner = f"{input_name}_normalised"
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == input_name:
                node.input[slot] = inner
    offsets = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    scales = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
    graph.initializer.extend(
        [numpy_helper.from_array(offsets, "ds_rgb_offsets"), numpy_helper.from_array(scales, "ds_rgb_scales")]
    )
    centred = f"{input_name}_centred"
    graph.node.insert(0, helper.make_node("Div", [centred, "ds_rgb_scales"], [inner], name="ds_normalise_div"))
    graph.node.insert(0, helper.make_node("Sub", [input_name, "ds_rgb_offsets"], [centred], name="ds_normalise_sub"))
    props = {p.key: p.value for p in model.metadata_props}
    props["input_range"] = "RGB 0-255 NCHW float32; per-channel normalisation in the graph (DeepStream variant)"
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def _config_text(onnx_name: str, engine_name: str, precision: str, batch_size: int, image_size: int) -> str:
    keys = {
        "gpu-id": "0",
        "gie-unique-id": "1",
        "process-mode": "1",
        "network-type": "100",
        "output-tensor-meta": "1",
        "onnx-file": onnx_name,
        "model-engine-file": engine_name,
        "network-mode": str(NETWORK_MODES[precision]),
        "batch-size": str(batch_size),
        "infer-dims": f"3;{image_size};{image_size}",
        "model-color-format": "0",
        "net-scale-factor": "1.0",
        "offsets": "0;0;0",
        "maintain-aspect-ratio": "0",
        "output-blob-names": ";".join(OUTPUTS),
    }
    lines = [
        "# nvinfer config written by edge-ad: the ONNX takes 0-255 RGB and normalises per channel itself,",
        "# so net-scale-factor=1.0 and offsets=0. network-type=100 + output-tensor-meta=1: the raw outputs",
        "# image_score and anomaly_map are attached to each frame as NvDsInferTensorMeta (see anomaly_probe.py).",
        "[property]",
        *(f"{k}={v}" for k, v in keys.items()),
    ]
    return "\n".join(lines) + "\n"


def read_property_keys(config: str | os.PathLike[str]) -> dict[str, str]:
    """The ``[property]`` group of an nvinfer config (GLib key-file syntax, read with configparser)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read(config)
    return dict(parser["property"])


def write_deepstream(
    model: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, precision: str = "fp32", batch_size: int = 1
) -> DeepStreamExport:
    """``OUT/config_infer_edge_ad.txt``, ``OUT/model.ds.<precision>.onnx``, ``OUT/edge_ad.json`` and the probe example.

    ``model``: a bundle folder (an fp32/fp16 batch-dynamic ONNX is exported from it; int8 uses the bundle's
    ``model.int8.onnx``) or an edge-ad ``.onnx`` file.
    """
    import onnx

    from edge_ad.onnx_tools.op_check import assert_tensorrt_compatible

    if precision not in NETWORK_MODES:
        raise ValueError(f"--precision must be one of {', '.join(NETWORK_MODES)}, got {precision!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}")
    model = Path(model)
    out = Path(out_dir)
    if not model.exists():
        raise FileNotFoundError(f"model not found: {model}")
    with tempfile.TemporaryDirectory(prefix="edge-ad-deepstream-") as tmp:
        if model.suffix == ".onnx":
            source = require_current(model)  # a stale export in a bundle is refused with its re-export hint
        elif precision == "int8":
            source = artifact_path(model, "int8")
            if not source.is_file():
                raise ValueError(f"{model} has no model.int8.onnx: run `edge-ad export {model} --precision int8` first")
            require_current(source)
        else:
            from edge_ad.export.onnx_export import export_onnx

            source = export_onnx(model, Path(tmp) / "model.onnx", precision=precision, dynamic_batch=True)
        proto = onnx.load(str(source))
    info = ArtifactInfo.parse({p.key: p.value for p in proto.metadata_props}, source)
    pre = info.preprocessing
    variant = normalising_onnx(proto, pre.mean, pre.std)
    assert_tensorrt_compatible(variant)
    out.mkdir(parents=True, exist_ok=True)
    onnx_name = f"model.ds.{precision}.onnx"
    engine_name = f"{onnx_name}_b{batch_size}_gpu0_{precision}.engine"  # the name nvinfer gives the engine it builds
    atomic_write_bytes(out / onnx_name, variant.SerializeToString())
    config = out / "config_infer_edge_ad.txt"
    atomic_write_text(config, _config_text(onnx_name, engine_name, precision, batch_size, pre.image_size))
    sidecar = out / "edge_ad.json"
    atomic_write_json(
        sidecar,
        {
            "threshold": info.threshold,
            "score_stats": info.score_stats,
            "image_size": pre.image_size,
            "preprocessing": pre.to_dict(),
            "precision": precision,
            "bundle_weights_sha256": info.bundle_weights_sha256,
            "outputs": list(OUTPUTS),
        },
    )
    shutil.copyfile(Path(__file__).parent / "deepstream" / "anomaly_probe.py", out / "anomaly_probe.py")
    return DeepStreamExport(config, out / onnx_name, sidecar, engine_name)
