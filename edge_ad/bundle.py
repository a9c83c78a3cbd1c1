"""The model bundle: ``model.safetensors`` + ``config.json`` in a folder. Torch-free to read.

``config.json`` is written last and records the SHA-256 of the weights file, so a half-written or
mismatched bundle is detected on load. Nothing is unpickled: weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad import BUNDLE_FORMAT_VERSION, __version__
from edge_ad.artifacts import (
    WEIGHTS_NAME,
    BundleError,
    artifact_bundle_threshold,
    artifact_path,
    artifact_weights_sha256,
    finite_threshold,
    metadata_bundle_threshold,
)
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_json

CONFIG_NAME = "config.json"
FORMAT_NAME = "edge-ad-bundle"
# Fewest good images a verdict threshold should rest on. Why 10: a new good image scores above the largest of n
# good ones with probability 1/(n+1) (exchangeability), over 9% below 10 images; and the relative error of their
# standard deviation, about 1/sqrt(2(n-1)), exceeds 24%, so mean + 3 std can be off by more than 0.7 std.
MIN_THRESHOLD_IMAGES = 10


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BundleInfo:
    """Everything in ``config.json``: what a runtime needs to preprocess, score and decide."""

    path: Path
    family: str
    model: dict[str, Any]
    image_size: int
    preprocessing: Preprocessing
    threshold: float
    score_stats: dict[str, Any]
    backbone: dict[str, Any]
    training: dict[str, Any]
    edge_ad_version: str
    raw: dict[str, Any]
    has_threshold: bool = True  # False: config.json stores "threshold": null (threshold is inf: every image is good)

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_NAME


def write_config(
    bundle_dir: str | Path,
    *,
    family: str,
    model: dict[str, Any],
    image_size: int,
    preprocessing: Preprocessing,
    threshold: float | None,
    score_stats: dict[str, Any],
    backbone: dict[str, Any],
    training: dict[str, Any],
) -> Path:
    """Write ``config.json`` after the weights file exists; it seals the bundle. No threshold: JSON null."""
    bundle_dir = Path(bundle_dir)
    weights = bundle_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"write {weights} before the bundle config")
    config = {
        "format": FORMAT_NAME,
        "format_version": BUNDLE_FORMAT_VERSION,
        "edge_ad_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "family": family,
        "model": model,
        "image_size": int(image_size),
        "preprocessing": preprocessing.to_dict(),
        "threshold": None if threshold is None else float(threshold),
        "score_stats": score_stats,
        "backbone": backbone,
        "training": training,
        "files": {WEIGHTS_NAME: file_sha256(weights)},
    }
    path = bundle_dir / CONFIG_NAME
    atomic_write_json(path, config)
    return path


def read_bundle(bundle_dir: str | Path, *, verify_weights: bool = True) -> BundleInfo:
    """Read and validate a bundle's config; clear errors for anything a user could get wrong."""
    bundle_dir = Path(bundle_dir)
    config_path = bundle_dir / CONFIG_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir} is not a model bundle folder")
    if not config_path.is_file():
        raise BundleError(f"{bundle_dir} has no {CONFIG_NAME}: not a bundle, or training did not finish")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{config_path} is not valid JSON: {exc}") from exc
    if raw.get("format") != FORMAT_NAME:
        raise BundleError(f"{config_path} is not an edge-ad bundle config")
    version = raw.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{bundle_dir} was written by edge-ad {raw.get('edge_ad_version', '?')} in bundle format {version}; "
            f"this edge-ad ({__version__}) reads format {BUNDLE_FORMAT_VERSION}. Re-export it with a matching "
            "edge-ad version."
        )
    try:
        preprocessing = Preprocessing.from_dict(raw["preprocessing"])
        info = BundleInfo(
            path=bundle_dir,
            family=str(raw["family"]),
            model=dict(raw["model"]),
            image_size=int(raw["image_size"]),
            preprocessing=preprocessing,
            threshold=float("inf") if raw["threshold"] is None else finite_threshold(raw["threshold"], config_path),
            has_threshold=raw["threshold"] is not None,
            score_stats=dict(raw.get("score_stats", {})),
            backbone=dict(raw.get("backbone", {})),
            training=dict(raw.get("training", {})),
            edge_ad_version=str(raw.get("edge_ad_version", "?")),
            raw=raw,
        )
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{config_path} is incomplete or malformed: {exc}") from exc
    if preprocessing.image_size != info.image_size:
        raise BundleError(f"{config_path}: preprocessing size {preprocessing.image_size} != model {info.image_size}")
    expected = recorded_weights_sha256(raw, config_path)
    if verify_weights:
        weights = info.weights_path
        if not weights.is_file():
            raise BundleError(f"{bundle_dir} is missing {WEIGHTS_NAME}")
        if file_sha256(weights) != expected:
            raise BundleError(f"{weights} does not match its config (hash differs): damaged or mixed-up bundle")
    return info


def recorded_weights_sha256(raw: dict[str, Any], where: str | Path) -> str:
    """The weights' SHA-256 that ``config.json`` seals; a config without it cannot be trusted, so it is refused."""
    files = raw.get("files")
    sha = files.get(WEIGHTS_NAME) if isinstance(files, dict) else None
    if not isinstance(sha, str) or len(sha) != 64:
        raise BundleError(
            f"{where} records no SHA-256 of {WEIGHTS_NAME} ('files' entry missing or damaged), so the weights "
            "cannot be checked: not a bundle sealed by edge-ad; retrain or re-import it"
        )
    return sha


