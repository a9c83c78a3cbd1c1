"""Progress bars for long work (feature extraction, training, evaluation), quiet when asked."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def _quiet() -> bool:
    return os.environ.get("EDGE_AD_QUIET", "") not in ("", "0")


console = Console(stderr=True, quiet=_quiet())


class Bar:
    """One task of a rich progress display; ``advance`` and ``set_postfix`` are all callers need."""

    def __init__(self, progress: Progress | None, task: Any):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_postfix(self, **values: float | str) -> None:
        if self._progress is not None:
            text = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            self._progress.update(self._task, postfix=text)


@contextlib.contextmanager
def progress_bar(total: int, description: str) -> Iterator[Bar]:
    """A progress bar on stderr; silent when EDGE_AD_QUIET is set (tests, services)."""
    if _quiet():
        yield Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, postfix="")
        yield Bar(progress, task)
