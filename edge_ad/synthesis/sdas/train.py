"""Training an SDAS model on one category's good images: the hybrid loss, Adam, an EMA of the weights, progress on
stderr and the model folder rewritten at every checkpoint (so an interrupted run leaves its latest model).

Why the EMA is what gets saved: sampling from an averaged network is the diffusion papers' practice and gives
cleaner samples than the last step's weights; a warm-up ``min(rate, (1 + n) / (10 + n))`` keeps it useful on short
CPU runs.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from edge_ad.data.images import read_image
from edge_ad.data.layout import resolve_category, train_images
from edge_ad.progress import console, format_duration, progress_bar
from edge_ad.synthesis.sdas.loss import HybridLoss
from edge_ad.synthesis.sdas.model import CONFIG_FILE, build_unet, save_model
from edge_ad.synthesis.sdas.presets import SdasConfig
from edge_ad.synthesis.sdas.scheduler import make_scheduler

__all__ = ["load_good_images", "to_tensor", "train_sdas"]


def load_good_images(data: str | os.PathLike[str], category: str | None) -> tuple[Path, list[np.ndarray]]:
    """``(category folder, its good training images as uint8 RGB)``; the dataset module's errors for bad input."""
    folder = resolve_category(data, category)
    images = [read_image(p) for p in train_images(folder)]
    if len(images) < 2:
        raise ValueError(f"SDAS needs at least 2 good images, {folder} has {len(images)}")
    return folder, images


def to_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """``N x 3 x size x size`` float32 in [-1, 1] (area resize: the network's side, aspect not kept)."""
    small = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images]
    x = torch.from_numpy(np.stack(small)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - rate)


def train_sdas(
    images: Sequence[np.ndarray],
    config: SdasConfig,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    device: str = "cpu",
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on ``images`` and write the model folder ``out_dir`` (refused when it already holds a model).

    Returns a summary: steps, final loss terms (mean of the last 50 steps), wall time.
    """
    out = Path(out_dir)
    if (out / CONFIG_FILE).exists():
        raise FileExistsError(f"{out} already holds an SDAS model; choose another --out")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = to_tensor(images, config.image_size)
    unet = build_unet(config).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    loss_fn = HybridLoss(make_scheduler(config).alphas_cumprod)
    opt = torch.optim.Adam(unet.parameters(), lr=config.learning_rate)
    n_params = sum(p.numel() for p in unet.parameters())
    console.print(
        f"sdas: {len(images)} images at {config.image_size} px, UNet {n_params / 1e6:.2f} M parameters, "
        f"{config.train_steps} steps of {config.batch_size}"
    )
    meta = {**(info or {}), "seed": seed, "images": len(images), "parameters": n_params}
    recent: list[tuple[float, float]] = []
    start = time.monotonic()
    with progress_bar(config.train_steps, "sdas train", unit="step") as bar:
        for step in range(1, config.train_steps + 1):
            x0 = data[torch.randint(len(data), (config.batch_size,), generator=gen)]
            if config.hflip:
                flip = torch.rand(len(x0), generator=gen) < 0.5
                x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
            t = torch.randint(config.num_train_timesteps, (len(x0),), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x0, t, noise = x0.to(device), t.to(device), noise.to(device)
            x_t = loss_fn.noisy(x0, noise, t)
            terms = loss_fn(unet(x_t, t).sample, x0, x_t, noise, t)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            _update_ema(ema, unet, min(config.ema_rate, (1 + step) / (10 + step)))
            recent = [*recent[-49:], (terms["mse"].item(), terms["vb"].item())]
            bar.set_postfix(mse=float(np.mean([r[0] for r in recent])), vb=float(np.mean([r[1] for r in recent])))
            bar.advance()
            if step % config.checkpoint_every == 0 or step == config.train_steps:
                elapsed = time.monotonic() - start
                save_model(out, ema, config, {**meta, "steps_done": step, "train_seconds": round(elapsed, 1)})
    elapsed = time.monotonic() - start
    console.print(f"sdas: trained {config.train_steps} steps in {format_duration(elapsed)}; model in {out}")
    mse, vb = (float(np.mean([r[i] for r in recent])) for i in (0, 1))
    return {"steps": config.train_steps, "mse": mse, "vb": vb, "seconds": elapsed, "model": str(out)}