def bundle_beside(artifact: str | Path) -> Path | None:
    """The bundle folder an exported artifact sits in (an edge-ad ``config.json`` beside it), else None."""
    folder = Path(artifact).parent
    try:
        raw = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    return folder if isinstance(raw, dict) and raw.get("format") == FORMAT_NAME else None


def require_current(artifact: str | Path) -> Path:
    """``artifact`` when it sits outside a bundle or is current there (weights, threshold); a stale one is refused
    with its re-export hint. For exporters that copy an existing artifact (Triton repository, DeepStream config)."""
    artifact = Path(artifact)
    bundle = bundle_beside(artifact)
    if bundle is not None:
        check_artifact_current(bundle, artifact_weights_sha256(artifact), artifact)
    return artifact


def check_artifact_current(
    bundle_dir: str | Path,
    recorded_sha256: str | None,
    artifact_path: str | Path,
    *,
    metadata: dict[str, str] | None = None,
    redo: str | None = None,
) -> None:
    """Refuse an export (ONNX, INT8 ONNX, engine, Triton model) made from other weights than the bundle holds now.

    Why: retraining into a folder keeps earlier exports, and running one would silently use old weights and an old
    threshold. ``recorded_sha256`` is the ``bundle_weights_sha256`` the export recorded (an engine's sidecar
    carries its ONNX's metadata). ``metadata``: the export's edge-ad metadata when it is not a file to read (a
    Triton model's config parameters); ``redo``: the hint that fixes it, when not a plain re-export.
    """
    bundle_dir, artifact = Path(bundle_dir), Path(artifact_path)
    info = read_bundle(bundle_dir, verify_weights=False)
    current = info.raw["files"][WEIGHTS_NAME]
    if recorded_sha256 == current:
        _check_threshold_current(info, artifact, metadata, redo)
        return
    redo = redo or _reexport_hint(bundle_dir, artifact)
    if not recorded_sha256:
        raise BundleError(f"{artifact} records no bundle weights hash to check against {bundle_dir}; {redo}")
    raise BundleError(
        f"{artifact} is stale: it was exported from other weights (sha256 {recorded_sha256[:12]}) than {bundle_dir} "
        f"holds now ({current[:12]}); {redo}"
    )


def _reexport_hint(bundle_dir: Path, artifact: Path) -> str:
    name = artifact.name
    precision = name.split(".")[1] if name.startswith("model.") and name.count(".") >= 2 else "fp32"
    export = f"edge-ad export {bundle_dir} --precision {precision}"
    if artifact.suffix == ".engine":
        onnx = artifact_path(bundle_dir, precision)
        return f"re-export it with `{export}`, then rebuild the engine with `edge-ad export {onnx} --format engine`"
    return f"re-export it with `{export}`"


def _check_threshold_current(
    info: BundleInfo, artifact: Path, metadata: dict[str, str] | None = None, redo: str | None = None
) -> None:
    """Refuse an export that carries the threshold the bundle had before ``edge-ad threshold`` replaced it.

    Why: the weights did not change, so the hash check passes, but the export would decide with the old threshold.
    Only bundles with a ``threshold_history`` are checked (reading an export's metadata costs a file read).
    """
    history = info.raw.get("threshold_history")
    if not isinstance(history, list) or not history:
        return
    recorded = metadata_bundle_threshold(metadata) if metadata is not None else artifact_bundle_threshold(artifact)
    if recorded is not None and math.isclose(recorded, info.threshold, rel_tol=1e-9):
        return
    when = history[-1].get("replaced", "?") if isinstance(history[-1], dict) else "?"
    was = "records no bundle threshold" if recorded is None else f"was exported with the threshold {recorded:.6g}"
    raise BundleError(
        f"{artifact} {was}, but `edge-ad threshold` set {info.path}'s threshold to {info.threshold:.6g} ({when}); "
        f"{redo or _reexport_hint(info.path, artifact)}"
    )


def threshold_warning(threshold: float, score_stats: dict[str, Any]) -> str | None:
    """Why a verdict threshold should not be trusted (too few good images behind it), or None."""
    if not math.isfinite(threshold):
        return "there is no verdict threshold: every image will be called good"
    source = str(score_stats.get("threshold_source", ""))
    image = score_stats.get("image")
    count = image.get("good_count") if isinstance(image, dict) else None
    if source.startswith("training images"):
        return f"the verdict threshold was set on the training images themselves ({count or '?'}): it is optimistic"
    if isinstance(count, int) and count < MIN_THRESHOLD_IMAGES:
        return (
            f"the verdict threshold rests on only {count} held-out good image(s) (fewer than "
            f"{MIN_THRESHOLD_IMAGES}): verdicts are unreliable; train with more good images or a larger --holdout"
        )
    return None


_said: set[str] | None = None  # warnings printed during the current command (None: outside one, say each time)


@contextlib.contextmanager
def warnings_once() -> Iterator[None]:
    """Within this block (one CLI command) each threshold warning is printed once, however often a model is loaded
    (the demo trains, evaluates and predicts; bench loads one runtime per row)."""
    global _said
    previous, _said = _said, set()
    try:
        yield
    finally:
        _said = previous


def warn_threshold(threshold: float, score_stats: dict[str, Any], where: str | Path) -> str | None:
    """Print :func:`threshold_warning` loudly on stderr (never silenced by EDGE_AD_QUIET), once per command inside
    :func:`warnings_once`; returns it."""
    message = threshold_warning(threshold, score_stats)
    if message and _said is not None:
        if message in _said:
            return message
        _said.add(message)
    if message:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[bold yellow]warning:[/] {where}: {message}")
    return message
