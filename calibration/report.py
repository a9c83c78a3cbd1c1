"""The accuracy cost of INT8, written down: ``calibration_report.json`` + ``calibration_report.md``.

:func:`calibrate` is the one-call stage: export the fp32 ONNX if the bundle has none, collect calibration
statistics once, measure every (method, recipe) candidate on the evaluation set (at least two calibration
methods unless one is named), quantize the chosen one to ``model.int8.onnx``, evaluate that file against
fp32 with :class:`~edge_ad.runtimes.onnx_runtime.OnnxRuntime`, and write the report beside it. Torch is only
imported when the fp32 export is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from edge_ad.bundle import WEIGHTS_NAME, read_bundle
from edge_ad.io import atomic_write_json, atomic_write_text

from .quantize import (
    DEFAULT_TOLERANCE,
    METHODS,
    RECIPES,
    _evaluate,
    _measure,
    int8_mac_fraction,
    quantize_int8,
    score_deviation,
    unquantized_layers,
)

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


def _markdown(report: dict[str, Any]) -> str:
    cal, dev = report["calibration"], report["deviation"]
    lines = [
        "# INT8 calibration report",
        "",
        f"- fp32 model: `{report['models']['fp32']}`",
        f"- INT8 model: `{report['models']['int8']}` (target: {report['target']})",
        f"- method: **{report['method']}**, recipe: **{report['recipe']}** "
        f"(kept in float: {', '.join(report['excluded_parts']) or '-'})",
        f"- INT8 share of the weighted layers' MACs: {_fmt(report.get('int8_mac_fraction'), 3)}",
        f"- calibration images: {cal['count']} good images from `{cal['folder']}` "
        f"(seed {cal.get('seed')}, sha256 of names `{str(cal.get('images_sha256', ''))[:16]}...`)",
        f"- evaluation set: {report['eval'].get('images', '?')} test images "
        f"({report['eval'].get('anomalous', '?')} anomalous) from `{report['eval'].get('folder', '?')}`",
        "",
        "## Accuracy, FP32 vs INT8",
        "",
        "| subset | metric | FP32 | INT8 | change |",
        "|---|---|---|---|---|",
    ]
    for subset, fp32 in report["fp32"].items():
        int8 = report["int8"].get(subset, {})
        for metric in _METRICS:
            if metric in fp32 and metric in int8:
                change = int8[metric] - fp32[metric]
                lines.append(f"| {subset} | {metric} | {_fmt(fp32[metric])} | {_fmt(int8[metric])} | {change:+.4f} |")
    lines += [
        "",
        "## Output change (INT8 - FP32)",
        "",
        "| output | max abs | mean abs | fp32 range | mean abs / range |",
        "|---|---|---|---|---|",
        f"| image score | {_fmt(dev['image_score_max_abs'])} | {_fmt(dev['image_score_mean_abs'])} | "
        f"{_fmt(dev['fp32_image_score_range'])} | {_fmt(dev['image_score_mean_rel'])} |",
        f"| anomaly map | {_fmt(dev['map_max_abs'])} | {_fmt(dev['map_mean_abs'])} | "
        f"{_fmt(dev['fp32_map_range'])} | {_fmt(dev['map_mean_rel'])} |",
        "",
        "## Layers left in float",
        "",
    ]
    for part, names in report["unquantized_layers"].items():
        lines.append(f"- {part} ({len(names)}): " + ", ".join(f"`{n}`" for n in names))
    if not report["unquantized_layers"]:
        lines.append("- none")
    candidates = report.get("candidates") or []
    if candidates:
        lines += [
            "",
            "## Candidates measured",
            "",
            f"Rule: {report.get('rule', '-')}",
            "",
            "| method | recipe | image AUROC | pixel AUROC | AUPRO | image loss | pixel loss | "
            "score change (rel) | map change (rel) | INT8 MACs | within tolerance |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in candidates:
            m, loss, d = c["metrics"], c["loss"], c["deviation"]
            chosen = " (chosen)" if (c["method"], c["recipe"]) == (report["method"], report["recipe"]) else ""
            lines.append(
                f"| {c['method']}{chosen} | {c['recipe']} | {_fmt(m.get('image_auroc'))} | "
                f"{_fmt(m.get('pixel_auroc'))} | {_fmt(m.get('aupro'))} | {_fmt(loss.get('image_auroc'))} | "
                f"{_fmt(loss.get('pixel_auroc'))} | {_fmt(d['image_score_mean_rel'])} | {_fmt(d['map_mean_rel'])} | "
                f"{_fmt(c['int8_mac_fraction'], 3)} | {c['within_tolerance']} |"
            )
    lines += ["", "## Calibration images", "", ", ".join(cal.get("names", [])) or "-", ""]
    if cal.get("skipped"):
        lines += ["Skipped (unreadable): " + "; ".join(cal["skipped"]), ""]
    return "\n".join(lines)


def write_report(
    out_dir: str | os.PathLike[str],
    fp32_metrics: Mapping[str, Mapping[str, float]],
    int8_metrics: Mapping[str, Mapping[str, float]],
    *,
    method: str,
    recipe: str,
    calibration: Mapping[str, Any],
    deviation: Mapping[str, float],
    unquantized: Mapping[str, Sequence[str]],
    excluded_parts: Sequence[str] = (),
    target: str = "tensorrt",
    models: Mapping[str, str] | None = None,
    eval_info: Mapping[str, Any] | None = None,
    candidates: Sequence[Mapping[str, Any]] | None = None,
    rule: str | None = None,
    int8_mac_fraction: float | None = None,
) -> dict[str, Any]:
    """Write ``calibration_report.json`` and ``calibration_report.md`` into ``out_dir``; returns the report.

    ``fp32_metrics``/``int8_metrics``: :func:`edge_ad.evaluate.metrics_by_defect` output ("overall" and one
    entry per defect type). ``calibration``: :meth:`CalibrationReader.describe` (count, names, folder, seed,
    hash). ``deviation``: :func:`~edge_ad.calibration.quantize.score_deviation`. ``unquantized``: the float
    layers by part (:func:`~edge_ad.calibration.quantize.unquantized_layers`).
    """
    if "overall" not in fp32_metrics or "overall" not in int8_metrics:
        raise ValueError("fp32_metrics and int8_metrics must hold an 'overall' entry (metrics_by_defect output)")
    overall_fp32, overall_int8 = fp32_metrics["overall"], int8_metrics["overall"]
    report: dict[str, Any] = {
        "method": method,
        "recipe": recipe,
        "target": target,
        "excluded_parts": list(excluded_parts),
        "int8_mac_fraction": int8_mac_fraction,
        "models": dict(models or {"fp32": "?", "int8": "?"}),
        "calibration": {
            "count": int(calibration.get("count", len(calibration.get("names", [])))),
            "names": list(calibration.get("names", [])),
            **{k: v for k, v in calibration.items() if k not in ("count", "names")},
        },
        "eval": dict(eval_info or {}),
        "summary": {
            metric: {
                "fp32": overall_fp32[metric],
                "int8": overall_int8[metric],
                "change": overall_int8[metric] - overall_fp32[metric],
            }
            for metric in ("image_auroc", "pixel_auroc", "aupro")
            if metric in overall_fp32 and metric in overall_int8
        },
        "fp32": {k: dict(v) for k, v in fp32_metrics.items()},
        "int8": {k: dict(v) for k, v in int8_metrics.items()},
        "deviation": dict(deviation),
        "unquantized_layers": {k: list(v) for k, v in unquantized.items()},
    }
    if candidates is not None:
        report["candidates"] = [dict(c) for c in candidates]
        report["rule"] = rule
    out = Path(out_dir)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, _markdown(report))
    return report


def _stale(fp32: Path, bundle: Path) -> bool:
    """True when the fp32 export was made from other weights than the bundle's current ones."""
    recorded = read_bundle(bundle, verify_weights=False).raw.get("files", {}).get(WEIGHTS_NAME)
    meta = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    return bool(recorded) and meta.get("bundle_weights_sha256") != recorded


