"""``edge-ad threshold``: re-derive a bundle's verdict threshold from new good images, without retraining.

Why: when the line changes (lighting, a new batch of parts), good images score differently and the stored threshold
drifts; retraining is not needed to move it. The bundle's torch model scores the new good images through
:class:`edge_ad.detector.Detector` (the input gate, reading and preprocessing exactly as ``eval`` and ``predict``);
an image the gate refuses is counted and named, never scored, and a file that is not a readable image stops the
command (the folder must hold good images only). ``synthetic-f1`` adds a fresh synthetic validation set made on
the new images (NSA anomalies, seed recorded).

``config.json`` is rewritten atomically with its ``files`` entry unchanged (the weights did not change, so the
hash seal stays valid) and a ``threshold_history`` entry for the value it replaced. Exports made before carry the
old threshold; :func:`edge_ad.bundle.check_artifact_current` refuses them from then on with a re-export hint, and
the result lists them. Importing this module loads no torch; running it loads the bundle's torch model.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bundle import (
    CONFIG_NAME,
    MIN_THRESHOLD_IMAGES,
    BundleError,
    BundleInfo,
    artifact_bundle_threshold,
    check_artifact_current,
    read_bundle,
)
from edge_ad.data.images import list_images
from edge_ad.io import atomic_write_json
from edge_ad.progress import console
from edge_ad.runtimes.scoring import score_batches
from edge_ad.synthesis.separation import no_separation_line, separates
from edge_ad.thresholds.rules import (
    DEFAULT_RULE,
    GOOD_SIGMA,
    RULES,
    SYNTHETIC_F1,
    good_statistics,
    recorded_sigmas,
    refuse_flagging_every_good_image,
    synthetic_f1_threshold,
)

__all__ = ["rethreshold", "result_lines"]

DEFAULT_PER_IMAGE = 2


def rethreshold(
    bundle_dir: str | os.PathLike[str],
    good_dir: str | os.PathLike[str],
    *,
    rule: str = DEFAULT_RULE,
    sigmas: float | None = None,
    seed: int | None = None,
    per_image: int | None = None,
    kind: str | None = None,
    dry_run: bool = False,
    device: str = "cpu",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Score ``good_dir`` with the bundle's model, derive the threshold by ``rule`` and (unless ``dry_run``) store it.

    ``sigmas``: k of ``good-sigma`` (default: as recorded at training). ``seed``/``per_image``: of the synthetic set
    (default: the bundle's synthetic validation description, else 7919 and 2). ``kind``: object or texture, only for
    a bundle that records no NSA parameters and whose category the NSA table does not know. Raises ``ValueError``
    (or ``BundleError``/``ImageError``) with one line for anything a user can fix.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose {' or '.join(RULES)}")
    if sigmas is not None and not (math.isfinite(sigmas) and sigmas >= 0):
        raise ValueError(f"--sigmas must be a finite number >= 0, got {sigmas}")
    info = read_bundle(bundle_dir)
    folder = Path(good_dir)
    paths = list_images(folder)
    if len(paths) < MIN_THRESHOLD_IMAGES:
        raise ValueError(
            f"{folder}: {len(paths)} good image(s); a threshold needs at least {MIN_THRESHOLD_IMAGES} "
            "(on fewer, a new good image too often scores above all of them)"
        )
    scored = _score_good(info, paths, device, batch_size)
    names, scores, maps = scored["names"], scored["scores"], scored["maps"]
    if len(names) < MIN_THRESHOLD_IMAGES:
        raise ValueError(
            f"{folder}: only {len(names)} of {len(paths)} images passed the input gate ({len(scored['rejected'])} "
            f"refused, e.g. {scored['rejected'][0]}); a threshold needs at least {MIN_THRESHOLD_IMAGES}"
        )
    k = float(sigmas) if sigmas is not None else recorded_sigmas(info.training)
    stats = good_statistics(scores, maps, k)
    synthetic = None
    fallback = ""
    if rule == SYNTHETIC_F1:
        image_stats, synthetic = _synthetic_f1(info, scored, seed, per_image, kind)
        figures = {"image AUROC": synthetic.get("image_auroc"), "pixel AUROC": synthetic.get("pixel_auroc")}
        if image_stats is not None:
            stats["image"] = image_stats
        else:  # the model does not tell these anomalies from good images: the F1-best cut would be noise
            fallback = no_separation_line("--rule synthetic-f1", figures, f"good-sigma (k = {k:g}) used instead")
            console.log(fallback)
            rule, synthetic = GOOD_SIGMA, None
    old = _old_threshold(info)
    new_value = float(stats["image"]["threshold"])
    if not math.isfinite(new_value):
        raise ValueError(f"the {rule} rule gave the threshold {new_value} on {folder}; the bundle is unchanged")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    score_stats = {
        **info.score_stats,
        **stats,
        "threshold_rule": rule,
        "threshold_source": f"edge-ad threshold ({rule}): {len(names)} good images in {folder}",
    }
    if synthetic is not None:
        score_stats["synthetic_validation"] = synthetic
    else:
        score_stats.pop("synthetic_validation", None)
    # what made the new value, so an export re-derives its own threshold on the same images by the same rule
    # (edge_ad.thresholds.basis); a synthetic-f1 set is described in score_stats["synthetic_validation"]
    by: dict[str, Any] = {"rule": rule, "images": len(names), "folder": str(folder), "names": list(names)}
    if rule != SYNTHETIC_F1:
        by["sigmas"] = k
    history_entry = {**old, "replaced": now, "by": by}
    result: dict[str, Any] = {
        "bundle": str(info.path),
        "good_dir": str(folder),
        "rule": rule,
        "old": old,
        "new": {"threshold": new_value, **{k_: v for k_, v in stats["image"].items() if k_ != "threshold"}},
        "pixel": stats["pixel"],
        "images": len(names),
        "rejected": scored["rejected"],
        "synthetic": synthetic,
        "fallback": fallback,
        "dry_run": dry_run,
        "exports": _disagreeing_exports(info.path, new_value),
        "stale_exports": [],
    }
    if dry_run:
        return result
    raw = json.loads((info.path / CONFIG_NAME).read_text())
    raw["threshold"] = new_value
    raw["score_stats"] = score_stats
    raw["threshold_history"] = [*list(raw.get("threshold_history") or []), history_entry]
    atomic_write_json(info.path / CONFIG_NAME, raw)
    read_bundle(info.path)  # the seal still holds: the weights' hash is unchanged
    result["stale_exports"] = _refused_exports(info.path)
    return result


def _score_good(info: BundleInfo, paths: list[Path], device: str, batch_size: int) -> dict[str, Any]:
    """Good images through the detector: scores, maps and crops of those that passed, names of those refused."""
    from edge_ad.detector import Detector, Failure, open_runtime

    runtime = open_runtime(info.path, "torch", device=device)  # not Detector.load: it would warn about the threshold
    detector = Detector(runtime, info.preprocessing, info.threshold, info.score_stats)
    names, scores, maps, crops, rejected, unreadable = [], [], [], [], [], []
    for item in detector.predict_paths(paths, batch_size=batch_size):
        if isinstance(item, Failure):
            (rejected if item.rejected else unreadable).append(f"{Path(item.source).name}: {item.error}")
            continue
        names.append(Path(item.source).name)
        scores.append(item.image_score)
        maps.append(item.anomaly_map)
        crops.append(item.image)
    if unreadable:
        raise ValueError(
            f"{len(unreadable)} file(s) in {paths[0].parent} are not readable images (e.g. {unreadable[0]}); "
            "the folder must hold good images only"
        )
    return {
        "names": names,
        "scores": np.asarray(scores, np.float64),
        "maps": np.stack(maps) if maps else np.zeros((0, 1, 1), np.float32),
        "crops": crops,
        "rejected": rejected,
        "detector": detector,
        "folder": paths[0].parent,
    }


def _synthetic_f1(
    info: BundleInfo, scored: dict[str, Any], seed: int | None, per_image: int | None, kind: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The F1-best threshold on a fresh synthetic set made on the new good images; the good ones are not rerun.

    None instead of the threshold when the set's image AUROC is within the chance margin (the caller falls back)."""
    from edge_ad.synthesis.validation import VALIDATION_SEED_OFFSET, build_validation_set, scores_from_outputs

    description = info.training.get("synthetic_validation")
    description = description if isinstance(description, dict) and description.get("status") == "ok" else {}
    params = _nsa_params(info, description, kind)
    seed = int(seed if seed is not None else description.get("seed", VALIDATION_SEED_OFFSET))
    per_image = int(per_image if per_image is not None else description.get("per_image", DEFAULT_PER_IMAGE))
    vset = build_validation_set(scored["crops"], scored["names"], params, seed=seed, per_image=per_image)
    n_good = len(scored["names"])
    detector = scored["detector"]
    normalize = detector.preprocessing.normalize
    syn_scores, syn_maps = score_batches(
        detector.runtime.predict, vset.images[n_good:], lambda chunk: np.stack([normalize(im) for im in chunk])
    )
    if len(syn_scores):
        scores = np.concatenate([scored["scores"], syn_scores.astype(np.float64)])
        maps = np.concatenate([scored["maps"].astype(np.float32), syn_maps])
    else:
        scores, maps = np.asarray(scored["scores"]), scored["maps"].astype(np.float32)
    image_stats = synthetic_f1_threshold(vset.labels, scores)
    result = scores_from_outputs(vset, scores, maps)  # the validation set's own AUROC rules
    figures = {"image_auroc": result.image_auroc}
    if math.isfinite(result.pixel_auroc):
        figures["pixel_auroc"] = result.pixel_auroc
    if not separates(result.image_auroc):
        return None, {**vset.describe(), **figures}
    refuse_flagging_every_good_image(
        image_stats,
        f"{n_good} good images and {vset.n_anomalous} NSA anomalies made on them (seed {seed}, image AUROC "
        f"{result.image_auroc:.3f})",
        "keep --rule good-sigma. The bundle is unchanged",
    )
    return image_stats, {**vset.describe(), "good_dir": str(scored["folder"]), **figures}


