"""SimpleNet's :class:`~edge_ad.models.family.Family` record: how it is built, trained, demonstrated and compared.

Torch-free to import; each callable imports the model and trainer when it runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edge_ad.models.family import (
    BACKBONE_OPTIONS,
    DEMO_HOLDOUT,
    AnomalyModel,
    DemoRecipe,
    DemoTrain,
    Family,
    TrainOption,
)
from edge_ad.postprocess.image_score import HeadDeclaration

__all__ = ["DEMO_EPOCHS", "FAMILY", "PAPER_FPS"]

DEMO_EPOCHS = 30  # SimpleNet's demo schedule
PAPER_FPS = 77.0  # SimpleNet paper, WideResNet50, RTX 3080 Ti


#: ``edge-ad train --model simplenet`` options (shared ones, such as ``--epochs``, are every family's).
TRAIN_OPTIONS = (
    *BACKBONE_OPTIONS,
    TrainOption(
        "random_init",
        str,
        "Random backbone draw: isometric (default; keeps image detail through depth) or torchvision."
    ),
    TrainOption(
        "noise_std",
        float,
        "Anomaly noise sigma (default: the backbone's: WRN50 0.015 as the paper, Lite 0.3; random 0.2)."
    ),
    TrainOption("score_mode", str, "negative (paper: -D) or two_sided (|D - c|)."),
    TrainOption("adapter_lr", float, "SimpleNet adapter learning rate (paper 1e-4)."),
    TrainOption("disc_lr", float, "SimpleNet discriminator learning rate (paper 2e-4)."),
)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def build(info: Any) -> AnomalyModel:
    """The model a bundle's config describes (weights not loaded)."""
    from edge_ad.models.simplenet.model import SimpleNet, SimpleNetConfig

    return SimpleNet(SimpleNetConfig.from_dict(info.model), image_size=info.image_size)


def train(
    data: Path, out_dir: Path, preprocessing: Any, common: dict[str, Any], options: dict[str, Any], run: dict[str, Any]
) -> None:
    """``edge-ad train --model simplenet``: pretrained EfficientNet-Lite0 unless told (``--backbone``, ``--layers``,
    ``--backbone-weights``, ``--random-backbone``); the paper's schedule unless told."""
    from edge_ad.models.backbones import DEFAULT_BACKBONE
    from edge_ad.models.simplenet.model import SimpleNetConfig
    from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
    from edge_ad.models.simplenet.trainer import TrainConfig
    from edge_ad.progress import console

    weights, random_backbone = options.get("backbone_weights"), bool(options.get("random_backbone"))
    if weights is not None and random_backbone:
        raise ValueError("--backbone-weights and --random-backbone exclude each other")
    layers = tuple(x.strip() for x in (options.get("layers") or "").split(",") if x.strip())
    model_cfg = SimpleNetConfig(backbone=options.get("backbone") or DEFAULT_BACKBONE, layers=layers)
    if random_backbone:
        random_backbone_recipe(model_cfg)
        console.print("[yellow]random backbone:[/] weights are not pretrained; the random-backbone recipe is used")
    overrides = _given({"noise_std": options.get("noise_std"), "score_mode": options.get("score_mode")})
    model_cfg = dataclasses.replace(model_cfg, **overrides)  # replace() re-runs the config's validation
    train_cfg = TrainConfig(
        **{"epochs": 160, "batch_size": 8, **_given(common)},
        **_given({"adapter_lr": options.get("adapter_lr"), "disc_lr": options.get("disc_lr")}),
    )
    draw = _given({"random_init": options.get("random_init")})
    train_bundle(
        data,
        out_dir,
        backbone=BackboneSpec(weights=weights, random=random_backbone, **draw),
        preprocessing=preprocessing,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        **run,
    )


def _demo(random_backbone: bool) -> DemoTrain:
    """A demo trainer: pretrained Lite0 (the package's weights), or the former random-WideResNet50 recipe."""

    def demo_train(
        data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
    ) -> Path:
        from edge_ad.data.preprocess import Preprocessing
        from edge_ad.models.backbones import DEFAULT_BACKBONE, PAPER_BACKBONE
        from edge_ad.models.simplenet.model import SimpleNetConfig
        from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
        from edge_ad.models.simplenet.trainer import TrainConfig

        if random_backbone:
            spec = BackboneSpec(random=True)
            model_cfg = random_backbone_recipe(SimpleNetConfig(backbone=PAPER_BACKBONE))
        else:
            spec, model_cfg = BackboneSpec(), SimpleNetConfig(backbone=DEFAULT_BACKBONE)  # the installed weights
        return train_bundle(
            data,
            bundle,
            category=category,
            backbone=spec,
            preprocessing=Preprocessing(),
            model_cfg=model_cfg,
            train_cfg=TrainConfig(epochs=epochs, seed=seed, holdout_fraction=DEMO_HOLDOUT),
            device=device,
            resume=resume,
            **extra,
        )

    return demo_train


FAMILY = Family(
    name="simplenet",
    title="SimpleNet",
    build=build,
    train=train,
    head=HeadDeclaration("max", 4.0),
    options=TRAIN_OPTIONS,
    demo=DemoRecipe(
        DEMO_EPOCHS,
        _demo(random_backbone=False),
        "{category}",
        "SimpleNet on EfficientNet-Lite0 with ImageNet weights (installed by the [train] extra)",
    ),
    more_demos=(
        (
            "simplenet-random",
            DemoRecipe(
                DEMO_EPOCHS,
                _demo(random_backbone=True),
                "random-{category}",
                "SimpleNet on a random-initialised WideResNet50 (the former demo; no pretrained weights)",
            ),
        ),
    ),
    paper_fps=PAPER_FPS,
)
