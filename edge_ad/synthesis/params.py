"""NSA generator parameters: the reference's per-category table, and defaults for categories it does not know.

Why a table: NSA's patches are shaped to each category (a screw gets small patches, a carpet big ones, objects keep
patches on the part). The values below are those of the reference code (hmsch/natural-synthetic-anomalies,
``train_mvtec.py`` and ``self_sup_tasks.patch_ex``) for the 15 MVTec AD categories; the NSA settings of the paper use
the same gamma parameters for all of them. Widths are *half*-widths as fractions of the image side, as in the
reference. The edge-ad demo categories are added with the reference's defaults for their kind (marked below), and
the washer's background is estimated from its good images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AUTO",
    "BLENDS",
    "LABEL_MODES",
    "Background",
    "NsaParams",
    "check_blend",
    "check_label",
    "known_categories",
    "params_for",
    "parse_background",
]

Kind = Literal["object", "texture"]
#: Poisson blending: ``auto`` is the reference's rule (normal clone for objects, mixed for textures).
BLENDS: tuple[str, ...] = ("auto", "normal", "mixed")
#: ``(background intensity, threshold)``: a pixel is foreground when its channel mean is further than ``threshold``
#: from ``background`` (the reference's ``skip_background``); ``"auto"``: estimate it from the good images.
Background = tuple[float, float] | Literal["auto"] | None
AUTO: Literal["auto"] = "auto"

#: Label modes: ``binary`` (changed pixels inside the patches), ``continuous`` (the reference's ``intensity`` label,
#: median-filtered mean absolute intensity change, here divided by 255 to lie in [0, 1]) and ``logistic`` (the
#: reference's ``logistic-intensity``, the paper's best for localisation).
LABEL_MODES: tuple[str, ...] = ("binary", "continuous", "logistic")

_Bounds = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class NsaParams:
    """How NSA patches are drawn for one category (defaults: the reference's ``patch_ex`` / NSA settings)."""

    kind: Kind
    #: ((min, max) half-height, (min, max) half-width) as fractions of the image's height / width.
    width_bounds: _Bounds = ((0.03, 0.4), (0.03, 0.4))
    #: Half-width = (offset + Gamma(shape, scale)) * side, clipped to ``width_bounds``: (shape, scale, offset).
    gamma: tuple[float, float, float] = (2.0, 0.05, 0.03)
    #: Patches per image: the first always, each further one with probability 1/2.
    num_patches: int = 3
    #: Rescale factor clip(N(1, 0.5), low, high); textures use (0.5, 2) in the reference.
    resize_bounds: tuple[float, float] = (0.7, 1.3)
    resize: bool = True
    #: Move the patch to a random place (NSA); False keeps the source coordinates (FPI-style).
    shift: bool = True
    background: Background = None
    #: With a background: the source patch must be more than this share foreground ...
    min_object_pct: float = 0.25
    #: ... and its foreground must overlap the destination's foreground by more than this share.
    min_overlap_pct: float = 0.25
    #: (k, x0) of the logistic label 1 / (1 + exp(-k (d - x0))), d the intensity change in grey levels.
    logistic: tuple[float, float] = (1 / 6, 20.0)
    #: Mean absolute change (grey levels) a pixel needs to be labelled.
    label_tol: float = 1.0
    #: ``auto`` (the reference), or ``normal`` / ``mixed`` whatever the kind. Mixed cloning keeps the stronger
    #: gradient of patch and destination, so on a busy texture it cannot make a smooth patch; normal cloning can
    #: (README "Real photographs").
    blend: str = "auto"

    def __post_init__(self) -> None:
        _check(self)

    @property
    def clone(self) -> Literal["normal", "mixed"]:
        """Poisson blending mode: ``blend`` if set, else source gradients for objects and mixed gradients for
        textures (as the reference)."""
        if self.blend != "auto":
            return self.blend  # type: ignore[return-value]  # checked in _check
        return "normal" if self.kind == "object" else "mixed"

    def replace(self, **changes: object) -> NsaParams:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        """Plain values for a provenance file or a bundle's metadata."""
        d = dataclasses.asdict(self)
        d["clone"] = self.clone
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> NsaParams:
        """Inverse of :meth:`to_json` (JSON lists back to tuples); unknown keys are refused, checks run again."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"clone"}
        if unknown:
            raise ValueError(f"unknown NSA parameters {sorted(unknown)}")

        def tup(v: object) -> object:
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        return cls(**{k: tup(v) for k, v in d.items() if k in names})  # type: ignore[arg-type]


def check_label(mode: str) -> None:
    """One clear ValueError for a label mode that is not one of :data:`LABEL_MODES`."""
    if mode not in LABEL_MODES:
        raise ValueError(f"label must be one of {', '.join(LABEL_MODES)}, got {mode!r}")


def check_blend(blend: str) -> None:
    """One clear ValueError for a blend that is not one of :data:`BLENDS`."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(p: NsaParams) -> None:
    """One clear ValueError for every parameter a user (or a table entry) can get wrong."""
    if p.kind not in ("object", "texture"):
        raise ValueError(f"kind must be 'object' or 'texture', got {p.kind!r}")
    try:
        bounds = [(float(lo), float(hi)) for lo, hi in p.width_bounds]
    except (TypeError, ValueError):
        raise ValueError(f"width_bounds must be ((min, max), (min, max)), got {p.width_bounds!r}") from None
    if len(bounds) != 2 or not all(0 < lo <= hi <= 0.5 for lo, hi in bounds):
        raise ValueError(f"width_bounds are half-widths with 0 < min <= max <= 0.5, got {p.width_bounds!r}")
    if len(p.gamma) != 3 or not all(_finite(v) for v in p.gamma) or p.gamma[0] <= 0 or p.gamma[1] <= 0:
        raise ValueError(f"gamma must be (shape > 0, scale > 0, offset), got {p.gamma!r}")
    if isinstance(p.num_patches, bool) or not isinstance(p.num_patches, int) or p.num_patches < 1:
        raise ValueError(f"num_patches must be an integer >= 1, got {p.num_patches!r}")
    lb, ub = p.resize_bounds
    if not (_finite(lb) and _finite(ub) and 0 < lb <= ub):
        raise ValueError(f"resize_bounds must satisfy 0 < low <= high, got {p.resize_bounds!r}")
    for name in ("min_object_pct", "min_overlap_pct"):
        v = getattr(p, name)
        if not (_finite(v) and 0 <= v < 1):
            raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    k, x0 = p.logistic
    if not (_finite(k) and _finite(x0) and k > 0):
        raise ValueError(f"logistic must be (k > 0, x0), got {p.logistic!r}")
    if not (_finite(p.label_tol) and p.label_tol >= 0):
        raise ValueError(f"label_tol must be >= 0, got {p.label_tol!r}")
    check_blend(p.blend)
    _check_background(p.background)


def _check_background(bg: object) -> None:
    if bg is None or bg == AUTO:
        return
    if not (isinstance(bg, tuple) and len(bg) == 2 and all(_finite(v) for v in bg)):
        raise ValueError(f"background must be (intensity, threshold), 'auto' or None, got {bg!r}")
    level, threshold = bg
    if not (0 <= level <= 255 and 0 < threshold < 255):
        raise ValueError(f"background intensity must be in 0..255 and its threshold in (0, 255), got {bg!r}")


def parse_background(text: str) -> Background:
    """``"auto"``, ``"none"`` or ``"LEVEL,THRESHOLD"`` (the CLI's ``--background``)."""
    t = text.strip().lower()
    if t == AUTO:
        return AUTO
    if t == "none":
        return None
    parts = t.split(",")
    try:
        level, threshold = (float(v) for v in parts)
    except ValueError:
        raise ValueError(f"--background must be 'auto', 'none' or LEVEL,THRESHOLD (e.g. 20,20), got {text!r}") from None
    bg = (level, threshold)
    _check_background(bg)
    return bg


# ---- the reference's table (train_mvtec.py) ----------------------------------------------------------------------

_OBJECTS = (
    "bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush", "transistor", "zipper",
)  # fmt: skip
_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
_W = (0.03, 0.4)
_WIDTH_BOUNDS: dict[str, _Bounds] = {
    "bottle": (_W, _W), "cable": ((0.05, 0.4), (0.05, 0.4)), "capsule": ((0.03, 0.15), _W),
    "hazelnut": ((0.03, 0.35), (0.03, 0.35)), "metal_nut": (_W, _W), "pill": ((0.03, 0.2), _W),
    "screw": ((0.03, 0.12), (0.03, 0.12)), "toothbrush": (_W, (0.03, 0.2)), "transistor": (_W, _W),
    "zipper": (_W, (0.03, 0.2)),
    "carpet": (_W, _W), "grid": (_W, _W), "leather": (_W, _W), "tile": (_W, _W), "wood": (_W, _W),
}  # fmt: skip
_NUM_PATCHES = {"screw": 4, "zipper": 4, **{t: 4 for t in _TEXTURES}}  # others: 3
_LOGISTIC = {
    "bottle": (1 / 12, 24), "cable": (1 / 12, 24), "capsule": (1 / 2, 4), "hazelnut": (1 / 12, 24),
    "metal_nut": (1 / 3, 7), "pill": (1 / 3, 7), "screw": (1, 3), "toothbrush": (1 / 6, 15),
    "transistor": (1 / 6, 15), "zipper": (1 / 6, 15),
    "carpet": (1 / 3, 7), "grid": (1 / 3, 7), "leather": (1 / 3, 7), "tile": (1 / 3, 7), "wood": (1 / 6, 15),
}  # fmt: skip
_BACKGROUND = {
    "bottle": (200, 60), "screw": (200, 60), "capsule": (200, 60), "zipper": (200, 60),
    "hazelnut": (20, 20), "pill": (20, 20), "toothbrush": (20, 20), "metal_nut": (20, 20),
}  # fmt: skip
_MIN_OBJECT = {"bottle": 0.7, "capsule": 0.7, "hazelnut": 0.7, "metal_nut": 0.5, "pill": 0.7, "screw": 0.5,
               "toothbrush": 0.25, "zipper": 0.7}  # fmt: skip
# The reference sets 0.25 for every category that has a background; patch_ex's default is 0.25 as well.

# edge-ad's demo categories (not in the reference): the reference's defaults for their kind.
_DEMO_KIND: dict[str, Kind] = {"brushed_metal": "texture", "woven_fabric": "texture", "washer": "object"}


def _default(kind: Kind) -> NsaParams:
    """The reference's values for a category it does not list: patch_ex defaults, texture resize (0.5, 2)."""
    if kind == "texture":
        return NsaParams(kind="texture", num_patches=4, resize_bounds=(0.5, 2.0))
    return NsaParams(kind="object", background=AUTO)


def known_categories() -> tuple[str, ...]:
    return (*_OBJECTS, *_TEXTURES, *_DEMO_KIND)


def params_for(category: str | None, kind: Kind | None = None) -> NsaParams:
    """The parameters of a known category; for another one, the reference's defaults for ``kind``.

    A known category keeps its table kind unless ``kind`` says otherwise (then the defaults of that kind apply).
    Unknown objects estimate their background from the good images (``background="auto"``); unknown textures have
    none. Raises ValueError for an unknown category without ``kind``.
    """
    if kind is not None and kind not in ("object", "texture"):
        raise ValueError(f"kind must be 'object' or 'texture', got {kind!r}")
    name = (category or "").lower()
    if name in _OBJECTS or name in _TEXTURES:
        table_kind: Kind = "object" if name in _OBJECTS else "texture"
        if kind is not None and kind != table_kind:
            return _default(kind)
        base = _default(table_kind)
        return base.replace(
            width_bounds=_WIDTH_BOUNDS[name],
            num_patches=_NUM_PATCHES.get(name, 3),
            logistic=_LOGISTIC[name],
            background=_BACKGROUND.get(name),
            min_object_pct=_MIN_OBJECT.get(name, 0.25),
        )
    if name in _DEMO_KIND:
        return _default(kind or _DEMO_KIND[name])
    if kind is None:
        raise ValueError(
            f"category {category!r} is not in the NSA table ({', '.join(known_categories())}); "
            "say whether it is an object or a texture (--kind object|texture)"
        )
    return _default(kind)
