"""G_k: one small UNet per backbone level that maps the (selected) features of an anomalous image to those of its
good original. Trained with MSE; the levels keep their own grids (no common resize before reconstruction).

Shape from the paper: hidden channels half the input's, channel multipliers 1, 2, 4 (two downsamplings), two
residual blocks per stage, self-attention at the two deeper stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Reconstruction"]


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(_groups(cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class _Attention(nn.Module):
    """Single-head self-attention over positions, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        # written out (MatMul, Softmax) rather than scaled_dot_product_attention, which the ONNX exporter refuses
        weights = torch.softmax(torch.matmul(q.transpose(1, 2), k) * c**-0.5, dim=-1)  # N x hw x hw
        out = torch.matmul(v, weights.transpose(1, 2))  # N x C x hw
        return x + self.proj(out.reshape(n, c, h, w))


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int, attention: bool, blocks: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(blocks):
            layers.append(_ResBlock(cin if i == 0 else cout, cout))
            if attention:
                layers.append(_Attention(cout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Reconstruction(nn.Module):
    """``channels`` -> ``channels`` at the same grid; the grid's sides must be divisible by 4."""

    def __init__(self, channels: int, hidden_ratio: float = 0.5, mult: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        base = max(8, round(channels * hidden_ratio))
        widths = [base * m for m in mult]
        deep = set(range(len(mult) - 2, len(mult)))  # attention at the two deeper stages
        self.factor = 2 ** (len(mult) - 1)
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(_Stage(widths[max(i - 1, 0)], w, i in deep) for i, w in enumerate(widths))
        self.pool = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.up = nn.ModuleList(
            _Stage(widths[i + 1] + widths[i], widths[i], i in deep) for i in reversed(range(len(widths) - 1))
        )
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"feature grid {tuple(x.shape[-2:])} must be divisible by {self.factor}")
        h = self.stem(x)
        skips = []
        for i, stage in enumerate(self.down):
            h = stage(h)
            if i < len(self.pool):
                skips.append(h)
                h = self.pool[i](h)
        for stage in self.up:
            skip = skips.pop()
            h = stage(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.out(h)
