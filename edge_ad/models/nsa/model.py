"""NSA (Schlueter et al. 2021, "Natural Synthetic Anomalies"): a ResNet-18 encoder-decoder trained from scratch.

One file for the family, plain torch (no torchvision). The network follows the reference code
(hmsch/natural-synthetic-anomalies, ``model/resnet.py``, ``resnet18_enc_dec``):

* encoder: ResNet-18 (7x7/2 stem, BatchNorm, ReLU, 3x3/2 max-pool, four stages of two basic blocks,
  64-128-256-512 channels, total stride 32);
* bottleneck ("nin"): 1x1 512->256, ReLU, 1x1 256->128, ReLU;
* decoder: three transposed basic blocks (3x3/2 transposed conv, 1x1/2 transposed conv on the shortcut),
  128->64->32->16 channels, then a bilinear 2x upsample (``align_corners=True``, as ``UpsamplingBilinear2d``)
  and a 7x7/2 transposed conv to one channel; no skip connections between encoder and decoder;
* output: a sigmoid, one anomaly probability per input pixel (trained with BCE on the NSA labels).

The image score is the reference's (``experiments/mvtec_tasks.test_real_anomalies``): the *mean* of the output map,
and its pixel scores are the raw map (no smoothing: ``smoothing_sigma = 0``). ``width`` scales every channel count
(64 = the reference) so tests can run tiny networks. Input sides must be multiples of 32.

:meth:`NsaModel.inference_graph` returns the module that evaluation, the torch runtime and the ONNX export run:
``images -> (image_score [N], anomaly_map [N,H,W], patch_scores [N,1,H,W])``, the same interface as SimpleNet's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ad.postprocess.torch_ops import AnomalyMapHead

STRIDE = 32  # the encoder's total stride; the decoder restores it exactly


@dataclass
class NsaConfig:
    """Architecture constants; defaults are the reference's ``resnet18_enc_dec(num_classes=1, pool=True)``."""

    width: int = 64  # stem / first-stage channels; the reference's ResNet-18 has 64
    encoder_blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    decoder_blocks: tuple[int, int, int] = (1, 1, 1)
    # Pixel scores are the sigmoid map itself (reference); > 0 smooths the anomaly map with edge-ad's Gaussian.
    smoothing_sigma: float = 0.0

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(int(b) for b in self.encoder_blocks)  # type: ignore[assignment]
        self.decoder_blocks = tuple(int(b) for b in self.decoder_blocks)  # type: ignore[assignment]
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 4 or self.width % 4:
            raise ValueError(f"width must be a positive multiple of 4 (reference 64), got {self.width!r}")
        if len(self.encoder_blocks) != 4 or len(self.decoder_blocks) != 3:
            raise ValueError("encoder_blocks needs 4 stage depths and decoder_blocks 3")
        if min(self.encoder_blocks + self.decoder_blocks) < 1:
            raise ValueError("every stage needs at least one block")
        if self.smoothing_sigma < 0:
            raise ValueError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_blocks"] = list(self.encoder_blocks)
        d["decoder_blocks"] = list(self.decoder_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NsaConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NSA config keys {sorted(unknown)} (bundle from a newer edge-ad?)")
        return cls(**d)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _tconv(cin: int, cout: int, kernel: int, stride: int) -> nn.ConvTranspose2d:
    """Transposed conv that multiplies the side by ``stride`` exactly (the reference's output_padding)."""
    pad = kernel // 2
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=pad, output_padding=stride - 1, bias=False
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class TransposeBlock(nn.Module):
    """The reference's transposed basic block: 3x3 transposed conv (upsamples) - BN - ReLU - conv3x3 - BN
    + shortcut (1x1 transposed conv + BN), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _tconv(cin, cout, 3, stride) if stride != 1 else _conv3x3(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            first = _tconv(cin, cout, 1, stride) if stride != 1 else nn.Conv2d(cin, cout, 1, bias=False)
            self.shortcut = nn.Sequential(first, nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


def _stage(block: type[nn.Module], cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
    return nn.Sequential(block(cin, cout, stride), *(block(cout, cout) for _ in range(depth - 1)))


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk to layer4 (stride 32), torchvision's layer names."""

    def __init__(self, width: int, blocks: tuple[int, int, int, int]):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _stage(BasicBlock, w, w, blocks[0], 1)
        self.layer2 = _stage(BasicBlock, w, 2 * w, blocks[1], 2)
        self.layer3 = _stage(BasicBlock, 2 * w, 4 * w, blocks[2], 2)
        self.layer4 = _stage(BasicBlock, 4 * w, 8 * w, blocks[3], 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Decoder(nn.Module):
    """Bottleneck 1x1 convs, three transposed blocks, bilinear 2x (align_corners), 7x7/2 transposed conv -> logits."""

    def __init__(self, width: int, blocks: tuple[int, int, int]):
        super().__init__()
        w = width
        self.nin = nn.Sequential(
            nn.Conv2d(8 * w, 4 * w, 1, bias=False), nn.ReLU(), nn.Conv2d(4 * w, 2 * w, 1, bias=False), nn.ReLU()
        )
        self.uplayer1 = _stage(TransposeBlock, 2 * w, w, blocks[0], 2)
        self.uplayer2 = _stage(TransposeBlock, w, w // 2, blocks[1], 2)
        self.uplayer3 = _stage(TransposeBlock, w // 2, w // 4, blocks[2], 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.uplayer3(self.uplayer2(self.uplayer1(self.nin(x))))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class NsaModel(nn.Module):
    """Encoder-decoder whose output is one anomaly logit per input pixel; everything is trained."""

    family = "nsa"
    # No authors' inference path to time as `edge-ad bench`'s in-run baseline (see SimpleNet.reference_baseline).
    reference_baseline: ClassVar[str | None] = None

    def __init__(self, config: NsaConfig | None = None, image_size: int = 224):
        super().__init__()
        self.config = config or NsaConfig()
        if image_size % STRIDE:
            raise ValueError(f"NSA needs an image size that is a multiple of {STRIDE}, got {image_size}")
        self.image_size = image_size
        cfg = self.config
        self.encoder = ResNet18Encoder(cfg.width, cfg.encoder_blocks)
        self.decoder = Decoder(cfg.width, cfg.decoder_blocks)
        self.out = _tconv(cfg.width // 4, 1, 7, 2)
        for m in self.modules():  # the reference's init: He (fan_out) for Conv2d, BN at (1, 0); torch's default else
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def grid_size(self) -> int:
        """Side of the patch-score map: the full input side (one score per pixel)."""
        return self.image_size

    def forward(self, images: Tensor) -> Tensor:
        """Logits [N, 1, H, W] (the training path; the loss applies the sigmoid)."""
        return self.out(self.decoder(self.encoder(images)))

    def inference_graph(self) -> NsaGraph:
        """The graph that evaluation, the torch runtime and the ONNX export run."""
        return NsaGraph(self)


class NsaHead(nn.Module):
    """``patch_scores [N,1,H,W] -> (image_score [N] = mean, anomaly_map [N,H,W])``, optionally Gaussian-smoothed."""

    def __init__(self, out_size: tuple[int, int], sigma: float = 0.0):
        super().__init__()
        self.smoother = AnomalyMapHead(out_size, sigma=sigma) if sigma > 0 else None

    def forward(self, patch_scores: Tensor) -> tuple[Tensor, Tensor]:
        if patch_scores.dim() == 3:
            patch_scores = patch_scores.unsqueeze(1)
        image_score = patch_scores.mean(dim=(1, 2, 3))
        maps = patch_scores if self.smoother is None else self.smoother.smooth(patch_scores)
        return image_score, maps.squeeze(1)


class NsaGraph(nn.Module):
    """images [N,3,H,W] (normalised) -> (image_score [N], anomaly_map [N,H,W], patch_scores [N,1,H,W]).

    Shares the model's modules (eval mode). The network parts are named as in SimpleNet's graph (``backbone``,
    ``parts``, ``out``, ``head``) so the torch runtime's fp16 split (network half, head float) applies unchanged.

    Declared for the stages after export (see :class:`~edge_ad.models.simplenet.model.SimpleNetGraph`): the image score
    is the map's mean (so the max-computing CUDA kernel cannot stand in for the head), the map's smoothing sigma
    (the config's), and the INT8 layout:
    encoder, decoder, the last 7x7 transposed conv to one channel, and a head (sigmoid, mean, optional
    smoothing) that every recipe keeps in float.
    """

    image_score: ClassVar[str] = "mean"
    int8_layout: ClassVar[dict[str, Any]] = {
        "parts": {
            "head": ["/head/*", "/Sigmoid"],  # sigmoid, mean and (sigma > 0) smoothing
            "output": ["/out/*"],  # the 7x7/2 transposed conv to one logit per pixel
            "decoder": ["/parts.0/*"],  # bottleneck 1x1 convs, three transposed blocks, bilinear 2x
            "encoder": ["/backbone/*"],  # ResNet-18 stem and four stages
        },
        "recipes": {
            "all": ["head"],
            "keep_output_fp": ["head", "output"],
            "encoder_only": ["head", "output", "decoder"],
        },
        "default": "keep_output_fp",
    }

    def __init__(self, model: NsaModel):
        super().__init__()
        if model.training:
            raise RuntimeError("put the model in eval mode before building its inference graph")
        self.backbone = model.encoder
        self.parts = nn.ModuleList([model.decoder])
        self.out = model.out
        self.smoothing_sigma = float(model.config.smoothing_sigma)  # declared, with image_score (see above)
        self.head = NsaHead((model.image_size, model.image_size), self.smoothing_sigma)
        self.eval()  # no requires_grad_(False): the modules are the model's own, which may train on

    def patch_scores(self, images: Tensor) -> Tensor:
        return torch.sigmoid(self.out(self.parts[0](self.backbone(images))))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        patch = self.patch_scores(images)
        image_score, anomaly_map = self.head(patch)
        return image_score, anomaly_map, patch
