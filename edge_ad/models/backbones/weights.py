"""Reading and loading backbone checkpoints, the same for every architecture: no pickle, names and shapes checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn


class BackboneWeightsError(ValueError):
    """A backbone checkpoint that cannot be read or does not fit the architecture."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint without unpickling arbitrary objects (safetensors, or torch.load weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise BackboneWeightsError(f"cannot read {path} as a torch checkpoint: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BackboneWeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}


def load_state(module: nn.Module, state: dict[str, Tensor], title: str, source: str = "", hint: str = "") -> None:
    """Load every tensor ``module`` has from ``state`` (extra keys, e.g. a classifier, are ignored).

    A missing key or a shape that differs is one :class:`BackboneWeightsError` naming the architecture ``title``;
    ``hint`` is added to the shape message (e.g. which smaller relative the file may hold).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise BackboneWeightsError(
            f"{source or 'checkpoint'} is not a {title} state dict: {len(missing)} keys missing, e.g. {missing[:3]}"
        )
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise BackboneWeightsError(
                f"{source or 'checkpoint'}: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(value.shape)}{hint}"
            )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def state_dict_sha256(module: nn.Module) -> str:
    """Content hash of a module's tensors (names, shapes, bytes): identifies the backbone in a bundle."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
