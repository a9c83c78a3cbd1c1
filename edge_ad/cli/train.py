"""``edge-ad train``'s option plumbing: the command's options -> the family's ``train`` from the family table.

Why a module of its own: cli.py holds every command's options and would pass 500 lines with this in it. The typer
command stays in cli.py; bad values end as :class:`UserError` or ``ValueError`` (one line through ``friendly``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from edge_ad.cli.output import UserError
from edge_ad.models.families import FAMILIES
from edge_ad.models.family import TrainOption

__all__ = ["family_options", "run_train", "with_family_options"]


def with_family_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``edge-ad train`` every registered family's own options (:attr:`Family.options`) as typer options.

    ``command`` takes them as ``**family_values``; its signature (what typer reads) gains one keyword parameter per
    option, so a new family's flags need no edit here or in the command. An option two families declare must have
    one type; not given, it is None (False for a flag)."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    declared: dict[str, TrainOption] = {}
    for family in FAMILIES.values():
        for option in family.options:
            known = declared.setdefault(option.name, option)
            if known.type is not option.type:
                raise TypeError(f"--{option.name.replace('_', '-')} is declared {known.type} and {option.type}")
    for option in declared.values():
        default = typer.Option(False if option.type is bool else None, help=option.help)
        kind = inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(option.name, kind, default=default, annotation=option.type))
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return command


def family_options(given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Family -> the values of the options only that family takes (:attr:`Family.options`), from every option given."""
    return {name: {k: given.get(k) for k in fam.option_names} for name, fam in FAMILIES.items()}


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

    for name in ("epochs", "batch_size"):  # refused before anything is read or written
        value = common.get(name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    family = FAMILIES.get(model)
    if family is None:
        raise UserError(f"unknown --model {model!r}; choose one of {', '.join(FAMILIES)}")
    for other, options in family_options.items():  # options another family takes and this one does not
        given = [k for k, v in options.items() if v is not None and v is not False and k not in family.option_names]
        if other != model and given:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
            why = f"; --model {model} {family.option_note}" if family.option_note else ""
            raise UserError(f"{flags}: {FAMILIES[other].title} options (--model {other}){why}")
    preprocessing = Preprocessing(image_size=image_size, resize=None if no_crop else resize)
    run = {"category": category, "device": device, "resume": resume, "keep_checkpoint": keep_checkpoint}
    family.train(data, out_dir, preprocessing, common, family_options.get(model, {}), run)
