"""The accuracy cost of INT8, written down: ``calibration_report.json`` + ``calibration_report.md``.

:func:`calibrate` is the one-call stage: export the fp32 ONNX if the bundle has none (or a stale one), read the
calibration images, the bundle's held-out good images and (only with ``eval_data``) a labelled split once each,
collect calibration statistics once, quantize every (method, recipe) candidate once and run each once, choose --
without labels by default (:func:`~.quantize.choose_without_labels`), on ``eval_data``'s labels when given -- and
write the chosen model, with its own threshold from its own scores on the images and by the rule that made the
bundle's current threshold (:mod:`edge_ad.thresholds.basis`; after ``edge-ad threshold``, that command's), to
``model.int8.onnx``, the report beside it. When the bundle describes a synthetic validation set, the choice is made
on it (:func:`~.choice.choose_on_synthetic`). The report names the data the choice was made on ("synthetic
validation: N held-out good images and M NSA anomalies, seed S", the held-out good images and why there was no
synthetic set, or ``--eval-data``). Torch is imported only for a bundle that does not record its threshold rule's
k, and to export a missing (or stale) fp32 model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from edge_ad.artifacts import artifact_path
from edge_ad.bundle import BundleError, check_artifact_current
from edge_ad.io import atomic_write_json, atomic_write_text
from edge_ad.thresholds.sets import ImageSet

from .calibration_data import DEFAULT_COUNT, model_info
from .graph_parts import int8_mac_fraction, unquantized_layers
from .int8_writer import int8_name, set_int8_metadata, write_model
from .ranges import METHODS
from .recipes import measure, selection_sets

__all__ = ["REPORT_JSON", "REPORT_MD", "calibrate", "write_report"]

REPORT_JSON = "calibration_report.json"
REPORT_MD = "calibration_report.md"
_METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _deviation_rows(title: str, dev: Mapping[str, float]) -> list[str]:
    return [
        "",
        f"## Output change (INT8 - FP32), {title}",
        "",
        "| output | max abs | mean abs | fp32 range | mean abs / range |",
        "|---|---|---|---|---|",
        f"| image score | {_fmt(dev['image_score_max_abs'])} | {_fmt(dev['image_score_mean_abs'])} | "
        f"{_fmt(dev['fp32_image_score_range'])} | {_fmt(dev['image_score_mean_rel'])} |",
        f"| anomaly map | {_fmt(dev['map_max_abs'])} | {_fmt(dev['map_mean_abs'])} | "
        f"{_fmt(dev['fp32_map_range'])} | {_fmt(dev['map_mean_rel'])} |",
    ]


def _excluded(cal: Mapping[str, Any]) -> str:
    n = int(cal.get("excluded") or 0)
    return f": {n} of them removed from the calibration source" if n else ""


def _markdown(report: dict[str, Any]) -> str:
    cal, sel, th = report["calibration"], report["selection"], report["threshold"]
    lines = [
        "# INT8 calibration report",
        "",
        f"- fp32 model: `{report['models']['fp32']}`",
        f"- INT8 model: `{report['models']['int8']}` (target: {report['target']})",
        f"- method: **{report['method']}**, recipe: **{report['recipe']}** "
        f"(kept in float: {', '.join(report['excluded_parts']) or '-'})",
        f"- recipe chosen on: **{sel['summary']}**",
        f"- INT8 share of the weighted layers' MACs: {_fmt(report.get('int8_mac_fraction'), 3)}",
        f"- calibration images: {cal['count']} good images from `{cal['folder']}` "
        f"(seed {cal.get('seed')}, sha256 of names `{str(cal.get('images_sha256', ''))[:16]}...`; "
        f"never the held-out images{_excluded(cal)})",
        f"- threshold: fp32 {_fmt(th['fp32'])} (bundle) -> INT8 **{_fmt(th['int8'])}** "
        f"({th['change']:+.4f}); {th['rule']}",
    ]
    if report.get("selection_note"):
        lines.append(f"- no synthetic validation set: {report['selection_note']}; chosen without labels")
    if report.get("eval"):
        lines.append(
            f"- labelled evaluation set: {report['eval'].get('images', '?')} test images "
            f"({report['eval'].get('anomalous', '?')} anomalous) from `{report['eval'].get('folder', '?')}`"
        )
    else:
        lines.append("- no labelled evaluation: pass `--eval-data DIR` to measure AUROC (and choose on its labels)")
    syn = report.get("synthetic")
    if syn:
        lines += ["", f"## Synthetic validation, FP32 vs INT8 ({sel['summary']})", ""]
        lines += ["| metric | FP32 | INT8 | change |", "|---|---|---|---|"]
        for metric in ("image_auroc", "pixel_auroc"):
            a, b = syn["fp32"].get(metric), syn["int8"].get(metric)
            if a is not None and b is not None:
                lines.append(f"| {metric} | {_fmt(a)} | {_fmt(b)} | {b - a:+.4f} |")
    if report.get("fp32") and report.get("int8"):
        lines += ["", "## Accuracy, FP32 vs INT8", "", "| subset | metric | FP32 | INT8 | change |"]
        lines.append("|---|---|---|---|---|")
        for subset, fp32 in report["fp32"].items():
            int8 = report["int8"].get(subset, {})
            for metric in _METRICS:
                if metric in fp32 and metric in int8:
                    change = int8[metric] - fp32[metric]
                    lines.append(
                        f"| {subset} | {metric} | {_fmt(fp32[metric])} | {_fmt(int8[metric])} | {change:+.4f} |"
                    )
    good = sel.get("good", sel)  # with --eval-data, the held-out good images are described under "good"
    lines += _deviation_rows(f"{good['images']} {good['data']}", report["good_deviation"])
    if report.get("eval"):
        lines += _deviation_rows("labelled evaluation set", report["deviation"])
    lines += ["", "## Layers left in float", ""]
    for part, names in report["unquantized_layers"].items():
        lines.append(f"- {part} ({len(names)}): " + ", ".join(f"`{n}`" for n in names))
    if not report["unquantized_layers"]:
        lines.append("- none")
    candidates = report.get("candidates") or []
    if candidates:
        lines += ["", "## Candidates measured (each quantized and run once)", "", f"Rule: {report.get('rule')}", ""]
        labelled, synthetic = "metrics" in candidates[0], "synthetic" in candidates[0]
        head = "| method | recipe | threshold | good: score change / map range | good: map change (rel) | "
        if labelled:
            head += "image AUROC | pixel AUROC | AUPRO | image loss | pixel loss | "
        if synthetic:
            head += "synthetic image AUROC | synthetic pixel AUROC | image loss | pixel loss | "
        head += "INT8 MACs | within tolerance |"
        lines += [head, "|---" * (head.count("|") - 1) + "|"]
        for c in candidates:
            g = c["good_deviation"]
            chosen = " (chosen)" if (c["method"], c["recipe"]) == (report["method"], report["recipe"]) else ""
            row = (
                f"| {c['method']}{chosen} | {c['recipe']} | {_fmt(c['threshold'])} | "
                f"{_fmt(g['image_score_mean_per_map_range'])} | {_fmt(g['map_mean_rel'])} | "
            )
            if labelled:
                m, loss = c["metrics"], c["loss"]
                row += (
                    f"{_fmt(m.get('image_auroc'))} | {_fmt(m.get('pixel_auroc'))} | {_fmt(m.get('aupro'))} | "
                    f"{_fmt(loss.get('image_auroc'))} | {_fmt(loss.get('pixel_auroc'))} | "
                )
            if synthetic:
                m, loss = c["synthetic"], c["synthetic_loss"]
                row += (
                    f"{_fmt(m.get('image_auroc'))} | {_fmt(m.get('pixel_auroc'))} | "
                    f"{_fmt(loss.get('image_auroc'))} | {_fmt(loss.get('pixel_auroc'))} | "
                )
            lines.append(row + f"{_fmt(c['int8_mac_fraction'], 3)} | {c['within_tolerance']} |")
    lines += ["", "## Calibration images", "", ", ".join(cal.get("names", [])) or "-", ""]
    if cal.get("skipped"):
        lines += ["Skipped (unreadable): " + "; ".join(cal["skipped"]), ""]
    basis = th.get("basis") or {"data": good["data"]}
    names = th.get("names", good.get("names", []))
    lines += [f"## Images the thresholds come from ({basis['data']})", "", ", ".join(names) or "-", ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | os.PathLike[str],
    fp32_metrics: Mapping[str, Mapping[str, float]] | None,
    int8_metrics: Mapping[str, Mapping[str, float]] | None,
    *,
    method: str,
    recipe: str,
    calibration: Mapping[str, Any],
    selection: Mapping[str, Any],
    threshold: Mapping[str, Any],
    good_deviation: Mapping[str, float],
    unquantized: Mapping[str, Sequence[str]],
    deviation: Mapping[str, float] | None = None,
    excluded_parts: Sequence[str] = (),
    target: str = "tensorrt",
    models: Mapping[str, str] | None = None,
    eval_info: Mapping[str, Any] | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    rule: str | None = None,
    int8_mac_fraction: float | None = None,
    synthetic: Mapping[str, Mapping[str, float]] | None = None,
    selection_note: str = "",
) -> dict[str, Any]:
    """Write ``calibration_report.json`` and ``calibration_report.md`` into ``out_dir``; returns the report.

    ``fp32_metrics``/``int8_metrics``: :func:`edge_ad.evaluation.evaluate.metrics_by_defect` output ("overall" and one
    entry per defect type) on the labelled ``--eval-data`` set, or None for both when no labels were used.
    ``calibration``: :meth:`CalibrationReader.describe`. ``selection``: :meth:`~.selection.ImageSet.describe` of
    the images the recipe was chosen on (its ``summary`` names them: "held-out good images, N, no labels" or
    "--eval-data DIR, labels"). ``threshold``: ``fp32``, ``int8``, ``rule``. ``good_deviation``/``deviation``:
    :func:`~edge_ad.calibration.choice.output_deviation` on the good images / the labelled set.
    ``unquantized``: the float layers by part (:func:`~edge_ad.calibration.graph_parts.unquantized_layers`).
    ``synthetic``: ``{"fp32": {...}, "int8": {...}}`` image/pixel AUROC on the synthetic validation set the choice
    was made on (``selection`` is then its description); ``selection_note``: why there was none, when there was none.
    """
    if (fp32_metrics is None) != (int8_metrics is None):
        raise ValueError("give fp32_metrics and int8_metrics both (a labelled set) or neither")
    if fp32_metrics is not None and ("overall" not in fp32_metrics or "overall" not in int8_metrics):  # type: ignore[operator]
        raise ValueError("fp32_metrics and int8_metrics must hold an 'overall' entry (metrics_by_defect output)")
    th = {**threshold, "change": float(threshold["int8"]) - float(threshold["fp32"])}
    summary: dict[str, Any] = {"threshold": {"fp32": th["fp32"], "int8": th["int8"], "change": th["change"]}}
    if fp32_metrics is not None and int8_metrics is not None:
        overall_fp32, overall_int8 = fp32_metrics["overall"], int8_metrics["overall"]
        for metric in ("image_auroc", "pixel_auroc", "aupro"):
            if metric in overall_fp32 and metric in overall_int8:
                summary[metric] = {
                    "fp32": overall_fp32[metric],
                    "int8": overall_int8[metric],
                    "change": overall_int8[metric] - overall_fp32[metric],
                }
    report: dict[str, Any] = {
        "method": method,
        "recipe": recipe,
        "target": target,
        "excluded_parts": list(excluded_parts),
        "int8_mac_fraction": int8_mac_fraction,
        "models": dict(models or {"fp32": "?", "int8": "?"}),
        "selection": dict(selection),
        "labels_used": bool(selection.get("labels")),
        "threshold": th,
        "calibration": {
            "count": int(calibration.get("count", len(calibration.get("names", [])))),
            "names": list(calibration.get("names", [])),
            **{k: v for k, v in calibration.items() if k not in ("count", "names")},
        },
        "eval": dict(eval_info) if eval_info else None,
        "synthetic": {k: dict(v) for k, v in synthetic.items()} if synthetic else None,
        "selection_note": selection_note,
        "summary": summary,
        "fp32": {k: dict(v) for k, v in fp32_metrics.items()} if fp32_metrics is not None else None,
        "int8": {k: dict(v) for k, v in int8_metrics.items()} if int8_metrics is not None else None,
        "good_deviation": dict(good_deviation),
        "deviation": dict(deviation if deviation is not None else good_deviation),
        "unquantized_layers": {k: list(v) for k, v in unquantized.items()},
    }
    if candidates is not None:
        report["candidates"] = [dict(c) for c in candidates]
        report["rule"] = rule
    out = Path(out_dir)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, _markdown(report))
    return report


def _stale(metadata: Mapping[str, str], bundle: Path, fp32: Path) -> bool:
    """True when the fp32 export was made from other weights than the bundle's, or before ``edge-ad threshold``
    changed the bundle's threshold (:func:`edge_ad.bundle.check_artifact_current` refuses it either way)."""
    try:
        check_artifact_current(bundle, metadata.get("bundle_weights_sha256"), fp32)
    except BundleError:
        return True
    return False


