"""Which nodes of an exported graph form which part, and which parts an INT8 recipe keeps in float. Torch-free.

Each model family's inference graph declares its own layout (``int8_layout`` on the graph class: node-name
patterns per part, recipes as the parts kept in float, the default recipe); the export writes it into the ONNX
metadata (key :data:`LAYOUT_KEY`, JSON), and calibration reads it from there, so it never imports the family.
The declaration on the graph class is the only copy: a graph whose metadata carries none (exported before edge-ad
recorded it, or built by hand) is refused, and exporting it again writes it.

The post-processing head is also found structurally: every node that depends on ``patch_scores`` is part
``"head"``, whatever the patterns say, and every recipe keeps the head in float.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from edge_ad.onnx_tools.onnx_graph import WEIGHTED_OPS, descendants

__all__ = [
    "LAYOUT_KEY",
    "OP_TYPES",
    "PATCH_SCORES",
    "POOLING_OPS",
    "Exclusion",
    "Int8Layout",
    "check_choice",
    "graph_parts",
    "head_nodes",
    "int8_mac_fraction",
    "layout_of",
    "quantized_nodes",
    "resolve_exclude",
    "unquantized_layers",
]

LAYOUT_KEY = "int8_layout"
PATCH_SCORES = "patch_scores"
POOLING_OPS = ("MaxPool", "AveragePool")
OP_TYPES = {
    "tensorrt": WEIGHTED_OPS + POOLING_OPS,
    "cpu": WEIGHTED_OPS + POOLING_OPS + ("Add", "Relu"),
}

def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """ValueError naming the choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class Int8Layout:
    """A family's quantisable parts (name -> node-name patterns), its recipes (name -> parts kept in float, from
    most to least quantized) and its default recipe."""

    parts: dict[str, tuple[str, ...]]
    recipes: dict[str, tuple[str, ...]]
    default: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Int8Layout:
        """Parse and check a declaration: recipes name declared parts, all keep the head, the default exists."""
        try:
            parts = {str(k): tuple(str(p) for p in v) for k, v in d["parts"].items()}
            recipes = {str(k): tuple(str(p) for p in v) for k, v in d["recipes"].items()}
            default = str(d["default"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"INT8 layout needs parts, recipes and default: {exc!r}") from None
        if "head" not in parts or not recipes:
            raise ValueError("INT8 layout needs a 'head' part and at least one recipe")
        for name, kept in recipes.items():
            unknown = sorted(set(kept) - set(parts))
            if unknown:
                raise ValueError(f"INT8 recipe {name!r} names undeclared parts {unknown}")
            if "head" not in kept:
                raise ValueError(f"INT8 recipe {name!r} must keep the head in float")
        check_choice("default INT8 recipe", default, tuple(recipes))
        return cls(parts, recipes, default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": {k: list(v) for k, v in self.parts.items()},
            "recipes": {k: list(v) for k, v in self.recipes.items()},
            "default": self.default,
        }


def layout_of(source: onnx.ModelProto | Mapping[str, str], name: str = "the model") -> Int8Layout:
    """The layout an ONNX model (or its ``metadata_props`` as a dict) declares. ValueError (one line, naming
    ``name``) when it declares none or an unreadable one: only the exporting family knows its parts."""
    metadata = {p.key: p.value for p in source.metadata_props} if isinstance(source, onnx.ModelProto) else source
    raw = metadata.get(LAYOUT_KEY)
    if not raw:
        raise ValueError(
            f"{name} declares no INT8 layout (no {LAYOUT_KEY!r} metadata: exported by an older edge-ad or built by "
            "hand); export it again with this version of edge-ad (edge-ad export BUNDLE --precision fp32)"
        )
    try:
        return Int8Layout.from_dict(json.loads(raw))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(
            f"{name}'s {LAYOUT_KEY} metadata is unreadable ({exc}); export it again with this version of edge-ad"
        ) from None


def head_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of the post-processing head's nodes: every node that depends on ``patch_scores``."""
    return {graph.node[i].name for i in descendants(graph, PATCH_SCORES)}


def graph_parts(model: onnx.ModelProto, layout: Int8Layout | None = None) -> dict[str, str]:
    """Node name -> part (a part of the layout, or ``"other"``) for every node of the graph."""
    layout = layout or layout_of(model)
    head = head_nodes(model.graph)
    parts: dict[str, str] = {}
    for node in model.graph.node:
        if node.name in head:
            parts[node.name] = "head"
            continue
        matches = (part for part, pats in layout.parts.items() if any(fnmatch.fnmatchcase(node.name, p) for p in pats))
        parts[node.name] = next(matches, "other")
    return parts


@dataclass(frozen=True)
class Exclusion:
    """What a recipe keeps in float: its label, the parts, the extra patterns and the resolved node names."""

    recipe: str
    parts: tuple[str, ...]
    patterns: tuple[str, ...]
    nodes: frozenset[str]


def resolve_exclude(
    model: onnx.ModelProto, exclude: str | Sequence[str] | None = None, layout: Int8Layout | None = None
) -> Exclusion:
    """The nodes that a recipe name of the graph's layout (None: its default) or a list of node-name patterns
    keeps in float.

    The head (everything that depends on ``patch_scores``) is always excluded. A recipe part or a pattern
    that matches no node raises ValueError (the graph does not look like the export its layout describes).
    """
    layout = layout or layout_of(model)
    parts_of = graph_parts(model, layout)
    if exclude is None or isinstance(exclude, str):
        recipe = layout.default if exclude is None else exclude
        check_choice("INT8 recipe", recipe, tuple(layout.recipes))
        parts = layout.recipes[recipe]
        present = set(parts_of.values())
        for part in parts:
            if part not in present:
                patterns = ", ".join(layout.parts[part])
                raise ValueError(f"recipe {recipe!r}: no node of part {part!r} ({patterns}) in the graph")
        nodes = {name for name, part in parts_of.items() if part in parts}
        return Exclusion(recipe, parts, (), frozenset(nodes))
    patterns = tuple(str(p) for p in exclude)
    nodes = {name for name, part in parts_of.items() if part == "head"}
    for pattern in patterns:
        matched = {name for name in parts_of if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            raise ValueError(f"exclude pattern {pattern!r} matches no node of the graph")
        nodes |= matched
    return Exclusion("custom", ("head",), patterns, frozenset(nodes))


def quantized_nodes(model: onnx.ModelProto) -> set[str]:
    """Layers that compute in INT8: weighted ops whose weight comes from a DequantizeLinear, pooling ops whose
    input does. (A float layer reading an int8-rounded input through a shared Q/DQ pair is not counted.)"""
    dq_outputs = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    found = set()
    for node in model.graph.node:
        slot = 1 if node.op_type in WEIGHTED_OPS else 0
        if node.op_type in WEIGHTED_OPS + POOLING_OPS and len(node.input) > slot and node.input[slot] in dq_outputs:
            found.add(node.name)
    return found


def unquantized_layers(int8_model: onnx.ModelProto) -> dict[str, list[str]]:
    """Weighted and pooling layers left in float, by part (for the report)."""
    quantized = quantized_nodes(int8_model)
    parts = graph_parts(int8_model)
    left: dict[str, list[str]] = {}
    for node in int8_model.graph.node:
        if node.op_type in WEIGHTED_OPS + POOLING_OPS and node.name not in quantized:
            left.setdefault(parts.get(node.name, "other"), []).append(node.name)
    return left


def int8_mac_fraction(int8_model: onnx.ModelProto, macs: dict[str, int]) -> float:
    """Share of the graph's weighted-layer MACs that run in INT8 (a proxy for the speed-up a recipe allows)."""
    total = sum(macs.values())
    quantized = quantized_nodes(int8_model)
    return float(sum(v for k, v in macs.items() if k in quantized) / total) if total else 0.0
