"""The main job end to end on generated data: demo data -> train (random backbone) -> evaluate.

One function so that ``edge-ad demo`` and the test that holds the demo's quality to a floor run the same
thing. The backbone is random because no ImageNet weights can be downloaded on the build machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_ad.data.demo import DEFAULT_DEMO_CATEGORY, make_demo_dataset
from edge_ad.data.preprocess import Preprocessing
from edge_ad.io import atomic_write_json
from edge_ad.models.simplenet import SimpleNetConfig
from edge_ad.training.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
from edge_ad.training.trainer import TrainConfig

DEMO_EPOCHS = 30


def run_demo(
    root: str | Path, category: str | None = None, *, epochs: int = DEMO_EPOCHS, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """Generate the category, train on its good images, evaluate on its test split; returns the eval report."""
    from edge_ad.evaluate import evaluate_model

    root = Path(root)
    category = category or DEFAULT_DEMO_CATEGORY
    data = root / "data"
    make_demo_dataset(data, [category], seed=seed)
    bundle = root / "models" / category
    train_bundle(
        data,
        bundle,
        category=category,
        backbone=BackboneSpec(random=True),
        preprocessing=Preprocessing(),
        model_cfg=random_backbone_recipe(SimpleNetConfig()),
        train_cfg=TrainConfig(epochs=epochs, seed=seed),
        device=device,
        resume=(bundle / ".training").exists(),
    )
    report = evaluate_model(bundle, data, category, backend="torch", device=device)
    atomic_write_json(bundle / "eval.json", report)
    return report
