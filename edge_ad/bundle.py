"""The model bundle: ``model.safetensors`` + ``config.json`` in a folder. Torch-free to read.

``config.json`` is written last and records the SHA-256 of the weights file, so a half-written or
mismatched bundle is detected on load. Nothing is unpickled: weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad import BUNDLE_FORMAT_VERSION, __version__
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "edge-ad-bundle"


class BundleError(ValueError):
    """A bundle that is missing, damaged, or written by an incompatible edge-ad."""


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
    threshold: float,
    score_stats: dict[str, Any],
    backbone: dict[str, Any],
    training: dict[str, Any],
) -> Path:
    """Write ``config.json`` after the weights file exists; it seals the bundle."""
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
        "threshold": float(threshold),
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
            threshold=float(raw["threshold"]),
            score_stats=dict(raw.get("score_stats", {})),
            backbone=dict(raw.get("backbone", {})),
            training=dict(raw.get("training", {})),
            edge_ad_version=str(raw.get("edge_ad_version", "?")),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{config_path} is incomplete or malformed: {exc}") from exc
    if preprocessing.image_size != info.image_size:
        raise BundleError(f"{config_path}: preprocessing size {preprocessing.image_size} != model {info.image_size}")
    if verify_weights:
        weights = info.weights_path
        if not weights.is_file():
            raise BundleError(f"{bundle_dir} is missing {WEIGHTS_NAME}")
        expected = raw.get("files", {}).get(WEIGHTS_NAME)
        if expected and file_sha256(weights) != expected:
            raise BundleError(f"{weights} does not match its config (hash differs): damaged or mixed-up bundle")
    return info
