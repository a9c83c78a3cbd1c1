"""What an exported artifact is called and what it carries, in one torch-free place.

A bundle folder holds ``model.safetensors`` and, after export, ``model.<precision>.onnx`` and
``model.<precision>.engine`` (with its ``.json`` sidecar). Every ONNX carries the edge-ad metadata a runtime needs
to preprocess and decide (``metadata_props``); an engine's sidecar carries a copy. :class:`ArtifactInfo` is that
metadata parsed once, strictly: a missing key, an unreadable value or a non-finite threshold is refused in one line,
so the runtimes, the exporters (Triton, DeepStream, engine verification), serve and bench all read it the same way.

Why a module of its own: the bundle, the runtimes and the exporters all need these names, and keeping them here
lets each import downwards only (no runtime imports ``edge_ad.export``; the bundle imports no exporter).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_ad import BUNDLE_FORMAT_VERSION, __version__
from edge_ad.data.preprocess import Preprocessing
from edge_ad.postprocess.image_score import HeadDeclaration

__all__ = [
    "GRAPH_HEAD_OUTPUTS",
    "HEAD_BOUNDARY",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "PATCH_OUTPUT",
    "REQUIRED_METADATA",
    "WEIGHTS_NAME",
    "ArtifactCheckError",
    "ArtifactInfo",
    "BundleError",
    "artifact_bundle_threshold",
    "artifact_metadata",
    "artifact_path",
    "artifact_weights_sha256",
    "finite_threshold",
    "metadata_bundle_threshold",
    "read_sidecar",
    "sidecar_path",
]

WEIGHTS_NAME = "model.safetensors"

# The ONNX contract: one float32 NCHW input, the graph's outputs (image score and map, the head's raw patch map).
INPUT_NAME = "images"
OUTPUT_NAMES = ("image_score", "anomaly_map")
GRAPH_HEAD_OUTPUTS = OUTPUT_NAMES
PATCH_OUTPUT = "patch_scores"
HEAD_BOUNDARY = PATCH_OUTPUT  # the head (resize, smoothing, max) is everything that depends on it
REQUIRED_METADATA = (
    "bundle_format_version",
    "family",
    "preprocessing",
    "image_size",
    "threshold",
    "score_stats",
    "precision",
)

ENGINE_METADATA = ("bundle_format_version", "preprocessing", "threshold")  # what an engine's sidecar must carry


class ArtifactCheckError(RuntimeError):
    """An artifact being written (ONNX, INT8 Q/DQ, engine) failed one of its checks, so nothing was written.

    Why here: export and calibration raise their own subclasses, and the CLI turns any of them into one line without
    importing either (torch-free: an engine is built on a Jetson that has no torch).
    """


class BundleError(ValueError):
    """A bundle or an export of one that is missing, damaged, or written by an incompatible edge-ad."""


def artifact_path(folder: str | Path, precision: str, kind: str = "onnx") -> Path:
    """``FOLDER/model.<precision>.onnx`` (``kind="onnx"``) or ``.engine`` (``kind="engine"``)."""
    if kind not in ("onnx", "engine"):
        raise ValueError(f"artifact kind must be onnx or engine, not {kind!r}")
    return Path(folder) / f"model.{precision}.{kind}"


def finite_threshold(value: Any, where: str | Path, *, text: bool = False) -> float:
    """The verdict threshold as a float; NaN or inf would silently call every image good, so they are refused.

    ``text``: the value is a string (ONNX metadata); in ``config.json`` it must be a JSON number.
    """
    if isinstance(value, bool) or not isinstance(value, (str,) if text else (int, float)):
        raise BundleError(f"{where}: the verdict threshold {value!r} is not a number")
    try:
        threshold = float(value)
    except ValueError:
        raise BundleError(f"{where}: the verdict threshold {value!r} is not a number") from None
    if not math.isfinite(threshold):
        raise BundleError(
            f"{where}: the verdict threshold is {threshold} (not finite), so every verdict would be meaningless; "
            "retrain the bundle (or set the threshold from good images) and re-export"
        )
    return threshold


# ------------------------------------------------------------------------------------------ engine sidecar
def sidecar_path(engine_path: str | Path) -> Path:
    """The JSON sidecar beside an engine: what it was built from, for which GPU and TensorRT, and its metadata."""
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


# ------------------------------------------------------------------------------------------ metadata
def artifact_metadata(artifact: str | Path) -> dict[str, str]:
    """The edge-ad metadata of an ONNX model (``metadata_props``) or a TensorRT engine (its sidecar's copy)."""
    artifact = Path(artifact)
    if artifact.suffix == ".engine":
        return dict(read_sidecar(artifact).get("metadata") or {})
    try:
        import onnx

        proto = onnx.load(str(artifact), load_external_data=False)
        return {p.key: p.value for p in proto.metadata_props}
    except ImportError:  # the base install has onnxruntime but not onnx
        import onnxruntime as ort

        session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        return dict(session.get_modelmeta().custom_metadata_map)


def artifact_weights_sha256(artifact: str | Path) -> str | None:
    """``bundle_weights_sha256`` an ONNX model (metadata) or a TensorRT engine (its JSON sidecar) recorded."""
    artifact = Path(artifact)
    if artifact.suffix == ".engine":
        sidecar = read_sidecar(artifact)  # the hash at its top level, or in the ONNX metadata it carries
        sha = sidecar.get("bundle_weights_sha256") or (sidecar.get("metadata") or {}).get("bundle_weights_sha256")
        return str(sha) if sha else None
    sha = artifact_metadata(artifact).get("bundle_weights_sha256")
    return str(sha) if sha else None


def artifact_bundle_threshold(artifact: str | Path) -> float | None:
    """The bundle threshold an export was made with: ``score_stats.fp32_threshold`` when the export derived its own
    (fp16, INT8), else its ``threshold``; None when it records neither."""
    return metadata_bundle_threshold(artifact_metadata(artifact))


def metadata_bundle_threshold(meta: dict[str, str]) -> float | None:
    """:func:`artifact_bundle_threshold` of metadata already read (an ONNX's props, a Triton model's parameters)."""
    try:
        stats = json.loads(meta.get("score_stats") or "{}")
        value = stats.get("fp32_threshold") if isinstance(stats, dict) else None
        value = meta.get("threshold") if value is None else value
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ArtifactInfo:
    """An export's edge-ad metadata, parsed and checked: what a runtime needs to preprocess, score and decide."""

    family: str
    precision: str
    image_size: int
    preprocessing: Preprocessing
    threshold: float
    score_stats: dict[str, Any]
    edge_ad_version: str
    bundle_weights_sha256: str | None
    declared_head: HeadDeclaration
    metadata: dict[str, str] = field(repr=False)

    @classmethod
    def parse(
        cls, meta: dict[str, str], where: str | Path, *, required: tuple[str, ...] = REQUIRED_METADATA
    ) -> ArtifactInfo:
        """Refuse in one line (:class:`BundleError`) metadata that lacks a key, is malformed, comes from another
        bundle format or carries a non-finite threshold. ``required``: the keys that must be there (an engine
        sidecar's copy and a Triton model's parameters name their precision elsewhere)."""
        missing = [k for k in required if k not in meta]
        if missing:
            raise BundleError(
                f"{where} lacks edge-ad metadata {missing}: it was not written by edge-ad's ONNX export "
                "(re-export it with `edge-ad export`)"
            )
        if str(meta["bundle_format_version"]).strip() != str(BUNDLE_FORMAT_VERSION):
            raise BundleError(
                f"{where} was exported by edge-ad {meta.get('edge_ad_version', '?')} in bundle format "
                f"{meta['bundle_format_version']}; this edge-ad ({__version__}) reads format "
                f"{BUNDLE_FORMAT_VERSION}. Re-export it with a matching edge-ad version."
            )
        try:
            preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
            image_size = int(meta.get("image_size", preprocessing.image_size))
            threshold = finite_threshold(meta["threshold"], f"{where} (metadata)", text=True)
            score_stats: dict[str, Any] = dict(json.loads(meta.get("score_stats") or "{}"))
        except BundleError:
            raise
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where} has malformed edge-ad metadata: {exc}") from None
        try:
            head = HeadDeclaration.of_metadata(meta, str(where))
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        if preprocessing.image_size != image_size:
            raise BundleError(f"{where}: preprocessing size {preprocessing.image_size} != model {image_size}")
        sha = meta.get("bundle_weights_sha256")
        return cls(
            family=str(meta.get("family", "?")),
            precision=str(meta.get("precision", "fp32")),
            image_size=image_size,
            preprocessing=preprocessing,
            threshold=threshold,
            score_stats=score_stats,
            edge_ad_version=str(meta.get("edge_ad_version", "?")),
            bundle_weights_sha256=str(sha) if sha else None,
            declared_head=head,
            metadata=dict(meta),
        )

    @classmethod
    def of(cls, artifact: str | Path) -> ArtifactInfo:
        """The parsed metadata of an ONNX file or an engine (its sidecar's copy of its ONNX's metadata)."""
        engine = Path(artifact).suffix == ".engine"
        required = ENGINE_METADATA if engine else REQUIRED_METADATA
        return cls.parse(artifact_metadata(artifact), artifact, required=required)
