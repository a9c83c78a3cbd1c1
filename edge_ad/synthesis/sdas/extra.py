"""The one line a user sees when SDAS's libraries are missing: which extra, and the pip line that installs it."""

from __future__ import annotations

import importlib.util

__all__ = ["SDAS_INSTALL", "SdasUnavailable", "require_diffusers"]

SDAS_INSTALL = "pip install 'edge-ad[sdas]'"


class SdasUnavailable(ValueError):
    """torch or diffusers is not installed; the message names the extra and the pip line."""


def require_diffusers() -> None:
    """Raise :class:`SdasUnavailable` unless torch and diffusers can be imported (checked without importing them)."""
    missing = [name for name in ("torch", "diffusers") if importlib.util.find_spec(name) is None]
    if missing:
        raise SdasUnavailable(f"SDAS needs {' and '.join(missing)}, which the 'sdas' extra installs: {SDAS_INSTALL}")
