"""What `edge-ad bench` needs to know about its target before timing it, read without torch: the metadata of an
exported artifact (an ONNX's own metadata, an engine's sidecar), the preprocessing it expects, and the paper figure
its family's rows are compared with (the "vs 77 FPS" column). A family without a published figure gets no ratio
rather than one against another family's paper.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_ad import artifacts
from edge_ad.data.preprocess import Preprocessing
from edge_ad.models.families import FAMILIES

__all__ = ["PAPER_FPS", "LEGACY_FAMILY", "artifact_metadata", "paper_fps_for", "target_preprocessing"]

LEGACY_FAMILY = "simplenet"  # an export from before the family key was recorded is SimpleNet's
PAPER_FPS = FAMILIES[LEGACY_FAMILY].paper_fps


def artifact_metadata(target: Path) -> dict[str, str]:
    """edge-ad's metadata of an exported ONNX or engine file; empty when there is none to read here (a folder, a
    remote Triton model, an unreadable file: its own row reports that)."""
    if target.suffix not in (".onnx", ".engine") or not target.is_file():
        return {}
    try:
        return {str(k): str(v) for k, v in artifacts.artifact_metadata(target).items()}
    except Exception:  # noqa: BLE001 - reported by the runtime's own row
        return {}


def target_preprocessing(info: Any, metadata: dict[str, str]) -> Preprocessing:
    """The bundle's preprocessing, else the artifact's recorded one, else the default (a remote model)."""
    if info is not None:
        return info.preprocessing
    if "preprocessing" in metadata:
        try:
            return Preprocessing.from_dict(json.loads(metadata["preprocessing"]))
        except (TypeError, ValueError):
            pass
    return Preprocessing()


def paper_fps_for(info: Any, metadata: dict[str, str]) -> float | None:
    """The paper figure for the target's family; a target whose family cannot be read here keeps SimpleNet's."""
    family = info.family if info is not None else metadata.get("family")
    found = FAMILIES.get(LEGACY_FAMILY if family is None else family)
    return found.paper_fps if found is not None else None
