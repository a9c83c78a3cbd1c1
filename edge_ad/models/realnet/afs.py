"""Anomaly-aware feature selection: per backbone level, keep the channels whose response to a synthetic anomaly
best matches its mask.

For level k and channel i, over synthetic pairs (A_n anomalous, I_n its good original, M_n the mask):
``L_AFS(i) = mean_n || F([phi_i(A_n) - phi_i(I_n)]^2) - M_n ||^2``, with F scaling each map to [0, 1] (divided by
its maximum) and resizing it to the mask. The m_k channels of lowest loss are kept, computed once and stored as
indices; at run time the selection is a constant gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["AfsScorer", "gather_channels", "select_channels"]

_EPS = 1e-12


class AfsScorer:
    """Accumulates each channel's AFS loss over batches of synthetic pairs of one level."""

    def __init__(self, channels: int) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def update(self, anomalous: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor) -> None:
        """``anomalous``/``normal``: N x C x h x w features of the pairs; ``mask``: N x H x W (or N x 1 x H x W)."""
        if anomalous.shape != normal.shape or anomalous.shape[1] != self.total.numel():
            raise ValueError(f"features {tuple(anomalous.shape)} and {tuple(normal.shape)} must agree with C")
        m = mask.float().reshape(mask.shape[0], 1, *mask.shape[-2:])
        diff = (anomalous.float() - normal.float()) ** 2
        peak = diff.amax(dim=(2, 3), keepdim=True)
        scaled = F.interpolate(diff / (peak + _EPS), size=m.shape[-2:], mode="bilinear", align_corners=False)
        per_channel = ((scaled - m) ** 2).mean(dim=(2, 3))  # N x C
        self.total += per_channel.sum(dim=0).double().cpu()
        self.count += per_channel.shape[0]

    def losses(self) -> torch.Tensor:
        """Mean loss per channel (C,)."""
        if self.count == 0:
            raise ValueError("no synthetic pairs scored yet")
        return (self.total / self.count).float()


def select_channels(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices (sorted ascending, int64) of the ``keep`` channels with the lowest AFS loss."""
    if not 1 <= keep <= losses.numel():
        raise ValueError(f"keep must be in 1..{losses.numel()}, got {keep}")
    return torch.sort(torch.topk(losses, keep, largest=False).indices).values


def gather_channels(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The selected channels of N x C x h x w features (a constant gather in an exported graph)."""
    return features.index_select(1, indices.to(features.device))
