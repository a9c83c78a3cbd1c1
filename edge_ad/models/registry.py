"""Name -> model family, and bundle save/load for torch models (safetensors weights, JSON config).

A new family (NSA, RealNet) registers a builder here; bundles name their family, so loading dispatches on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from edge_ad.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleError, BundleInfo, read_bundle, write_config
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_with
from edge_ad.models.nsa.model import NsaConfig, NsaModel
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig

AnomalyModel = SimpleNet | NsaModel  # the torch model of every registered family


def _build_simplenet(info: BundleInfo) -> SimpleNet:
    return SimpleNet(SimpleNetConfig.from_dict(info.model), image_size=info.image_size)


def _build_nsa(info: BundleInfo) -> NsaModel:
    return NsaModel(NsaConfig.from_dict(info.model), image_size=info.image_size)


FAMILIES: dict[str, Callable[[BundleInfo], AnomalyModel]] = {"simplenet": _build_simplenet, "nsa": _build_nsa}


def save_model(
    model: AnomalyModel,
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


def load_model(bundle: str | Path | BundleInfo) -> tuple[AnomalyModel, BundleInfo]:
    """Rebuild a bundle's torch model in eval mode; refuses unknown families and mismatched weights."""
    info = bundle if isinstance(bundle, BundleInfo) else read_bundle(bundle)
    builder = FAMILIES.get(info.family)
    if builder is None:
        raise BundleError(f"{info.path}: unknown model family {info.family!r}; this edge-ad knows {sorted(FAMILIES)}")
    try:
        model = builder(info)
    except ValueError as exc:
        raise BundleError(f"{info.path}: {exc}") from exc
    state = _read_weights(info.weights_path)
    own = model.state_dict()
    for key, value in own.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise BundleError(
                f"{info.weights_path} does not fit the {info.family} config in {info.path / CONFIG_NAME}: "
                f"{key} has shape {tuple(state[key].shape)} in the weights but {tuple(value.shape)} in the model "
                "the config describes (was config.json edited?)"
            )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # anything the shape check above did not foresee
        raise BundleError(f"{info.weights_path} does not fit the {info.family} config: {exc}") from exc
    if missing or unexpected:
        raise BundleError(
            f"{info.weights_path} does not fit the {info.family} config: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval(), info


def _read_weights(path: Path) -> dict[str, Tensor]:
    """The bundle's tensors; a damaged file is named in one line instead of a safetensors traceback."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable safetensors file ({exc}): damaged bundle") from exc
