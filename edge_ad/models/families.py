"""The one table of model families: name -> :class:`~edge_ad.models.family.Family`. Torch-free to import.

The CLI (``train``, ``demo``), ``edge-ad bench`` and the bundle loader read this table. Adding a family is one
folder under ``edge_ad/models/`` and one line here (or one :func:`register` call for a family kept elsewhere).
"""

from __future__ import annotations

from edge_ad.models.family import Family
from edge_ad.models.nsa.family import FAMILY as NSA
from edge_ad.models.realnet.family import FAMILY as REALNET
from edge_ad.models.simplenet.family import FAMILY as SIMPLENET

__all__ = ["FAMILIES", "family", "register"]

FAMILIES: dict[str, Family] = {f.name: f for f in (SIMPLENET, NSA, REALNET)}


def register(new: Family) -> Family:
    """Add a family to the table (a name already taken is refused); returns it."""
    if new.name in FAMILIES and FAMILIES[new.name] is not new:
        raise ValueError(f"model family {new.name!r} is registered already")
    FAMILIES[new.name] = new
    return new


def family(name: str) -> Family:
    """The family registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    found = FAMILIES.get(name)
    if found is None:
        raise ValueError(f"unknown model family {name!r}; this edge-ad knows {', '.join(sorted(FAMILIES))}")
    return found
