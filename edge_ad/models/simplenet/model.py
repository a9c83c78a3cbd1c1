"""SimpleNet (Liu et al., CVPR 2023): frozen features -> adapter -> noise-trained discriminator.

One file for the family, plain torch. The data path is
``images -> backbone levels (stride 8 and 16) -> local 3x3 aggregation -> adapter -> discriminator -> patch scores``
followed by the shared post-processing head (resize, Gaussian sigma 4, image score = max). The backbone is any
registered one (:mod:`edge_ad.models.backbones`): the paper's WideResNet50-2 (layer2 + layer3) or EfficientNet-Lite
(the edge recipe); the aggregator, adapter and discriminator take their widths from the levels it declares.

Two forward paths share every parameter:

* the training path (:meth:`SimpleNet.features`, :meth:`SimpleNet.discriminate`) works on flat feature
  vectors, as the paper describes;
* the inference graph (:class:`SimpleNetGraph`, from :meth:`SimpleNet.inference_graph`) is what evaluation,
  the torch runtime and the ONNX export all run. It uses that everything between the backbone and the
  discriminator's BatchNorm is linear: the 1536x1536 adapter, the first discriminator layer and its BatchNorm
  collapse into one 1x1 convolution, and layer3's share of it runs on the 14x14 grid before the resize.
  Tests hold it equal to the training path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ad.models.backbones import get_backbone
from edge_ad.postprocess.torch_ops import AnomalyMapHead

SCORE_MODES = ("negative", "two_sided")


@dataclass
class SimpleNetConfig:
    """Architecture and training constants; defaults are the paper's (see SIMPLENET_SPEC.md).

    Widths follow the backbone (filled in when left None; the resolved values are what a bundle records):

    - ``layers``: the backbone's default levels, its last stride-8 and last stride-16 maps (WideResNet50: layer2,
      layer3; EfficientNet-Lite0: block4 and block10, 40 + 112 channels), so the patch grid is 28x28 at 224 px.
    - ``pretrain_embed_dim``: per-level pooled width. WideResNet50 keeps the paper's 1536 (runs of 6 and 12 entries
      of the flattened 3x3 patch, crossing channels). ``0`` keeps each level's channels, each the 3x3 local mean
      of one channel: the default for EfficientNet-Lite, whose 40- and 112-channel levels are narrower than 1536
      already, so pooling to a common width would only duplicate or mix channels.
    - ``target_embed_dim``: the adapter's width (square, as the paper's 1536x1536): 1536 for WideResNet50, the sum
      of the levels' channels with ``pretrain_embed_dim`` 0 (Lite0: 152).
    - ``disc_hidden`` stays the paper's 1024 for every backbone: the discriminator's capacity is about the decision
      boundary, not the input width, and at 152 inputs its first layer costs a tenth of WideResNet50's.
    """

    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ()
    patch_size: int = 3
    pretrain_embed_dim: int | None = None  # per-layer "mean mapper" output; 0: each level keeps its channels
    target_embed_dim: int | None = None  # aggregator output = adapter width
    adapter_bias: bool = True  # paper: no bias; authors' code: bias (default)
    disc_hidden: int = 1024
    leaky_slope: float = 0.2
    noise_std: float | None = None  # None: the backbone's (the paper's 0.015 for WideResNet50, 0.3 for Lite)
    mix_noise: int = 1
    # "negative": patch score = -D (the paper). "two_sided": |D - score_center|, with the centre taken from
    # good training features; see README ("Random backbones") for when and why.
    score_mode: str = "negative"
    score_center: float = 0.0
    smoothing_sigma: float = 4.0
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        backbone = get_backbone(self.backbone)  # ValueError naming the registered ones
        self.layers = tuple(self.layers) or backbone.default_layers
        channels = [backbone.level(layer).channels for layer in self.layers]  # ValueError for an unknown level
        if self.pretrain_embed_dim is None:
            self.pretrain_embed_dim = backbone.simplenet_embed_dim
        if self.target_embed_dim is None:
            self.target_embed_dim = self.pretrain_embed_dim or sum(channels)
        if self.noise_std is None:
            self.noise_std = backbone.simplenet_noise_std
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        if self.patch_size % 2 != 1:
            raise ValueError("patch_size must be odd")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimpleNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SimpleNet config keys {sorted(unknown)} (bundle from a newer edge-ad?)")
        return cls(**d)


def _mean_run_weight(channels: int, patch: int, run: int) -> tuple[Tensor, int]:
    """Grouped-conv weight that averages runs of ``run`` consecutive (channel, ky, kx)-flattened entries.

    This is the spec's patchify + mean mapper + aggregator written as a convolution. Runs cross channel
    boundaries, so each group spans ``lcm(p*p, run) / (p*p)`` input channels and yields
    ``lcm(p*p, run) / run`` outputs. Returns (weight [out, in_per_group, p, p], groups).
    """
    taps = patch * patch
    span = math.lcm(taps, run)
    in_per_group, out_per_group = span // taps, span // run
    if channels % in_per_group:
        raise ValueError(f"{channels} channels cannot be split into runs of {run} patch entries")
    weight = torch.zeros(out_per_group, in_per_group, patch, patch, dtype=torch.float64)
    for entry in range(span):
        c, p = divmod(entry, taps)
        weight[entry // run, c, p // patch, p % patch] = 1.0 / run
    groups = channels // in_per_group
    return weight.repeat(groups, 1, 1, 1), groups


class PatchAggregator(nn.Module):
    """Local 3x3 aggregation of each layer, resized to the first layer's grid and concatenated.

    Exactly the authors' unfold -> bilinear resize -> adaptive_avg_pool1d (per layer, then over the concat),
    as fixed grouped convolutions: no C*9 tensor is ever materialised. ``layers``: level name -> channels.

    ``pretrain_dim`` 0: each level keeps its channels, each the mean of its own 3x3 patch (a depthwise 3x3 average),
    and ``target_dim`` must be the sum of the channels.
    """

    def __init__(self, layers: dict[str, int], patch_size: int, pretrain_dim: int, target_dim: int):
        super().__init__()
        self.layers = tuple(layers)
        self.patch_size = patch_size
        self.target_dim = target_dim
        n = len(layers)
        taps = patch_size * patch_size
        if pretrain_dim == 0:
            if target_dim != sum(layers.values()):
                raise ValueError(f"target_embed_dim {target_dim} must be the levels' {sum(layers.values())} channels")
        elif (n * pretrain_dim) % target_dim or target_dim % n:
            raise ValueError(f"{n} layers x {pretrain_dim} must pool evenly to {target_dim}")
        self.dims: list[int] = []
        for i, (layer, channels) in enumerate(layers.items()):
            flat = channels * taps
            if pretrain_dim and flat % pretrain_dim:
                raise ValueError(f"{layer}: {flat} patch entries do not pool evenly to {pretrain_dim}")
            run = (flat // pretrain_dim) * (n * pretrain_dim // target_dim) if pretrain_dim else taps
            weight, groups = _mean_run_weight(channels, patch_size, run)
            self.register_buffer(f"weight{i}", weight, persistent=False)  # float64: exact 1/run; cast per use
            setattr(self, f"groups{i}", groups)
            self.dims.append(weight.shape[0])

    def layer_embedding(self, i: int, x: Tensor) -> Tensor:
        """Per-layer aggregated features on that layer's own grid."""
        weight = getattr(self, f"weight{i}").to(x.dtype)
        return F.conv2d(x, weight, padding=self.patch_size // 2, groups=getattr(self, f"groups{i}"))

    def forward(self, layer_maps: list[Tensor]) -> Tensor:
        grid = layer_maps[0].shape[-2:]
        parts = []
        for i, x in enumerate(layer_maps):
            e = self.layer_embedding(i, x)
            if e.shape[-2:] != grid:
                e = F.interpolate(e, size=grid, mode="bilinear", align_corners=False)
            parts.append(e)
        return torch.cat(parts, dim=1)


class Discriminator(nn.Module):
    """Linear -> BatchNorm1d -> LeakyReLU -> Linear(1): scores one feature vector; high = normal."""

    def __init__(self, dim: int, hidden: int = 1024, slope: float = 0.2):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = nn.LeakyReLU(slope)
        self.fc2 = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_normal_(self.fc1.weight)
        nn.init.xavier_normal_(self.fc2.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.bn(self.fc1(x)))).squeeze(-1)


