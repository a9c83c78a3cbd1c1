"""Plain ``--help`` for every ``edge-ad`` command: ``MODEL IMAGES...`` in the usage line, ``PATH``/``INTEGER``/``TEXT``
beside an option that takes a value, nothing beside a flag.

Why: typer's own help shows Python type names (``<bool>``, ``<list[Path]>``) and a usage line like
``{model} {images}...``, which read as a bug to someone who has never seen Python. The commands are declared as usual;
:class:`PlainHelpGroup` (the app's group class) rewrites how each parameter presents itself once, when the click
command tree is built, so nothing else changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from typer.core import TyperArgument, TyperGroup

__all__ = ["PlainHelpGroup", "plain_metavar"]

_NAMES: dict[Any, str] = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def plain_metavar(param: Any) -> str | None:
    """What an option's value is called in help (None for a flag)."""
    if getattr(param, "is_flag", False):
        return None
    descriptor = param.type_descriptor
    annotation = descriptor.annotation
    if annotation is bool:
        return None
    if descriptor.is_path:
        return "PATH"
    if descriptor.is_list:
        inner = get_args(annotation)
        return _NAMES.get(inner[0], "TEXT") if inner else "TEXT"
    return _NAMES.get(annotation, "TEXT")


def _plain_argument(param: Any) -> None:
    name = param.name.upper() + ("..." if param.nargs != 1 else "")
    param.metavar = name
    usage = name if param.required else f"[{name}]"
    param._usage_display_name = lambda: usage  # noqa: SLF001 - typer's hook for the usage line
    param.display_type_rich = lambda ctx=None: None


def _plain_option(param: Any) -> None:
    shown = plain_metavar(param)
    param.display_type_rich = lambda ctx=None: shown


class PlainHelpGroup(TyperGroup):
    """The ``edge-ad`` group: its commands' parameters show plain metavars instead of Python types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in [self, *self.commands.values()]:
            for param in getattr(command, "params", []):
                if isinstance(param, TyperArgument):
                    _plain_argument(param)
                elif hasattr(param, "type_descriptor"):
                    _plain_option(param)
            _plain_help_option(command)


def _plain_help_option(command: Any) -> None:
    """``--help`` is made afresh for each context; present it as the flag it is."""
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None and hasattr(option, "type_descriptor"):
            _plain_option(option)
        return option

    command.get_help_option = get_help_option
