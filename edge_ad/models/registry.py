"""Name -> model family, and bundle save/load for torch models (safetensors weights, JSON config).

A new family (NSA, RealNet) registers a builder here; bundles name their family, so loading dispatches on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from edge_ad.bundle import WEIGHTS_NAME, BundleError, BundleInfo, read_bundle, write_config
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_with
from edge_ad.models.simplenet import SimpleNet, SimpleNetConfig


def _build_simplenet(info: BundleInfo) -> SimpleNet:
    return SimpleNet(SimpleNetConfig.from_dict(info.model), image_size=info.image_size)


FAMILIES: dict[str, Callable[[BundleInfo], nn.Module]] = {"simplenet": _build_simplenet}


def save_model(
    model: SimpleNet,
    bundle_dir: str | Path,
    *,
    preprocessing: Preprocessing,
    threshold: float,
    score_stats: dict[str, Any],
    backbone: dict[str, Any],
    training: dict[str, Any],
) -> Path:
    """Write a bundle atomically: weights first, then the config that seals them."""
    bundle_dir = Path(bundle_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(
        bundle_dir / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"family": model.family})
    )
    write_config(
        bundle_dir,
        family=model.family,
        model=model.config.to_dict(),
        image_size=model.image_size,
        preprocessing=preprocessing,
        threshold=threshold,
        score_stats=score_stats,
        backbone=backbone,
        training=training,
    )
    return bundle_dir


def load_model(bundle: str | Path | BundleInfo) -> tuple[SimpleNet, BundleInfo]:
    """Rebuild a bundle's torch model in eval mode; refuses unknown families and mismatched weights."""
    info = bundle if isinstance(bundle, BundleInfo) else read_bundle(bundle)
    builder = FAMILIES.get(info.family)
    if builder is None:
        raise BundleError(f"{info.path}: unknown model family {info.family!r}; this edge-ad knows {sorted(FAMILIES)}")
    try:
        model = builder(info)
    except ValueError as exc:
        raise BundleError(f"{info.path}: {exc}") from exc
    state = load_file(str(info.weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{info.weights_path} does not fit the {info.family} config: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval(), info