def _threshold_rule(selection: ImageSet, sigmas: float) -> tuple[str, list[str]]:
    """How each artifact's own threshold was derived, for the report, and the names of the images it rests on."""
    tsets = selection.threshold
    if tsets is None:
        where = f"{selection.summary()}: max(mean + {sigmas:g} std, max)"
        return f"each from its own image scores on the {where}, the bundle's rule", [p.name for p in selection.paths]
    text = f"each from its own image scores on the {tsets.basis.summary()}: the rule of the bundle's current threshold"
    return text, [p.name for p in tsets.good.paths]


def calibrate(
    bundle_dir: str | os.PathLike[str],
    calib_data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    method: str | None = None,
    count: int = DEFAULT_COUNT,
    *,
    methods: Sequence[str] | None = None,
    recipes: Sequence[str] | None = None,
    tolerance: float | None = None,
    target: str = "tensorrt",
    seed: int = 0,
    out_path: str | os.PathLike[str] | None = None,
    export_fp32: Callable[[Path, Path], object] | None = None,
) -> dict[str, Any]:
    """Calibrate, quantize, measure and report a bundle's INT8 model; returns the report dict.

    ``calib_data``: good images (default: the bundle's training images; the bundle's held-out good images are
    never calibrated on). ``eval_data``: a category folder with a labelled test split; only then are labels
    read, the choice made on them and AUROC reported -- by default the choice is made without labels on the
    held-out good images. ``method``: fix the calibration method; by default every method in ``methods``
    (default all of :data:`METHODS`) is compared, as is the recipe among ``recipes`` (default all).
    ``tolerance``: of the rule in use (AUROC loss with labels, relative output change without). The INT8
    model goes to ``out_path`` (default ``BUNDLE/model.int8.onnx``) with its own threshold, the report beside
    it. When the bundle has no current fp32 ONNX, ``export_fp32(bundle, path)`` writes it first (the export entry
    passes its exporter; calibration imports nothing of export).
    """
    bundle = Path(bundle_dir)
    fp32 = artifact_path(bundle, "fp32")
    info = model_info(fp32) if fp32.is_file() else None
    if info is None or _stale(info.metadata, bundle, fp32):
        if export_fp32 is None:
            why = "no" if info is None else "a stale"
            raise ValueError(
                f"{bundle} has {why} model.fp32.onnx to calibrate from: export it first (`edge-ad export {bundle}`), "
                "or make the INT8 model with `edge-ad export --precision int8` (edge_ad.export.export)"
            )
        export_fp32(bundle, fp32)
        info = model_info(fp32)
    if method is not None:
        compared = (method,)
    else:
        compared = tuple(methods) if methods is not None else METHODS
        if len(compared) < 2:
            raise ValueError("calibrate compares at least two calibration methods; pass method= to fix one")
    calibration, selection, labelled, sigmas = selection_sets(
        fp32, calib_data, eval_data, count=count, seed=seed, model=info
    )
    try:
        measured = measure(
            fp32,
            calibration,
            selection,
            labelled,
            methods=compared,
            recipes=tuple(recipes) if recipes else None,  # None: the graph's declared recipes
            tolerance=tolerance,
            target=target,
            sigmas=sigmas,
        )
    except BaseException:
        calibration.cleanup()
        raise
    try:
        result, chosen = measured.result, measured.chosen
        synthetic = selection.anomalies if labelled is None and result["synthetic"] is not None else None
        chosen_on = labelled or synthetic or selection
        recipe = measured.chosen_recipe
        recipe["selection"] = {
            "data": chosen_on.summary(),
            "labels_used": labelled is not None,
            "rule": result["rule"],
            "within_tolerance": chosen["within_tolerance"],
            "compared": [
                {
                    "method": c["method"],
                    "recipe": c["recipe"],
                    "threshold": round(c["threshold"], 6),
                    "good_score_change": round(c["good_deviation"]["image_score_mean_per_map_range"], 6),
                    "good_map_change": round(c["good_deviation"]["map_mean_rel"], 6),
                    **(
                        {"image_auroc": round(c["metrics"]["image_auroc"], 4)}
                        if "metrics" in c and "image_auroc" in c["metrics"]
                        else {}
                    ),
                    **({f"synthetic_{k}": round(v, 4) for k, v in c["synthetic"].items()} if "synthetic" in c else {}),
                }
                for c in result["candidates"]
            ],
        }
        model = onnx.load(str(measured.chosen_path))
        set_int8_metadata(model, calibration, recipe, chosen["score_stats"])
        int8_path = write_model(model, Path(out_path) if out_path is not None else bundle / int8_name(target))
        fp32_threshold = float(calibration.metadata["threshold"])
        good_images = selection.describe()
        rule_text, threshold_names = _threshold_rule(selection, sigmas)
        return write_report(
            int8_path.parent,
            measured.fp32_metrics,
            measured.chosen_metrics,
            method=chosen["method"],
            recipe=chosen["recipe"],
            calibration=calibration.reader_info,
            selection=good_images if chosen_on is selection else {**chosen_on.describe(), "good": good_images},
            threshold={
                "fp32": fp32_threshold,
                "fp32_onnx": result["fp32_threshold"]["onnx"],
                "int8": float(chosen["threshold"]),
                "rule": rule_text,
                "basis": result["threshold_basis"],
                "names": threshold_names,
                "int8_source": chosen["score_stats"]["threshold_source"],
            },
            good_deviation=chosen["good_deviation"],
            deviation=chosen["deviation"],
            unquantized=unquantized_layers(model),
            excluded_parts=recipe["excluded_parts"],
            target=target,
            models={"fp32": str(fp32), "int8": str(int8_path)},
            eval_info=result["eval"],
            candidates=result["candidates"],
            rule=result["rule"],
            int8_mac_fraction=int8_mac_fraction(model, calibration.macs),
            synthetic={"fp32": result["fp32_synthetic"], "int8": chosen["synthetic"]} if synthetic else None,
            selection_note=result["selection_note"],
        )
    finally:
        measured.cleanup()
