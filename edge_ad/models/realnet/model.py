"""RealNet (Zhang et al., CVPR 2024) as an edge-ad family: frozen backbone levels -> AFS gather -> G_k per level ->
squared residuals -> RRS -> segmentation decoder -> 2-class softmax map -> the shared post-processing head.

Sizes, scaled to the backbone (the reference's WideResNet50 layer1-4 keeps 256 / 512 / 512 / 256 of 256 / 512 /
1024 / 2048 channels and RRS keeps 256 by max and 256 by mean of the 1536 kept):

* AFS keeps ``afs_ratio`` (default 0.5) of each level's channels, rounded up, unless ``afs_keep`` names them
  (EfficientNet-Lite0's default levels block4 / block10, 40 and 112 channels: 20 and 56 kept);
* RRS keeps ``k = max(1, round(sum(afs_keep) / 6))`` by max and as many by mean (the reference's 256 of 1536,
  one sixth each) unless ``rrs_k`` is given (Lite0: 13 + 13 of 76);
* G_k drops its deepest downsampling stages while a level's grid is not divisible by their factor (Lite0's stride-16
  level at 224 px is 14 x 14: channel multipliers 1, 2 instead of 1, 2, 4).

The patch map is the decoder's anomalous-class probability at twice the largest level's grid (56 x 56 at 224 px on
Lite0: one cell per 4 x 4 pixels). The shared head does the rest: image score "max", the maximum of that patch map;
anomaly map, the patch map resized to the input and Gaussian-smoothed (sigma ``smoothing_sigma``, default 4, as
SimpleNet's). The reference instead takes the maximum of a 16 x 16 average pool of its full-size map; that rule is
not the shared head's, and one post-processing rule (numpy, CUDA kernel, ONNX) for every family was preferred. A
cell of the patch map already pools 4 x 4 pixels and the decoder's 3 x 3 convolutions spread it further, which
is why no further pooling was added; not measured against the reference's rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from edge_ad.models.backbones import DEFAULT_BACKBONE, PAPER_BACKBONE, get_backbone
from edge_ad.models.realnet.reconstruction import Reconstruction
from edge_ad.models.realnet.rrs import ResidualSelection, SegmentationDecoder, residuals
from edge_ad.postprocess.torch_ops import AnomalyMapHead

__all__ = ["RealNet", "RealNetConfig", "RealNetGraph"]

#: The reference's WideResNet50 layer1-4 AFS sizes.
PAPER_AFS_KEEP = {"layer1": 256, "layer2": 512, "layer3": 512, "layer4": 256}
#: RealNet's levels on the paper's backbone when none are named: the reference's layer1-4 (not SimpleNet's
#: layer2 + layer3, the backbone's own default).
PAPER_LAYERS = tuple(PAPER_AFS_KEEP)


@dataclass
class RealNetConfig:
    """Architecture constants; empty ``layers`` / ``afs_keep`` and ``rrs_k = 0`` are filled from the backbone (on
    WideResNet50: the reference's layer1-4 and 256 / 512 / 512 / 256 channels, RRS 256 + 256)."""

    backbone: str = DEFAULT_BACKBONE
    layers: tuple[str, ...] = ()
    afs_ratio: float = 0.5
    afs_keep: tuple[int, ...] = ()
    rrs_k: int = 0
    hidden_ratio: float = 0.5
    mult: tuple[int, ...] = (1, 2, 4)
    smoothing_sigma: float = 4.0

    def __post_init__(self) -> None:
        bb = get_backbone(self.backbone)
        self.layers = tuple(self.layers) or (PAPER_LAYERS if bb.name == PAPER_BACKBONE else bb.default_layers)
        channels = [bb.level(name).channels for name in self.layers]
        if not 0 < self.afs_ratio <= 1:
            raise ValueError(f"afs_ratio must be in (0, 1], got {self.afs_ratio}")
        if not self.afs_keep:
            self.afs_keep = tuple(
                min(c, PAPER_AFS_KEEP[n]) if bb.name == PAPER_BACKBONE and n in PAPER_AFS_KEEP
                else math.ceil(c * self.afs_ratio)
                for n, c in zip(self.layers, channels, strict=True)
            )
        self.afs_keep = tuple(int(k) for k in self.afs_keep)
        if len(self.afs_keep) != len(channels) or any(
            not 1 <= k <= c for k, c in zip(self.afs_keep, channels, strict=True)
        ):
            raise ValueError(f"afs_keep {self.afs_keep} must give 1..C channels for each level of {channels}")
        self.rrs_k = int(self.rrs_k) or max(1, round(sum(self.afs_keep) / 6))
        if not 1 <= self.rrs_k <= sum(self.afs_keep):
            raise ValueError(f"rrs_k must be in 1..{sum(self.afs_keep)}, got {self.rrs_k}")
        self.mult = tuple(int(m) for m in self.mult)
        if self.smoothing_sigma < 0:
            raise ValueError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("layers", "afs_keep", "mult"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RealNetConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown RealNet config keys {sorted(unknown)} (bundle from a newer edge-ad?)")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _mult_for(grid: int, mult: tuple[int, ...]) -> tuple[int, ...]:
    """The longest prefix of ``mult`` whose downsampling factor divides ``grid``."""
    for n in range(len(mult), 0, -1):
        if grid % 2 ** (n - 1) == 0:
            return mult[:n]
    return mult[:1]


class AfsGather(nn.Module):
    """The level's selected channels: indices computed once by AFS before training, kept as a buffer (a constant
    Gather in the exported graph)."""

    def __init__(self, channels: int, keep: int) -> None:
        super().__init__()
        self.register_buffer("indices", torch.arange(keep, dtype=torch.long))
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.indices)


class RealNet(nn.Module):
    """The trainable model: frozen backbone, AFS gathers, G_k per level, RRS and the decoder."""

    family = "realnet"
    reference_baseline: ClassVar[str | None] = None

    def __init__(self, config: RealNetConfig | None = None, image_size: int = 224) -> None:
        super().__init__()
        self.config = cfg = config or RealNetConfig()
        self.image_size = image_size
        bb = get_backbone(cfg.backbone)
        self.backbone = bb.build(cfg.layers)
        levels = [bb.level(name) for name in cfg.layers]
        self.grids = [math.ceil(image_size / lv.stride) for lv in levels]
        self.gathers = nn.ModuleList(AfsGather(lv.channels, k) for lv, k in zip(levels, cfg.afs_keep, strict=True))
        self.recon = nn.ModuleList(
            Reconstruction(k, cfg.hidden_ratio, _mult_for(g, cfg.mult))
            for k, g in zip(cfg.afs_keep, self.grids, strict=True)
        )
        self.rrs = ResidualSelection(sum(cfg.afs_keep), cfg.rrs_k)
        self.decoder = SegmentationDecoder(2 * cfg.rrs_k)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    @property
    def grid_size(self) -> int:
        """Side of the patch-score map: the decoder's output, twice the largest level grid."""
        return 2 * max(self.grids)

    def train(self, mode: bool = True) -> RealNet:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics never move
        return self

    @torch.no_grad()
    def features(self, images: Tensor) -> list[Tensor]:
        """Every level's full feature map (AFS scores all channels of these)."""
        return list(self.backbone(images))

    def select(self, maps: list[Tensor]) -> list[Tensor]:
        return [gather(m) for gather, m in zip(self.gathers, maps, strict=True)]

    def reconstruct(self, selected: list[Tensor]) -> list[Tensor]:
        return [g(f) for g, f in zip(self.recon, selected, strict=True)]

    def segment(self, selected: list[Tensor], reconstructed: list[Tensor]) -> Tensor:
        """2-class logits [N, 2, 2h, 2w] from the residuals of the selected features."""
        return self.decoder(self.rrs(residuals(selected, reconstructed)))

    def forward(self, images: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The training path: (selected features, their reconstructions, segmentation logits)."""
        selected = self.select(self.features(images))
        reconstructed = self.reconstruct(selected)
        return selected, reconstructed, self.segment(selected, reconstructed)

    def inference_graph(self) -> RealNetGraph:
        return RealNetGraph(self)


class _Network(nn.Module):
    """AFS gathers, G_k and RRS: selected level maps -> the 2k gathered residual channels."""

    def __init__(self, model: RealNet) -> None:
        super().__init__()
        self.gathers, self.recon, self.rrs = model.gathers, model.recon, model.rrs

    def forward(self, maps: list[Tensor]) -> Tensor:
        selected = [gather(m) for gather, m in zip(self.gathers, maps, strict=True)]
        reconstructed = [g(f) for g, f in zip(self.recon, selected, strict=True)]
        return self.rrs(residuals(selected, reconstructed))


class RealNetGraph(nn.Module):
    """images [N,3,H,W] (normalised) -> (image_score [N], anomaly_map [N,H,W], patch_scores [N,1,2h,2w]).

    Named like the other graphs (``backbone``, ``parts``, ``out``, ``head``) so the torch runtime's fp16 split
    applies. RRS exports as TopK + GatherElements (per image), AFS as constant Gathers. Declared for the stages
    after export: the image score is the patch map's maximum, the smoothing sigma is the config's; the INT8
    layout keeps the head and the RRS ranking (which has no weighted layer, so no Q/DQ lands in it) in float in every
recipe; calibration's search chooses how much of the rest is INT8.
    """

    image_score: ClassVar[str] = "max"
    #: The legacy TorchScript exporter cannot size the RRS BatchNorm after the Concat: export goes to torch.export's.
    onnx_exporter: ClassVar[str] = "dynamo"
    #: fp16 keeps the backbone float32: its float16 rounding, amplified by the squared residuals, moved the maps by
    #: up to 0.29 of their range on the export's check image (G_k, RRS and decoder in float16 alone: 1e-3).
    fp16_float32: ClassVar[tuple[str, ...]] = ("/backbone/*",)
    #: fp16 parity bound on the export's random check image, as a share of the map range (others: 0.02). RealNet's
    #: map moves with tiny input changes (1e-3 of input noise moved a one-epoch model's patch map by 0.04), so
    #: float16 rounding in G_k and the decoder moved it by up to 0.094 there; AUROC is unchanged (README, fp16).
    fp16_tolerance: ClassVar[float] = 0.25
    int8_layout: ClassVar[dict[str, Any]] = {
        "parts": {
            "head": ["/head/*", "/Softmax", "/Slice*"],  # softmax's anomalous class, max, resize + Gaussian
            "selection": ["/parts.0/rrs/*"],  # RRS: non-affine BatchNorm, max / mean, TopK, GatherElements
            "decoder": ["/out/*"],  # the segmentation decoder's convolutions
            "reconstruction": ["/parts.*"],  # AFS gathers, G_k, squared residuals
            "backbone": ["/backbone/*"],
        },
        "recipes": {
            "all": ["head", "selection"],
            "keep_decoder_fp": ["head", "selection", "decoder"],
            "backbone_only": ["head", "selection", "decoder", "reconstruction"],
        },
        "default": "backbone_only",
    }

    def __init__(self, model: RealNet) -> None:
        super().__init__()
        if model.rrs.norm.training:
            raise RuntimeError("put the model in eval mode before building its inference graph")
        self.backbone = model.backbone
        self.parts = nn.ModuleList([_Network(model)])
        self.out = model.decoder
        self.smoothing_sigma = float(model.config.smoothing_sigma)
        self.head = AnomalyMapHead((model.image_size, model.image_size), sigma=self.smoothing_sigma)
        self.eval()

    def patch_scores(self, images: Tensor) -> Tensor:
        logits = self.out(self.parts[0](list(self.backbone(images))))
        return torch.softmax(logits, dim=1)[:, 1:2]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        patch = self.patch_scores(images)
        image_score, anomaly_map = self.head(patch)
        return image_score, anomaly_map, patch
