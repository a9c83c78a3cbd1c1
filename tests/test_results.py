"""edge_ad.results: run folders for predictions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from edge_ad.results import new_run_dir


def test_run_folders_never_collide(tmp_path: Path) -> None:
    now = datetime(2026, 12, 1, 9, 5, 7)
    runs = [new_run_dir(tmp_path / "out", now) for _ in range(3)]
    assert [r.name for r in runs] == ["run-20261201-090507", "run-20261201-090507-2", "run-20261201-090507-3"]
    assert all(r.is_dir() and not any(r.iterdir()) for r in runs)
    later = new_run_dir(tmp_path / "out", datetime(2026, 12, 1, 9, 5, 8))
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[-1] == later.name
