"""Progress for long work (feature extraction, training, evaluation): a rich bar on a terminal, plain lines elsewhere.

rich redraws its bar in place, so with output going to a file or a pipe (a service log, CI) nothing would appear
until the work is done. There, :func:`progress_bar` prints one plain, flushed line at the first step, then at
most one every ``EDGE_AD_PROGRESS_INTERVAL`` seconds (default 10), and one at the end. ``EDGE_AD_QUIET``
silences both.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

DEFAULT_INTERVAL_S = 10.0
INTERVAL_ENV = "EDGE_AD_PROGRESS_INTERVAL"


def _quiet() -> bool:
    return os.environ.get("EDGE_AD_QUIET", "") not in ("", "0")


def progress_interval() -> float:
    """Seconds between plain progress lines, from ``EDGE_AD_PROGRESS_INTERVAL`` (a bad value falls back to 10)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


# Log lines carry the time, never the source location (``run_start.py:41`` means nothing to a user).
console = Console(stderr=True, quiet=_quiet(), log_path=False)
ETA_WINDOW = 5  # the ETA is the mean of the last few steps' durations, the first step (warm-up, caching) left out


def _format_value(value: float | str) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_duration(seconds: float) -> str:
    """``45s``, ``1m02s``, ``2h05m``: short enough for a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Bar(Protocol):
    """What callers of :func:`progress_bar` use."""

    def advance(self, n: int = 1) -> None: ...

    def set_postfix(self, **values: float | str) -> None: ...


class SilentBar:
    """EDGE_AD_QUIET: nothing is shown."""

    def advance(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: float | str) -> None:
        pass


class RichBar:
    """One task of a rich progress display (terminals)."""

    def __init__(self, progress: Progress, task: Any):
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_postfix(self, **values: float | str) -> None:
        text = "  ".join(f"{k}={_format_value(v)}" for k, v in values.items())
        self._progress.update(self._task, postfix=text)


class PlainBar:
    """Plain progress lines for logs: the first step, then at most one per ``interval`` seconds, and the end.

    ``train: 5/30 epochs  loss=0.4100 p_true=0.9000  elapsed 1m02s  eta 4m10s``
    """

    def __init__(
        self,
        total: int,
        description: str,
        stream: TextIO,
        *,
        unit: str = "",
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.description = description
        self.unit = unit
        self.interval = interval
        self._stream = stream
        self._clock = clock
        self._start = clock()
        self._done = 0
        self._postfix = ""
        self._last_print: float | None = None
        self._printed_done = -1
        self._steps: collections.deque[tuple[float, int]] = collections.deque(maxlen=ETA_WINDOW + 1)

    def set_postfix(self, **values: float | str) -> None:
        self._postfix = " ".join(f"{k}={_format_value(v)}" for k, v in values.items())

    def advance(self, n: int = 1) -> None:
        self._done += n
        now = self._clock()
        self._steps.append((now, self._done))
        due = self._last_print is None or now - self._last_print >= self.interval
        if due or self._done >= self.total:
            self._emit(now)

    def finish(self) -> None:
        """The last line, unless the last step already printed it."""
        if self._done != self._printed_done:
            self._emit(self._clock())

    def line(self, now: float) -> str:
        elapsed = now - self._start
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.description}: {self._done}/{self.total}{unit}"]
        if self._postfix:
            parts.append(self._postfix)
        parts.append(f"elapsed {format_duration(elapsed)}")
        eta = self.eta()
        if eta is not None and self._done < self.total:
            parts.append(f"eta {format_duration(eta)}")
        return "  ".join(parts)

    def eta(self) -> float | None:
        """Seconds left at the pace of the last :data:`ETA_WINDOW` steps after the first one; None until two steps
        are done (the first step carries one-off work such as feature caching and would inflate the estimate)."""
        if len(self._steps) < 2:
            return None
        (t0, done0), (t1, done1) = self._steps[0], self._steps[-1]
        if done1 <= done0:
            return None
        return (t1 - t0) / (done1 - done0) * (self.total - self._done)

    def _emit(self, now: float) -> None:
        self._stream.write(self.line(now) + "\n")
        self._stream.flush()
        self._last_print = now
        self._printed_done = self._done


@contextlib.contextmanager
def progress_bar(
    total: int,
    description: str,
    *,
    unit: str = "",
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Bar]:
    """Progress on stderr: a rich bar on a terminal, plain periodic lines otherwise; silent with EDGE_AD_QUIET.

    ``stream`` (plain lines to it, whatever it is) and ``clock`` are for tests and callers with their own log.
    """
    if _quiet():
        yield SilentBar()
        return
    if stream is None and console.is_terminal:
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
            yield RichBar(progress, task)
        return
    bar = PlainBar(
        total, description, stream or console.file, unit=unit, interval=progress_interval(), clock=clock
    )
    yield bar
    bar.finish()  # not reached when the work raised: no "done" line for work that failed