class SimpleNet(nn.Module):
    """The trainable model: frozen trunk + aggregator, adapter, discriminator, and the scoring rule."""

    family = "simplenet"
    # The authors' inference path, timed by `edge-ad bench` as its in-run baseline ("module:class", imported there).
    reference_baseline: ClassVar[str | None] = "edge_ad.models.simplenet.reference_baseline:ReferenceBaseline"

    def __init__(self, config: SimpleNetConfig | None = None, image_size: int = 224):
        super().__init__()
        self.config = config or SimpleNetConfig()
        self.image_size = image_size
        cfg = self.config
        backbone = get_backbone(cfg.backbone)
        assert cfg.pretrain_embed_dim is not None and cfg.target_embed_dim is not None  # filled by the config
        self.backbone = backbone.build(cfg.layers)
        levels = {layer: backbone.level(layer).channels for layer in cfg.layers}
        self.aggregator = PatchAggregator(levels, cfg.patch_size, cfg.pretrain_embed_dim, cfg.target_embed_dim)
        self.adapter = nn.Linear(cfg.target_embed_dim, cfg.target_embed_dim, bias=cfg.adapter_bias)
        nn.init.xavier_normal_(self.adapter.weight)
        self.discriminator = Discriminator(cfg.target_embed_dim, cfg.disc_hidden, cfg.leaky_slope)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    @property
    def grid_size(self) -> int:
        return math.ceil(self.image_size / get_backbone(self.config.backbone).level(self.config.layers[0]).stride)

    def train(self, mode: bool = True) -> SimpleNet:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics never move during training
        return self

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Frozen features [N, D, h, w] (h = w = 28 for 224 input); computed once and cached in training."""
        return self.aggregator(self.backbone(images))

    def discriminate(self, flat_features: Tensor) -> Tensor:
        """D(G(f)) for flat features [M, D] -> [M]; the training path."""
        return self.discriminator(self.adapter(flat_features))

    def patch_score_from_logits(self, logits: Tensor) -> Tensor:
        """Turn discriminator outputs into anomaly scores (higher = more anomalous)."""
        if self.config.score_mode == "two_sided":
            return (logits - self.config.score_center).abs()
        return -logits

    def patch_scores_reference(self, images: Tensor) -> Tensor:
        """Patch-score maps [N, 1, h, w] through the unfused training path (for tests and checks)."""
        feats = self.features(images)
        n, c, h, w = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, c)
        scores = self.patch_score_from_logits(self.discriminate(flat))
        return scores.reshape(n, 1, h, w)

    def inference_graph(self) -> SimpleNetGraph:
        """The fused graph that evaluation, the torch runtime and the ONNX export run."""
        return SimpleNetGraph(self)


class SimpleNetGraph(nn.Module):
    """images [N,3,H,W] (normalised) -> (image_score [N], anomaly_map [N,H,W], patch_scores [N,1,h,w]).

    Adapter, first discriminator layer and its (eval-mode) BatchNorm are one affine map A, folded in float64:
    ``A f = A_2 e2 + A_3 up(e3) + b = A_2 e2 + up(A_3 e3) + b`` because the bilinear resize is linear and
    acts per channel. So layer3's share runs on the 14x14 grid (4x fewer positions), and the 1536-d feature
    and the adapter output are never materialised.

    Declared for the stages after export (written into the ONNX metadata, read there without torch): the image
    score is the patch map's maximum (what the fused CUDA kernel computes), the map's smoothing sigma (the
    config's, 4 by the paper; the kernel and the numpy head take it from there), and the INT8 layout names the graph's
    parts by ONNX node-name patterns and the recipes as the parts kept in float, from most to least quantized.
    """

    image_score: ClassVar[str] = "max"
    int8_layout: ClassVar[dict[str, Any]] = {
        "parts": {
            "head": ["/head/*"],  # resize of the patch map, 33-tap Gaussian convolutions, ReduceMax
            "score": ["/out/*", "/Sub", "/Abs", "/Neg"],  # the discriminator's last 1x1 conv (1024 -> 1), the score
            "discriminator": ["/parts.*", "/Add", "/Resize", "/act/*"],  # fused adapter + first discriminator layer
            "aggregator": ["/Conv", "/Conv_1"],  # the fixed grouped convolutions of the patch aggregator
            "backbone": ["/backbone/*"],  # WideResNet50 stem, layer1..layer3
        },
        "recipes": {
            "all": ["head"],
            "keep_head_fp": ["head", "score"],
            "keep_discriminator_fp": ["head", "score", "discriminator"],
            "backbone_only": ["head", "score", "discriminator", "aggregator"],
        },
        "default": "keep_head_fp",
    }

    def __init__(self, model: SimpleNet):
        super().__init__()
        if model.discriminator.bn.training:
            raise RuntimeError("put the model in eval mode before building its inference graph")
        cfg = model.config
        self.backbone = model.backbone
        self.aggregator = model.aggregator
        g, d = model.adapter, model.discriminator
        with torch.no_grad():
            a_w = g.weight.double()
            a_b = g.bias.double() if g.bias is not None else torch.zeros(a_w.shape[0], dtype=torch.float64)
            w1 = d.fc1.weight.double() @ a_w
            b1 = d.fc1.weight.double() @ a_b + d.fc1.bias.double()
            scale = d.bn.weight.double() / torch.sqrt(d.bn.running_var.double() + d.bn.eps)
            w1 = w1 * scale[:, None]
            b1 = (b1 - d.bn.running_mean.double()) * scale + d.bn.bias.double()
            w2 = d.fc2.weight.double()
            if cfg.score_mode == "negative":
                w2 = -w2  # patch score = -D folded into the last layer
        self.parts = nn.ModuleList()
        start = 0
        for i, dim in enumerate(self.aggregator.dims):
            conv = nn.Conv2d(dim, w1.shape[0], 1, bias=(i == 0))
            conv.weight.data = w1[:, start : start + dim, None, None].float().clone()
            if i == 0:
                conv.bias.data = b1.float().clone()
            self.parts.append(conv)
            start += dim
        self.act = nn.LeakyReLU(cfg.leaky_slope)
        self.out = nn.Conv2d(w1.shape[0], 1, 1, bias=False)
        self.out.weight.data = w2[:, :, None, None].float().clone()
        self.two_sided = cfg.score_mode == "two_sided"
        self.score_center = float(cfg.score_center)
        self.smoothing_sigma = float(cfg.smoothing_sigma)  # declared, with image_score, for the stages after export
        self.head = AnomalyMapHead((model.image_size, model.image_size), sigma=cfg.smoothing_sigma)
        self.requires_grad_(False)
        self.eval()

    def patch_scores(self, images: Tensor) -> Tensor:
        return self.patch_scores_from_layers(self.backbone(images))

    def patch_scores_from_layers(self, maps: list[Tensor]) -> Tensor:
        """Patch scores from the frozen backbone's layer maps: what validation in training runs on cached maps."""
        grid = maps[0].shape[-2:]
        hidden = None
        for i, (x, part) in enumerate(zip(maps, self.parts, strict=True)):
            h = part(self.aggregator.layer_embedding(i, x))
            if h.shape[-2:] != grid:
                h = F.interpolate(h, size=grid, mode="bilinear", align_corners=False)
            hidden = h if hidden is None else hidden + h
        logits = self.out(self.act(hidden))
        if self.two_sided:
            return (logits - self.score_center).abs()
        return logits

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        patch = self.patch_scores(images)
        image_score, anomaly_map = self.head(patch)
        return image_score, anomaly_map, patch
