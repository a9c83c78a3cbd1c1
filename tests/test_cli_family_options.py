"""``edge-ad train``'s family options come from the family table: a family's own flag needs no CLI edit."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edge_ad.cli.train import with_family_options
from edge_ad.models import families
from edge_ad.models.family import TrainOption


def _app_with(monkeypatch: pytest.MonkeyPatch, *options: TrainOption) -> tuple[typer.Typer, list[dict[str, Any]]]:
    base = families.FAMILIES["nsa"]
    monkeypatch.setitem(families.FAMILIES, "third", dataclasses.replace(base, name="third", options=options))
    seen: list[dict[str, Any]] = []

    def train(data: str = typer.Argument(...), **family_values: Any) -> None:
        seen.append({"data": data, **family_values})

    app = typer.Typer()
    app.command()(with_family_options(train))
    app.command("noop")(lambda: None)  # two commands: typer keeps "train" as a subcommand
    return app, seen


def test_a_family_flag_appears_in_train_and_reaches_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    app, seen = _app_with(
        monkeypatch, TrainOption("strength", float, "anomaly strength"), TrainOption("fast", bool, "a flag")
    )
    result = CliRunner().invoke(app, ["train", "D", "--strength", "0.2", "--fast", "--preset", "cpu-demo"])
    assert result.exit_code == 0, result.output
    (values,) = seen
    assert values["strength"] == 0.2 and values["fast"] is True and values["preset"] == "cpu-demo"
    assert values["noise_std"] is None and values["random_backbone"] is False  # SimpleNet's, not given
    result = CliRunner().invoke(app, ["train", "--help"])
    assert "--strength" in result.output and "anomaly strength" in result.output


def test_one_option_declared_with_two_types_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError, match="--noise-std is declared"):
        _app_with(monkeypatch, TrainOption("noise_std", str, "not a float"))
