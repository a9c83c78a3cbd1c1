"""Progress output: plain, periodic, flushed lines when not on a terminal; silent with EDGE_AD_QUIET."""

from __future__ import annotations

import io

import pytest

from edge_ad import progress
from edge_ad.progress import format_duration, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlushCountingStream(io.StringIO):
    """A non-tty stream that counts flushes (a log file or pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def isatty(self) -> bool:
        return False


@pytest.fixture
def loud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AD_QUIET", raising=False)
    monkeypatch.setenv("EDGE_AD_PROGRESS_INTERVAL", "10")


def run_steps(stream: io.StringIO, clock: FakeClock, seconds_per_step: list[float], total: int) -> list[str]:
    with progress_bar(total, "train", unit="epochs", stream=stream, clock=clock) as bar:
        for i, dt in enumerate(seconds_per_step):
            clock.now += dt
            bar.set_postfix(loss=0.5 - 0.01 * i, p_true=0.9)
            bar.advance()
    return stream.getvalue().splitlines()


def test_plain_lines_are_the_first_one_per_interval_and_the_last(loud: None) -> None:
    stream, clock = FlushCountingStream(), FakeClock()
    lines = run_steps(stream, clock, [4.0] * 30, total=30)  # a step every 4 s, 120 s in all
    # step 1 (t=4), then the first step at least 10 s after the previous line: t=16, 28, ..., 112, and the end
    expected_times = [4] + list(range(16, 120, 12)) + [120]
    assert len(lines) == len(expected_times)
    assert stream.flushes >= len(lines)  # every line reaches the log at once
    assert lines[0] == "train: 1/30 epochs  loss=0.5000 p_true=0.9000  elapsed 4s"  # no ETA from one step
    assert lines[1] == "train: 4/30 epochs  loss=0.4700 p_true=0.9000  elapsed 16s  eta 1m44s"
    assert lines[-1] == "train: 30/30 epochs  loss=0.2100 p_true=0.9000  elapsed 2m00s"
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert done == [t // 4 for t in expected_times]


def test_the_last_line_is_printed_when_work_ends_early_and_not_after_a_failure(loud: None) -> None:
    stream, clock = FlushCountingStream(), FakeClock()
    lines = run_steps(stream, clock, [1.0, 1.0, 1.0], total=10)  # stopped at 3 of 10
    assert [line.split("  ")[0] for line in lines] == ["train: 1/10 epochs", "train: 3/10 epochs"]

    failed = FlushCountingStream()
    with pytest.raises(RuntimeError), progress_bar(5, "features", stream=failed, clock=clock) as bar:
        clock.now += 1
        bar.advance()
        clock.now += 1
        bar.advance()
        raise RuntimeError("boom")
    assert failed.getvalue().splitlines() == ["features: 1/5  elapsed 1s"]


def test_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, loud: None) -> None:
    monkeypatch.setenv("EDGE_AD_PROGRESS_INTERVAL", "0")
    assert len(run_steps(FlushCountingStream(), FakeClock(), [1.0] * 5, total=5)) == 5
    monkeypatch.setenv("EDGE_AD_PROGRESS_INTERVAL", "100")
    assert len(run_steps(FlushCountingStream(), FakeClock(), [1.0] * 5, total=5)) == 2
    monkeypatch.setenv("EDGE_AD_PROGRESS_INTERVAL", "soon")
    assert progress.progress_interval() == progress.DEFAULT_INTERVAL_S


def test_non_terminal_stderr_gets_plain_lines(loud: None, capsys: pytest.CaptureFixture[str]) -> None:
    """The default destination (stderr, here captured: not a tty) gets plain lines, not a rich bar."""
    assert not progress.console.is_terminal
    with progress_bar(2, "evaluate") as bar:
        bar.advance()
        bar.advance()
    err = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in err] == ["evaluate: 1/2", "evaluate: 2/2"]


def test_a_terminal_keeps_the_rich_bar(monkeypatch: pytest.MonkeyPatch, loud: None) -> None:
    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=True, width=100))
    with progress_bar(4, "train") as bar:
        bar.advance(4)
    text = screen.getvalue()
    assert "\u2501" in text and "4/4" in text  # the bar's line characters, not a plain line
    assert "train: 4/4" not in text


def test_quiet_silences_everything(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EDGE_AD_QUIET", "1")
    stream = FlushCountingStream()
    with progress_bar(3, "train", stream=stream) as bar:
        bar.set_postfix(loss=1.0)
        bar.advance(3)
    assert stream.getvalue() == "" and capsys.readouterr().err == ""


def test_durations_read_well() -> None:
    durations = [format_duration(s) for s in (0.4, 59.6, 62, 3599, 3600 + 125)]
    assert durations == ["0s", "1m00s", "1m02s", "59m59s", "1h02m"]


def test_eta_is_not_inflated_by_a_slow_first_epoch(loud: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first epoch also caches features (60 s); the rest take 10 s each: the ETA follows the recent pace."""
    monkeypatch.setenv("EDGE_AD_PROGRESS_INTERVAL", "0")
    lines = run_steps(FlushCountingStream(), FakeClock(), [60.0] + [10.0] * 9, total=30)
    assert "eta" not in lines[0]
    assert lines[2].endswith("elapsed 1m20s  eta 4m30s")  # 27 epochs left at 10 s, not 27 x 26.7 s = 12m00s
    assert lines[-1].endswith("elapsed 2m30s  eta 3m20s")


def test_log_lines_carry_no_source_location() -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, width=120, log_path=progress.console._log_render.show_path)  # noqa: SLF001
    console.log("bundle written")
    assert ".py:" not in screen.getvalue() and "bundle written" in screen.getvalue()
