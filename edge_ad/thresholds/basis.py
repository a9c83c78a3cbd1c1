"""Which good images and which rule made a bundle's CURRENT verdict threshold. Torch-free.

Why: an export that derives its own threshold (fp16, INT8) must apply the bundle's rule to the images that set the
bundle's threshold, or a re-threshold (``edge-ad threshold``) would be undone by the next export. By default that is
the held-out training images with ``good-sigma`` (k as recorded at training); after ``edge-ad threshold`` it is the
latest ``threshold_history`` entry's folder (the images that passed the input gate), rule, k or synthetic set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.bundle import BundleInfo
from edge_ad.data.images import list_images
from edge_ad.data.layout import DatasetError, train_images
from edge_ad.thresholds.rules import GOOD_SIGMA, RULES, SYNTHETIC_F1

__all__ = [
    "HOLDOUT",
    "RETHRESHOLD",
    "TRAINING_FALLBACK",
    "ThresholdBasis",
    "ThresholdImagesGone",
    "bundle_holdout",
    "threshold_basis",
]

HOLDOUT = "held-out good images"
TRAINING_FALLBACK = "training images (the bundle held none out: the threshold is optimistic)"
RETHRESHOLD = "good images of `edge-ad threshold`"


class ThresholdImagesGone(ValueError):
    """The images (or the record) of the latest ``edge-ad threshold`` are gone: nothing can re-derive its threshold."""


@dataclass(frozen=True)
class ThresholdBasis:
    """The good images behind the bundle's threshold and the rule applied to their scores.

    ``synthetic``: for ``synthetic-f1``, the description of the synthetic set made on them (seed, per_image,
    params, images), from which it is rebuilt exactly.
    """

    kind: str  # HOLDOUT, TRAINING_FALLBACK or RETHRESHOLD
    folder: str
    paths: list[Path]
    rule: str
    sigmas: float | None  # k of good-sigma; None for synthetic-f1
    synthetic: dict[str, Any] | None = None

    def summary(self) -> str:
        """One line for reports and metadata: which images, how many, which rule."""
        if self.rule == SYNTHETIC_F1 and self.synthetic is not None:
            syn = self.synthetic
            how = f"synthetic-f1 (NSA anomalies, seed {syn.get('seed')}, {syn.get('per_image')} per image)"
        else:
            how = f"good-sigma: max(mean + {self.sigmas:g} std, max)"
        return f"{self.kind}: {len(self.paths)} in {self.folder}, rule {how}"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": self.kind, "folder": self.folder, "images": len(self.paths), "rule": self.rule}
        if self.sigmas is not None:
            out["sigmas"] = self.sigmas
        if self.synthetic is not None:
            out["seed"], out["per_image"] = self.synthetic.get("seed"), self.synthetic.get("per_image")
        out["summary"] = self.summary()
        return out


def bundle_holdout(info: BundleInfo) -> tuple[str, str, list[Path]] | None:
    """``(kind, folder, paths)`` of the good images behind the bundle's training threshold; None if it records none."""
    data = info.training.get("data")
    names = list(info.training.get("holdout_images") or [])
    kind = HOLDOUT
    if not names:
        names, kind = list(info.training.get("train_images") or []), TRAINING_FALLBACK
    if not data or not names:
        return None
    try:
        available = train_images(data)
    except DatasetError as exc:
        raise ValueError(f"the {kind} of bundle {info.path} are not available: {exc}") from exc
    by_name = {p.name: p for p in available}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"{available[0].parent}: {len(missing)} of the bundle's {len(names)} {kind} are missing (e.g. {missing[0]})"
        )
    return kind, str(available[0].parent), [by_name[n] for n in names]


def threshold_basis(info: BundleInfo, default_sigmas: float | None = None) -> ThresholdBasis | None:
    """What made ``info``'s current threshold; None when the bundle records no images (imported without data).

    ``default_sigmas``: k for a bundle that records none (the trainer's default; the caller knows it, this module
    loads no torch). Raises ``ValueError`` with one line when the images ``edge-ad threshold`` used are gone.
    """
    history = info.raw.get("threshold_history")
    last = history[-1].get("by") if isinstance(history, list) and history and isinstance(history[-1], dict) else None
    if isinstance(last, dict) and last.get("folder"):
        return _rethreshold_basis(info, last)
    held = bundle_holdout(info)
    if held is None:
        return None
    kind, folder, paths = held
    sigmas = _number(info.training.get("threshold_sigmas"))
    sigmas = sigmas if sigmas is not None else default_sigmas
    if sigmas is None:
        raise ValueError(f"{info.path} records no k of its good-sigma threshold rule (training.threshold_sigmas)")
    return ThresholdBasis(kind, folder, paths, GOOD_SIGMA, sigmas)


def _rethreshold_basis(info: BundleInfo, by: dict[str, Any]) -> ThresholdBasis:
    """The latest ``edge-ad threshold`` run: its folder, the images it scored, its rule and k or synthetic set."""
    folder = Path(str(by["folder"]))
    rule = str(by.get("rule") or GOOD_SIGMA)
    redo = f"run `edge-ad threshold {info.path} GOOD_DIR` again on good images that exist, then export"
    if rule not in RULES:
        raise ThresholdImagesGone(f"{info.path}: `edge-ad threshold` recorded an unknown rule {rule!r}; {redo}")
    if not folder.is_dir():
        raise ThresholdImagesGone(
            f"the good images that set {info.path}'s threshold by `edge-ad threshold` ({folder}) are gone; {redo}"
        )
    image = info.score_stats.get("image") if isinstance(info.score_stats.get("image"), dict) else {}
    synthetic = info.score_stats.get("synthetic_validation") if rule == SYNTHETIC_F1 else None
    if rule == SYNTHETIC_F1 and not (isinstance(synthetic, dict) and synthetic.get("images")):
        raise ThresholdImagesGone(
            f"{info.path}: its synthetic-f1 threshold does not describe its synthetic set; {redo}"
        )
    names = list(synthetic["images"]) if synthetic else list(by.get("names") or [])
    if names:
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ThresholdImagesGone(
                f"{folder}: {len(missing)} of the {len(names)} good images that set {info.path}'s threshold are gone "
                f"(e.g. {missing[0]}); {redo}"
            )
        paths = [folder / n for n in names]
    else:  # recorded by an older edge-ad: the folder's images (the input gate refuses the same ones again)
        paths = list_images(folder)
    sigmas = None if rule == SYNTHETIC_F1 else _number(image.get("sigmas", by.get("sigmas")))
    if rule == GOOD_SIGMA and sigmas is None:
        raise ThresholdImagesGone(f"{info.path}: its good-sigma threshold records no k; {redo}")
    return ThresholdBasis(RETHRESHOLD, str(folder), paths, rule, sigmas, dict(synthetic) if synthetic else None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