def _nsa_params(info: BundleInfo, description: dict[str, Any], kind: str | None) -> Any:
    """The NSA parameters the bundle's own synthetic validation used, else the NSA table's for its category."""
    from edge_ad.synthesis.params import NsaParams, params_for

    if description.get("params"):
        params = NsaParams.from_json(dict(description["params"]))
        return params if kind is None else params.replace(kind=kind)
    category = Path(str(info.training.get("data") or "")).name or None
    try:
        return params_for(category, kind)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{exc} for the synthetic-f1 rule (the bundle records no NSA parameters)") from None


def _old_threshold(info: BundleInfo) -> dict[str, Any]:
    image = info.score_stats.get("image") if isinstance(info.score_stats.get("image"), dict) else {}
    return {
        "threshold": float(info.threshold) if info.has_threshold else None,
        "rule": str(info.score_stats.get("threshold_rule") or image.get("rule") or "good-sigma"),
        "images": image.get("good_count"),
        "source": info.score_stats.get("threshold_source"),
    }


def _exports(bundle: Path) -> list[Path]:
    return sorted([*bundle.glob("model.*.onnx"), *bundle.glob("model.*.engine")])


def _disagreeing_exports(bundle: Path, threshold: float) -> list[str]:
    """Exports made with another bundle threshold than ``threshold``: refused once it is stored."""
    out = []
    for artifact in _exports(bundle):
        try:
            recorded = artifact_bundle_threshold(artifact)
        except (ValueError, OSError):
            recorded = None
        if recorded is None or not math.isclose(recorded, threshold, rel_tol=1e-9):
            out.append(artifact.name)
    return out


