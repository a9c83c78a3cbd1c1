"""Load a bundle's torch model: the family table builds the model its ``config.json`` describes, the safetensors
weights fill it. Bundles name their family, so loading dispatches on :data:`edge_ad.models.families.FAMILIES`.
(Writing a bundle is :func:`edge_ad.training.finish.save_model`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from edge_ad.bundle import CONFIG_NAME, BundleError, BundleInfo, read_bundle
from edge_ad.models.families import FAMILIES
from edge_ad.models.family import AnomalyModel


def load_model(bundle: str | Path | BundleInfo) -> tuple[AnomalyModel, BundleInfo]:
    """Rebuild a bundle's torch model in eval mode; refuses unknown families and mismatched weights."""
    info = bundle if isinstance(bundle, BundleInfo) else read_bundle(bundle)
    family = FAMILIES.get(info.family)
    if family is None:
        raise BundleError(f"{info.path}: unknown model family {info.family!r}; this edge-ad knows {sorted(FAMILIES)}")
    try:
        model: Any = family.build(info)
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
