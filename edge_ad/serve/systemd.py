"""A systemd unit that runs one ``edge-ad serve`` command line, so the service restarts after a crash or a reboot.

Filled from ``edge-ad.service.in`` beside this file: a dedicated user, the current folder as WorkingDirectory (so
relative paths in the command keep their meaning), the token from an EnvironmentFile (a ``--token`` on the command line
is taken out: a unit file is world-readable), logs to journald, ``Restart=on-failure``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["TEMPLATE", "quote_exec_arg", "systemd_unit"]

TEMPLATE = Path(__file__).with_name("edge-ad.service.in")
_PLAIN = re.compile(r"[A-Za-z0-9_@%$+=:,./-]+")
_SECRET_OPTIONS = ("--token",)


def quote_exec_arg(arg: str) -> str:
    """One argument as systemd's ExecStart reads it: ``%`` and ``$`` are doubled (specifiers, variables), and
    anything but plain characters goes in double quotes with ``\\`` and ``"`` escaped."""
    if "\n" in arg or "\r" in arg or "\0" in arg:
        raise ValueError(f"a systemd unit cannot carry a newline or NUL in an argument: {arg!r}")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _without_secrets(argv: list[str]) -> tuple[list[str], list[str]]:
    """The arguments minus ``--token VALUE`` / ``--token=VALUE`` and ``--print-systemd``, plus what was removed."""
    kept: list[str] = []
    removed: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--print-systemd":
            continue
        if arg in _SECRET_OPTIONS:
            removed.append(arg)
            skip = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in _SECRET_OPTIONS)):
            removed.append(arg.split("=", 1)[0])
            continue
        kept.append(arg)
    return kept, removed


def _executable() -> list[str]:
    """This environment's own ``edge-ad`` script (not a shim on PATH that needs a login shell), else ``python -m``."""
    beside = Path(sys.executable).parent / "edge-ad"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("edge-ad")
    if found:
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "edge_ad.cli.main"]


def systemd_unit(
    argv: list[str],
    *,
    user: str = "edge-ad",
    working_directory: str | os.PathLike[str] | None = None,
    environment_file: str = "/etc/edge-ad/edge-ad.env",
    executable: list[str] | None = None,
) -> str:
    """The unit text for ``edge-ad <argv>`` (``argv`` as after the program name, e.g. ``["serve", "m.onnx", ...]``)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise ValueError(f"not a valid system user name: {user!r}")
    args, removed = _without_secrets(list(argv))
    if not args or args[0] != "serve":
        args = ["serve", *args]
    workdir = Path(working_directory or os.getcwd()).absolute()
    if "\n" in str(workdir):
        raise ValueError(f"a systemd unit cannot carry a newline in WorkingDirectory: {workdir!r}")
    command = [*(executable or _executable()), *args]
    notes = ""
    if removed:
        notes = (
            f"# {', '.join(removed)} was taken out of ExecStart: put EDGE_AD_TOKEN=<token> in {environment_file}.\n"
        )
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in {
        "@EXECSTART@": " ".join(quote_exec_arg(a) for a in command),
        "@WORKDIR@": str(workdir).replace("%", "%%"),  # a path setting: specifiers expand, quotes do not
        "@ENVFILE@": environment_file,
        "@USER@": user,
        "@NOTES@\n": notes,
    }.items():
        text = text.replace(key, value)
    return text
