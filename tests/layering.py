"""One check for the layering rule: code run in a fresh interpreter never loads the named modules."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable


def assert_runs_without(code: str, forbidden: Iterable[str]) -> None:
    """Run ``code`` in a new Python process; fail if it errors or loaded any ``forbidden`` module (or submodule)."""
    names = tuple(forbidden)
    check = (
        f"\nimport sys as _sys\n_names = {names!r}\n"
        "_bad = sorted({n for n in _names for m in _sys.modules if m == n or m.startswith(n + '.')})\n"
        "assert not _bad, f'imported: {_bad}'\n"
    )
    env = {**os.environ, "EDGE_AD_QUIET": "1"}
    result = subprocess.run([sys.executable, "-c", code + check], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
