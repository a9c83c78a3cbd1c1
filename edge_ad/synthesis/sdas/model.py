"""An SDAS model folder: ``sdas.json`` (the recipe and what it was trained on) and ``sdas.safetensors`` (the
UNet's EMA weights). No pickle anywhere: the network is rebuilt from the JSON and the tensors loaded strictly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

from edge_ad.io import atomic_path, atomic_write_json
from edge_ad.synthesis.sdas.presets import SdasConfig

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "build_unet", "load_model", "save_model"]

CONFIG_FILE = "sdas.json"
WEIGHTS_FILE = "sdas.safetensors"
FORMAT = "edge-ad-sdas/1"


def build_unet(config: SdasConfig) -> UNet2DModel:
    """The UNet of ``config``: 3 input channels; 6 outputs (eps and the variance interpolation v) with a learned
    variance, else 3 (eps)."""
    levels = len(config.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in config.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in config.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=6 if config.learn_sigma else 3,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=config.attention_head_dim,
        resnet_time_scale_shift="scale_shift" if config.scale_shift else "default",
        norm_num_groups=min(32, min(config.block_out_channels)),
    )


def save_model(folder: str | os.PathLike[str], unet: UNet2DModel, config: SdasConfig, info: dict[str, Any]) -> None:
    """Write the weights, then the JSON (a folder with a JSON always has the weights it names)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(out / CONFIG_FILE, {"format": FORMAT, "config": config.to_json(), **info})


def load_model(folder: str | os.PathLike[str]) -> tuple[UNet2DModel, SdasConfig, dict[str, Any]]:
    """``(unet in eval mode, config, info)``; ValueError naming the folder when it is not an SDAS model."""
    root = Path(folder)
    meta_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise ValueError(f"{root} is not an SDAS model folder (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not an SDAS model description (format {FORMAT!r} expected)")
    config = SdasConfig.from_json(meta["config"])
    unet = build_unet(config)
    try:
        unet.load_state_dict(load_file(str(weights_path)), strict=True)
    except Exception as exc:  # safetensors' own error for a corrupt file, torch's for a shape mismatch
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{weights_path} does not fit the network of {meta_path}: {first}") from None
    unet.eval()
    info = {k: v for k, v in meta.items() if k not in ("format", "config")}
    return unet, config, info
