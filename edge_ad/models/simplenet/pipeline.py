"""``edge-ad train`` as a library call: data -> backbone -> feature cache -> training (with synthetic validation)
-> threshold -> bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.backbones import get_backbone
from edge_ad.models.backbones.choice import BackboneSpec, check_backbone_choice, setup_backbone
from edge_ad.models.backbones.weights import state_dict_sha256
from edge_ad.models.backbones.wide_resnet import (
    recalibrate_batchnorm,
)
from edge_ad.models.simplenet.feature_cache import extract_features
from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig
from edge_ad.models.simplenet.trainer import TrainConfig, Trainer
from edge_ad.progress import console
from edge_ad.training.checkpoints import run_fingerprint
from edge_ad.training.epoch_validation import OnEpoch
from edge_ad.training.finish import finish_bundle
from edge_ad.training.run_start import data_fingerprint, start_run

RANDOM_BACKBONE_NOISE_STD = 0.2


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
    run = start_run(
        data_dir, out_dir, category=category, preprocessing=preprocessing, train_cfg=train_cfg, device=device,
        resume=resume, keep_checkpoint=keep_checkpoint,
    )  # fmt: skip
    split = run.split
    paths, train_idx = split.paths, split.train_idx
    images = [preprocessing(read_image(p)) for p in paths]
    validation = run.validate(on_epoch)

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
    features = extract_features(model, [images[i] for i in train_idx], device=device, description="features")
    trainer = Trainer(
        model,
        features,
        train_cfg,
        device=device,
        checkpoint_dir=run.checkpoint_dir,
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
        run,
        image=images.__getitem__,
        history=history,
        backbone=backbone_info,
        score_stats={"train_logits": train_logits},
    )
