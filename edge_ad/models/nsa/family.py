"""NSA's :class:`~edge_ad.models.family.Family` record: how it is built, trained and demonstrated.

Torch-free to import; each callable imports the model and trainer when it runs. NSA has no published speed to
compare with, so ``edge-ad bench`` shows no paper ratio for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edge_ad.models.family import DEMO_HOLDOUT, AnomalyModel, DemoRecipe, Family, TrainOption
from edge_ad.models.nsa.schedule import CPU_DEMO_EPOCHS
from edge_ad.postprocess.image_score import HeadDeclaration

__all__ = ["CPU_DEMO_EPOCHS", "FAMILY"]

def build(info: Any) -> AnomalyModel:
    """The model a bundle's config describes (weights not loaded)."""
    from edge_ad.models.nsa.model import NsaConfig, NsaModel

    return NsaModel(NsaConfig.from_dict(info.model), image_size=info.image_size)


def train(
    data: Path, out_dir: Path, preprocessing: Any, common: dict[str, Any], options: dict[str, Any], run: dict[str, Any]
) -> None:
    """``edge-ad train --model nsa``: the preset's recipe with the options the user gave on top."""
    from edge_ad.models.nsa.trainer import PRESETS, train_nsa_bundle

    name = options.get("preset") or "paper"
    if name not in PRESETS:
        raise ValueError(f"unknown --preset {name!r}; NSA presets: {', '.join(PRESETS)}")
    train_cfg, model_cfg = PRESETS[name]
    given = {k: v for k, v in {**common, "label": options.get("label"), "blend": options.get("blend")}.items()
             if v is not None}
    train_cfg = dataclasses.replace(train_cfg, **given)  # re-runs the config's validation
    train_nsa_bundle(data, out_dir, preprocessing=preprocessing, model_cfg=model_cfg, train_cfg=train_cfg, **run)


def demo_train(
    data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
) -> Path:
    """``edge-ad demo --model nsa``: the CPU recipe ``NSA_CPU_DEMO`` (``--preset cpu-demo``)."""
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.models.nsa.trainer import NSA_CPU_DEMO, PRESETS, train_nsa_bundle

    _, model_cfg = PRESETS["cpu-demo"]
    return train_nsa_bundle(
        data,
        bundle,
        category=category,
        preprocessing=Preprocessing(),
        model_cfg=model_cfg,
        train_cfg=dataclasses.replace(NSA_CPU_DEMO, epochs=epochs, seed=seed, holdout_fraction=DEMO_HOLDOUT),
        device=device,
        resume=resume,
        **extra,
    )


FAMILY = Family(
    name="nsa",
    title="NSA",
    build=build,
    train=train,
    head=HeadDeclaration("mean", 0.0),
    options=(
        TrainOption("preset", str, "NSA recipe: paper (default) or cpu-demo (see README)."),
        TrainOption("label", str, "NSA labels: binary, continuous or logistic (paper's best, default)."),
        TrainOption(
            "blend",
            str,
            "NSA anomalies' Poisson blending: auto (reference: normal for objects, mixed for textures), "
            "normal (also smooth patches on busy textures), mixed.",
        ),
    ),
    option_note="trains from scratch",
    demo=DemoRecipe(
        CPU_DEMO_EPOCHS,
        demo_train,
        "nsa-{category}",
        "NSA trained from scratch on synthetic anomalies, CPU recipe NSA_CPU_DEMO (--preset cpu-demo)",
    ),
)
