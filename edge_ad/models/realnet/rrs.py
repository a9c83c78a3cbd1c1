"""Reconstruction-residual selection and the segmentation head.

Residuals ``E_k = (phi_k(A) - G_k(phi_k(A)))^2`` are upsampled to the largest level's grid and concatenated; after a
non-affine BatchNorm (so levels are comparable), each image keeps its own top ``k`` channels by global max and top
``k`` by global mean (a dynamic, per-image selection: TopK + GatherElements in an exported graph). A small decoder
turns the 2k selected channels into a two-class map (normal, anomalous) at twice the grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualSelection", "SegmentationDecoder", "residuals"]


def residuals(features: Sequence[torch.Tensor], reconstructions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared residuals of every level, bilinearly upsampled to the largest grid and concatenated (N x sum C)."""
    if len(features) != len(reconstructions) or not features:
        raise ValueError("need one reconstruction per feature level, at least one level")
    size = max((f.shape[-2:] for f in features), key=lambda s: s[0] * s[1])
    maps = []
    for f, r in zip(features, reconstructions, strict=True):
        e = (f - r) ** 2
        maps.append(e if e.shape[-2:] == size else F.interpolate(e, size=size, mode="bilinear", align_corners=False))
    return torch.cat(maps, 1)


class ResidualSelection(nn.Module):
    """Per image: BatchNorm (no affine), then the top ``k`` channels by global max and the top ``k`` by global mean."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        if not 1 <= k <= channels:
            raise ValueError(f"k must be in 1..{channels}, got {k}")
        self.k = k
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def indices(self, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(by max, by mean)``: N x k channel indices each, highest first."""
        by_max = normed.amax(dim=(2, 3)).topk(self.k, dim=1).indices
        by_mean = normed.mean(dim=(2, 3)).topk(self.k, dim=1).indices
        return by_max, by_mean

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        normed = self.norm(residual)
        by_max, by_mean = self.indices(normed)
        n, _, h, w = normed.shape
        picked = torch.cat([by_max, by_mean], 1)
        return normed.gather(1, picked[:, :, None, None].expand(n, picked.shape[1], h, w))


class _ConvBlock(nn.Module):
    """3x3 conv, BatchNorm, ReLU, with a residual path (1x1 conv when the width changes)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class SegmentationDecoder(nn.Module):
    """2k selected channels -> 2-class logits at twice the grid: two residual layers at the input width, 3x3 convs to
    128, 32 and 8 channels, a 2x bilinear upsample, convs to 4 and 2. :meth:`probability` gives the softmax's
    anomalous class, the score map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _ConvBlock(channels, channels), _ConvBlock(channels, channels),
            _ConvBlock(channels, 128), _ConvBlock(128, 32), _ConvBlock(32, 8),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=1)[:, 1]