def _refused_exports(bundle: Path) -> list[str]:
    """Exports that now disagree with the bundle (old threshold): loading refuses them; each with its hint."""
    refused = []
    from edge_ad.bundle import artifact_weights_sha256

    for artifact in _exports(bundle):
        try:
            check_artifact_current(bundle, artifact_weights_sha256(artifact), artifact)
        except (BundleError, ValueError, OSError) as exc:
            refused.append(f"{artifact.name}: {exc}")
    return refused


def result_lines(result: dict[str, Any]) -> list[str]:
    """Lines for people: old -> new, the statistics behind the new value, what was refused and what to re-export."""
    old, new = result["old"], result["new"]
    was = "none" if old["threshold"] is None else f"{old['threshold']:.6g}"
    lines = [
        f"threshold: {was} ({old['rule']}, {old['images'] or '?'} images) -> {new['threshold']:.6g} "
        f"({result['rule']}, {result['images']} good images in {result['good_dir']})"
        + ("  [dry run: nothing written]" if result["dry_run"] else ""),
        f"good scores: mean {new['good_mean']:.6g}, std {new['good_std']:.6g}, max {new['good_max']:.6g}"
        + (f"; k = {new['sigmas']:g}" if "sigmas" in new else ""),
    ]
    syn = result.get("synthetic")
    if syn:
        lines.append(
            f"synthetic validation: {syn['n_good']} good images and {syn['n_anomalous']} NSA anomalies, seed "
            f"{syn['seed']}: F1 {new['f1']:.4f} (precision {new['precision']:.4f}, recall {new['recall']:.4f}), "
            f"image AUROC {syn['image_auroc']:.4f}"
            + (f", pixel AUROC {syn['pixel_auroc']:.4f}" if "pixel_auroc" in syn else "")
        )
    if result.get("fallback"):
        lines.append(result["fallback"])
    if result["rejected"]:
        refused = "; ".join(result["rejected"])
        lines.append(f"refused by the input gate, not scored ({len(result['rejected'])}): {refused}")
    if result["dry_run"] and result["exports"]:
        lines.append(f"exports that would need re-exporting: {', '.join(result['exports'])}")
    for stale in result["stale_exports"]:
        lines.append(f"refused from now on: {stale}")
    return lines
