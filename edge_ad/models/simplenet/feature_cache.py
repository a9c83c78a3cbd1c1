"""Frozen-feature cache: the backbone is frozen, so its features are computed once, not every epoch.

The authors' code recomputes the WideResNet50 features of every training image in every epoch; with no
augmentation that work is identical each time. Features are kept in memory as float16 (the spec's measured
tolerance), one [h*w, D] block per image, and batches are gathered from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from edge_ad.models.simplenet.model import SimpleNet
from edge_ad.progress import progress_bar


@torch.no_grad()
def extract_features(
    model: SimpleNet,
    images: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    count: int | None = None,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    description: str = "features",
) -> Tensor:
    """Features of preprocessed images [3,H,W] as a [N, h*w, D] tensor on the CPU.

    ``images`` is a sequence of preprocessed arrays or a loader ``i -> array`` (so the whole set of images
    never has to sit in memory at full precision).
    """
    n = len(images) if count is None else count
    get = images if callable(images) else images.__getitem__
    model.eval()
    out: Tensor | None = None
    with progress_bar(total=n, description=description) as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batch = torch.from_numpy(np.stack([get(i) for i in range(start, stop)])).to(device)
            feats = model.features(batch)  # [B, D, h, w]
            flat = feats.flatten(2).transpose(1, 2).to("cpu", dtype)  # [B, h*w, D]
            if out is None:
                out = torch.empty((n, *flat.shape[1:]), dtype=dtype)
            out[start:stop] = flat
            bar.advance(stop - start)
    if out is None:
        raise ValueError("no images to extract features from")
    return out
