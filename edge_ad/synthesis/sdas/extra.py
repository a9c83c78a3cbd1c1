"""The one line a user sees when SDAS's libraries are missing: which extra, and the pip line that installs it (both
from :data:`edge_ad.extras.EXTRAS`, the table ``edge-ad doctor`` reads too)."""

from __future__ import annotations

from edge_ad.extras import MissingExtra, pip_line, require

__all__ = ["SDAS_INSTALL", "SdasUnavailable", "require_diffusers"]

SDAS_INSTALL = pip_line("sdas")


class SdasUnavailable(ValueError):
    """torch or diffusers is not installed; the message names the extra and the pip line."""


def require_diffusers() -> None:
    """Raise :class:`SdasUnavailable` unless torch and diffusers can be imported (checked without importing them)."""
    try:
        require("sdas", "SDAS (edge-ad sdas)")
    except MissingExtra as exc:
        raise SdasUnavailable(str(exc)) from None
