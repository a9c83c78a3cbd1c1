"""Anomaly-map post-processing as a torch module that exports to ONNX (opset 17) and TensorRT.

:class:`AnomalyMapHead` computes exactly what :func:`edge_ad.postprocess.numpy_ops.postprocess` computes:
image score = max of the raw patch map; anomaly map = bilinear resize (``align_corners=False``) to the
crop size, then a separable 33-tap Gaussian (sigma 4) with scipy's "reflect" boundary.

The boundary is built from slices and ``torch.cat``: scipy "reflect" (``d c b a | a b c d``) repeats the edge
sample, which is *not* ``F.pad(mode="reflect")`` (that is scipy's "mirror", ``d c b | a b c d``). The
reversed edge slices use ``torch.flip``, which the ONNX exporter writes as a ``Slice`` with step -1, an op
TensorRT's ONNX parser supports. The exported graph contains only Resize, Slice, Concat, Conv, Squeeze/
Reshape, ReduceMax and constants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_taps, min_map_size

__all__ = ["AnomalyMapHead", "reflect_pad"]


def reflect_pad(x: Tensor, radius: int, dim: int) -> Tensor:
    """Pad ``x`` by ``radius`` on both sides of ``dim`` with scipy's "reflect" (edge sample repeated).

    Needs ``x.shape[dim] >= radius`` (a single reflection).
    """
    if radius == 0:
        return x
    # Slices with constant (negative) bounds, so the ONNX graph needs no Shape arithmetic.
    head = [slice(None)] * (dim % x.dim())
    left = x[(*head, slice(0, radius))].flip(dim)
    right = x[(*head, slice(-radius, None))].flip(dim)
    return torch.cat([left, x, right], dim=dim)


class AnomalyMapHead(nn.Module):
    """``patch_scores[N, 1, h, w] -> (image_score[N], anomaly_map[N, H, W])``.

    ``out_size`` is the full-resolution ``(H, W)``; each side must be at least ``radius + 1`` (17 for
    sigma 4), otherwise ``ValueError`` (scipy's repeated reflection for tiny maps is not supported).
    A ``[N, h, w]`` input is accepted too.
    """

    def __init__(self, out_size: tuple[int, int], sigma: float = SIGMA, truncate: float = TRUNCATE) -> None:
        super().__init__()
        height, width = (int(s) for s in out_size)
        smallest = min_map_size(sigma, truncate)
        if height < smallest or width < smallest:
            raise ValueError(
                f"anomaly map size {(height, width)} is too small for sigma={sigma}, truncate={truncate}: "
                f"each side must be at least {smallest} (Gaussian radius + 1)"
            )
        self.out_size = (height, width)
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        taps = torch.from_numpy(gaussian_taps(sigma, truncate)).float()
        self.radius = (taps.numel() - 1) // 2
        self.register_buffer("kernel_h", taps.view(1, 1, 1, -1).clone())  # along W
        self.register_buffer("kernel_v", taps.view(1, 1, -1, 1).clone())  # along H

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, sigma={self.sigma}, truncate={self.truncate}, radius={self.radius}"

    def smooth(self, maps: Tensor) -> Tensor:
        """Separable Gaussian of ``[N, 1, H, W]`` maps with scipy "reflect" boundaries."""
        x = reflect_pad(maps, self.radius, dim=3)
        x = F.conv2d(x, self.kernel_h)
        x = reflect_pad(x, self.radius, dim=2)
        return F.conv2d(x, self.kernel_v)

    def forward(self, patch_scores: Tensor) -> tuple[Tensor, Tensor]:
        if patch_scores.dim() == 3:
            patch_scores = patch_scores.unsqueeze(1)
        if not torch.jit.is_tracing() and (patch_scores.dim() != 4 or patch_scores.shape[1] != 1):
            raise ValueError(f"expected patch scores [N, 1, h, w], got {tuple(patch_scores.shape)}")
        image_score = torch.amax(patch_scores, dim=(1, 2, 3))
        resized = F.interpolate(patch_scores, size=self.out_size, mode="bilinear", align_corners=False)
        anomaly_map = self.smooth(resized).squeeze(1)
        return image_score, anomaly_map
