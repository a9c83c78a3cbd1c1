"""What every ``edge-ad`` command shares: the two consoles, the one-line error rule, the metrics table.

Bad input a user can fix ends in one red line and exit code 2, never a traceback (:func:`friendly`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Wide enough for the bench table when output goes to a file or a CI log (rich assumes 80 columns there).
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")


class UserError(Exception):
    """Bad input a user can fix; shown as one line."""


def friendly(func: F) -> F:
    """Turn the errors a user can cause into one red line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from edge_ad.bundle import BundleError, warnings_once
        from edge_ad.data.images import ImageError
        from edge_ad.data.layout import DatasetError
        from edge_ad.extras import MissingExtra, extra_for_module, missing_extra_message

        try:
            with warnings_once():
                return func(*args, **kwargs)
        except MissingExtra as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # an optional part this command needs: name its extra, not a traceback
            extra = extra_for_module(exc.name)
            if extra is None:
                raise
            message = missing_extra_message(extra, str(exc.name).split(".")[0])
            err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(2) from None
        except (
            UserError,
            ImageError,
            DatasetError,
            BundleError,
            FileExistsError,
            FileNotFoundError,
            ValueError,
        ) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")  # a path or an extra's [name] is not markup
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("subset")
    for col in METRIC_COLUMNS:
        table.add_column(col.replace("_", " "), justify="right")
    for name, row in metrics.items():
        table.add_row(name, *(f"{row[c]:.4f}" if c in row else "-" for c in METRIC_COLUMNS))
    return table
