"""Sampling SDAS images: respaced reverse diffusion with each image's strength drawn uniformly from a range.

The samples are the P images of RealNet's blend (see :mod:`edge_ad.synthesis.sources`); written as PNGs with a
``samples.json`` that records each file's strength, so a folder of them is the anomaly source users give training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import UNet2DModel

from edge_ad.io import atomic_write_bytes, atomic_write_json
from edge_ad.progress import progress_bar
from edge_ad.synthesis.sdas.model import load_model
from edge_ad.synthesis.sdas.presets import SdasConfig
from edge_ad.synthesis.sdas.scheduler import make_scheduler

__all__ = ["parse_strength", "sample_images", "write_samples"]


def parse_strength(text: str) -> tuple[float, float]:
    """``"0.1:0.2"`` -> (0.1, 0.2); ``"0.15"`` -> (0.15, 0.15). ValueError for anything else or a negative value."""
    parts = text.split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        low, high = float(parts[0]), float(parts[-1])
    except ValueError:
        raise ValueError(f"--strength must be S or LOW:HIGH (e.g. 0.1:0.2), got {text!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low <= high):
        raise ValueError(f"--strength needs 0 <= LOW <= HIGH, got {text!r}")
    return low, high


@torch.no_grad()
def sample_images(
    unet: UNet2DModel,
    config: SdasConfig,
    n: int,
    strength: tuple[float, float],
    *,
    seed: int = 0,
    batch_size: int = 8,
    steps: int | None = None,
    device: str = "cpu",
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(uint8 RGB image, its strength)`` ``n`` times; same seed, same images and strengths."""
    scheduler = make_scheduler(config)
    scheduler.set_timesteps(steps or config.sample_steps)
    gen = torch.Generator().manual_seed(seed)
    unet = unet.to(device).eval()
    size = config.image_size
    done = 0
    with progress_bar(n, "sdas sample", unit="img") as bar:
        while done < n:
            b = min(batch_size, n - done)
            s = strength[0] + (strength[1] - strength[0]) * torch.rand(b, 1, 1, 1, generator=gen)
            scheduler.set_strength(s.to(device))
            x = torch.randn((b, 3, size, size), generator=gen).to(device)
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t).sample, t, x, generator=gen).prev_sample
            pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for image, s_i in zip(pixels, s.view(-1).tolist(), strict=True):
                yield image, float(s_i)
            done += b
            bar.advance(b)


def write_samples(
    model: str | os.PathLike[str],
    n: int,
    strength: tuple[float, float],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    batch_size: int = 8,
    steps: int | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Write ``n`` samples as ``OUT/sdas_0000.png ...`` and ``OUT/samples.json`` (file -> strength); a folder that
    already holds samples is refused, so one folder is always one run."""
    if n < 1:
        raise ValueError(f"-n must be >= 1, got {n}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    out = Path(out_dir)
    if out.is_dir() and any(out.glob("sdas_*.png")):
        raise FileExistsError(f"{out} already holds SDAS samples (one folder, one run); choose another --out")
    unet, config, info = load_model(model)
    out.mkdir(parents=True, exist_ok=True)
    paths, record = [], {}
    it = sample_images(unet, config, n, strength, seed=seed, batch_size=batch_size, steps=steps, device=device)
    for i, (image, s) in enumerate(it):
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        path = out / f"sdas_{i:04d}.png"
        atomic_write_bytes(path, png.tobytes())
        paths.append(path)
        record[path.name] = round(s, 6)
    meta = {"model": str(model), "category": info.get("category"), "seed": seed, "strength": list(strength)}
    atomic_write_json(out / "samples.json", {**meta, "steps": steps or config.sample_steps, "files": record})
    return paths
