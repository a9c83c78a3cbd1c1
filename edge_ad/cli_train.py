"""``edge-ad train``'s option plumbing: the command's options -> one family's train config -> its trainer.

Why a module of its own: cli.py holds every command's options and would pass 500 lines with this in it. The typer
command stays in cli.py; bad values end as :class:`UserError` or ``ValueError`` (one line through ``friendly``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.cli_output import UserError, err

__all__ = ["run_train"]


def run_train(
    data: Path,
    out_dir: Path,
    *,
    model: str,
    category: str | None,
    image_size: int,
    resize: int,
    no_crop: bool,
    device: str,
    resume: bool,
    keep_checkpoint: bool,
    common: dict[str, Any],
    family_options: dict[str, dict[str, Any]],
) -> None:
    """Train ``model`` and write its bundle. ``common``: train-config fields every family has (None: the family's
    default); ``family_options``: family -> the options only that family takes (None or False: not given). An
    option of another family is refused in one line rather than ignored."""
    from edge_ad.data.preprocess import Preprocessing

    family = _FAMILIES.get(model)
    if family is None:
        raise UserError(f"unknown --model {model!r}; choose one of {', '.join(_FAMILIES)}")
    for other, options in family_options.items():
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None and v is not False]
        if other != model and given:
            why = f"; --model {model} {family.note}" if family.note else ""
            raise UserError(f"{', '.join(given)}: {_FAMILIES[other].title} options (--model {other}){why}")
    preprocessing = Preprocessing(image_size=image_size, resize=None if no_crop else resize)
    run = {"category": category, "device": device, "resume": resume, "keep_checkpoint": keep_checkpoint}
    family.train(data, out_dir, preprocessing, common, family_options.get(model, {}), run)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _train_simplenet(
    data: Path,
    out_dir: Path,
    preprocessing: Any,
    common: dict[str, Any],
    options: dict[str, Any],
    run: dict[str, Any],
) -> None:
    from edge_ad.models.backbones import DEFAULT_BACKBONE
    from edge_ad.models.simplenet import SimpleNetConfig
    from edge_ad.training.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
    from edge_ad.training.trainer import TrainConfig

    weights, random_backbone = options.get("backbone_weights"), bool(options.get("random_backbone"))
    if weights is not None and random_backbone:
        raise UserError("--backbone-weights and --random-backbone exclude each other")
    layers = tuple(x.strip() for x in (options.get("layers") or "").split(",") if x.strip())
    model_cfg = SimpleNetConfig(backbone=options.get("backbone") or DEFAULT_BACKBONE, layers=layers)
    if random_backbone:
        random_backbone_recipe(model_cfg)
        err.print("[yellow]random backbone:[/] weights are not pretrained; the random-backbone recipe is used (README)")
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


def _train_nsa(
    data: Path,
    out_dir: Path,
    preprocessing: Any,
    common: dict[str, Any],
    options: dict[str, Any],
    run: dict[str, Any],
) -> None:
    """``edge-ad train --model nsa``: the preset's recipe with the options the user gave on top."""
    from edge_ad.training.nsa_trainer import PRESETS, train_nsa_bundle

    name = options.get("preset") or "paper"
    if name not in PRESETS:
        raise UserError(f"unknown --preset {name!r}; NSA presets: {', '.join(PRESETS)}")
    train_cfg, model_cfg = PRESETS[name]
    given = _given({**common, "label": options.get("label"), "blend": options.get("blend")})
    train_cfg = dataclasses.replace(train_cfg, **given)  # re-runs the config's validation
    train_nsa_bundle(data, out_dir, preprocessing=preprocessing, model_cfg=model_cfg, train_cfg=train_cfg, **run)


@dataclass(frozen=True)
class _Family:
    """One ``--model`` choice: its trainer, its name in messages, and why other families' options do not apply."""

    title: str
    train: Callable[[Path, Path, Any, dict[str, Any], dict[str, Any], dict[str, Any]], None]
    note: str = ""


_FAMILIES: dict[str, _Family] = {
    "simplenet": _Family("SimpleNet", _train_simplenet),
    "nsa": _Family("NSA", _train_nsa, "trains from scratch"),
}