def calibrate(
    bundle_dir: str | os.PathLike[str],
    calib_data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    method: str | None = None,
    count: int = 128,
    *,
    methods: Sequence[str] | None = None,
    recipes: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    target: str = "tensorrt",
    seed: int = 0,
    out_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Calibrate, quantize, measure and report a bundle's INT8 model; returns the report dict.

    ``calib_data``: good images (default: the bundle's training images). ``eval_data``: a category folder
    with a labelled test split (default: the bundle's category). ``method``: fix the calibration method;
    by default every method in ``methods`` (default all of :data:`METHODS`) is compared on the evaluation
    set and the choice is made by measurement, as is the recipe among ``recipes`` (default all). The
    INT8 model goes to ``out_path`` (default ``BUNDLE/model.int8.onnx``), the report beside it. The fp32
    ONNX is exported first when the bundle has none, or has one made from other weights.
    """
    bundle = Path(bundle_dir)
    fp32 = bundle / "model.fp32.onnx"
    if not fp32.is_file() or _stale(fp32, bundle):
        from edge_ad.export.onnx_export import export_onnx  # needs torch: only when the fp32 export is missing

        export_onnx(bundle, fp32)
    if method is not None:
        compared = (method,)
    else:
        compared = tuple(methods) if methods is not None else METHODS
        if len(compared) < 2:
            raise ValueError("calibrate compares at least two calibration methods; pass method= to fix one")
    measured, calibration, samples, fp32_scored, fp32_metrics = _measure(
        fp32, calib_data, eval_data, compared, tuple(recipes or RECIPES), count, seed, tolerance, target, 8
    )
    try:
        chosen = measured["chosen"]
        selection = {
            "rule": measured["rule"],
            "within_tolerance": chosen["within_tolerance"],
            "compared": [
                {
                    "method": c["method"],
                    "recipe": c["recipe"],
                    "image_auroc": round(c["metrics"]["image_auroc"], 4),
                    "pixel_auroc": round(c["metrics"]["pixel_auroc"], 4) if "pixel_auroc" in c["metrics"] else None,
                }
                for c in measured["candidates"]
            ],
            "fp32": {k: round(v, 4) for k, v in measured["fp32"].items() if k in ("image_auroc", "pixel_auroc")},
            "eval_images": len(samples),
        }
        int8_path = quantize_int8(
            fp32,
            calibration,
            out_path,
            method=chosen["method"],
            exclude=chosen["recipe"],
            target=target,
            selection=selection,
        )
        int8_scored, int8_metrics = _evaluate(int8_path, samples)
        model = onnx.load(str(int8_path))
        recipe_meta = json.loads({p.key: p.value for p in model.metadata_props}["int8_recipe"])
        eval_folder = str(samples[0].path.parent.parent.parent) if samples else "?"
        return write_report(
            int8_path.parent,
            fp32_metrics,
            int8_metrics,
            method=chosen["method"],
            recipe=chosen["recipe"],
            calibration=calibration.reader_info,
            deviation=score_deviation(fp32_scored, int8_scored),
            unquantized=unquantized_layers(model),
            excluded_parts=recipe_meta["excluded_parts"],
            target=target,
            models={"fp32": str(fp32), "int8": str(int8_path)},
            eval_info={**measured["eval"], "folder": eval_folder, "tolerance": tolerance},
            candidates=measured["candidates"],
            rule=measured["rule"],
            int8_mac_fraction=int8_mac_fraction(model, calibration.macs),
        )
    finally:
        calibration.cleanup()
