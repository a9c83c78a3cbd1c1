"""Measuring INT8 recipes and choosing one: every (calibration method, recipe) pair is quantized once and run once
on sets read once, against the fp32 model. Torch-free (the bundle's default k of its threshold rule aside).

What the choice is made on (:func:`selection_sets`, :func:`measure`; the rules are in :mod:`.choice`):

* an explicit labelled ``--eval-data`` folder: its labels (:func:`~.choice.choose_candidate`);
* else, when the bundle describes a synthetic validation set: that set, rebuilt from its description -- the
  held-out good images and the NSA anomalies made on them, fixed by a seed (:func:`~.choice.choose_on_synthetic`);
* else the held-out good images alone, without labels (:func:`~.choice.choose_without_labels`), and the result's
  ``selection_note`` says why there was no synthetic set.

Each candidate's own threshold comes from its own scores on the images that made the bundle's current threshold,
by the bundle's rule (:mod:`edge_ad.thresholds.basis`): the held-out good images with good-sigma, or after
``edge-ad threshold`` that command's images and rule; those extra images are read once and run once per candidate.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.bundle import CONFIG_NAME, read_bundle
from edge_ad.data.layout import Sample, test_samples
from edge_ad.evaluation.evaluate import Scored, metrics_by_defect, score_samples
from edge_ad.progress import console
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from edge_ad.synthesis.separation import no_separation_line, separates
from edge_ad.thresholds.basis import threshold_basis
from edge_ad.thresholds.sets import (
    HOLDOUT,
    ImageSet,
    Outputs,
    ThresholdSets,
    basis_statistics,
    bundle_holdout,
    good_set,
    labelled_metrics,
    labelled_set,
    run_model,
    split_source,
    synthetic_metrics,
    synthetic_set,
    threshold_sets,
    threshold_sigmas,
)

from .calibration_data import (
    DEFAULT_COUNT,
    MIN_IMAGES,
    CalibrationReader,
    CalibSource,
    ModelInfo,
    calibration_images,
    model_info,
)
from .choice import (
    DEFAULT_GOOD_TOLERANCE,
    DEFAULT_TOLERANCE,
    SAME_SPEED,
    auroc_losses,
    choose_candidate,
    choose_on_synthetic,
    choose_without_labels,
    output_deviation,
    within_good_tolerance,
)
from .graph_parts import check_choice, int8_mac_fraction
from .int8_writer import quantize_model, write_model
from .ranges import METHODS, TARGETS, Calibration

__all__ = [
    "Measurement",
    "evaluation_samples",
    "measure",
    "measure_recipes",
    "score_deviation",
    "selection_sets",
]


def evaluation_samples(eval_data: str | os.PathLike[str] | None, fp32_onnx: str | os.PathLike[str]) -> list[Sample]:
    """A labelled test split (for benchmarks that report accuracy): ``eval_data`` (a category folder), else the
    test split of the category the bundle holding ``fp32_onnx`` was trained on. The recipe choice never
    uses this default: it reads labels only from an explicit ``eval_data`` (see :func:`measure_recipes`)."""
    if eval_data is None:
        bundle = Path(fp32_onnx).parent
        if not (bundle / CONFIG_NAME).is_file():
            raise ValueError(f"{fp32_onnx} is not inside a bundle; pass eval_data (a category folder with test/)")
        eval_data = read_bundle(bundle, verify_weights=False).training.get("data")
        if not eval_data:
            raise ValueError(f"bundle {bundle} does not record its data folder; pass eval_data")
    return test_samples(eval_data, require_masks=True)


def _evaluate(path: Path, samples: Sequence[Sample], batch_size: int = 8) -> tuple[Scored, dict[str, dict[str, float]]]:
    """Score a labelled split with an exported model (benchmarks; the calibration stage reads its sets once)."""
    runtime = OnnxRuntime(path, device="cpu")
    scored = score_samples(runtime, samples, runtime.preprocessing, batch_size=batch_size)
    return scored, metrics_by_defect(scored)


def score_deviation(fp32: Scored, int8: Scored) -> dict[str, float]:
    """:func:`~.choice.output_deviation` of two scored splits."""
    return output_deviation(fp32.image_scores, fp32.maps, int8.image_scores, int8.maps)


@dataclass
class Measurement:
    """What :func:`measure` found: the JSON-friendly ``result``, the chosen candidate (its quantized file kept in a
    temporary folder until :meth:`cleanup`), the reference's outputs and the sets measured on."""

    result: dict[str, Any]
    calibration: Calibration
    selection: ImageSet
    labelled: ImageSet | None
    chosen: dict[str, Any]
    chosen_path: Path
    chosen_recipe: dict[str, Any]
    chosen_metrics: dict[str, dict[str, float]] | None
    fp32_stats: dict[str, Any]
    fp32_metrics: dict[str, dict[str, float]] | None
    _tmp: tempfile.TemporaryDirectory[str]

    def cleanup(self, calibration: bool = True) -> None:
        self._tmp.cleanup()
        if calibration:
            self.calibration.cleanup()


def selection_sets(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    eval_data: str | os.PathLike[str] | None = None,
    *,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    model: ModelInfo | None = None,
) -> tuple[Calibration, ImageSet, ImageSet | None, float]:
    """Calibration statistics and the sets to choose on, each read once: ``(calibration, held-out good images,
    labelled --eval-data set or None, k of the threshold rule)``. Calibration never sees the held-out images.

    Without ``eval_data``, the held-out set carries the bundle's synthetic anomalies (``anomalies``) when it
    describes a synthetic validation set, else ``note`` says why not.
    """
    fp32_path = Path(fp32_onnx)
    info_model = model_info(model if model is not None else fp32_path)
    bundle_dir = fp32_path.parent
    bundle = read_bundle(bundle_dir, verify_weights=False) if (bundle_dir / CONFIG_NAME).is_file() else None
    held = bundle_holdout(bundle) if bundle is not None else None
    basis = threshold_basis(bundle, threshold_sigmas(bundle)) if bundle is not None else None  # gone: refused now
    if held is not None:
        kind, folder, paths = held
        exclude = [*(paths if kind == HOLDOUT else []), *(basis.paths if basis is not None else [])]
        if isinstance(calib_source, (Calibration, CalibrationReader)):  # made by the caller: check, do not redo
            given = calib_source.reader_info if isinstance(calib_source, Calibration) else calib_source.describe()
            overlap = {p.name for p in exclude} & set(given["names"])
            if overlap and Path(given["folder"]).resolve() == Path(folder).resolve():
                raise ValueError(
                    f"the calibration images include {len(overlap)} of the bundle's held-out good images "
                    f"(e.g. {sorted(overlap)[0]}), which choose the recipe and set the INT8 threshold"
                )
        if isinstance(calib_source, Calibration):
            calibration = calib_source
        else:
            reader = (
                calib_source
                if isinstance(calib_source, CalibrationReader)
                else CalibrationReader(info_model, calib_source, count=count, seed=seed, exclude=exclude)
            )
            calibration = Calibration(fp32_path, reader)
    else:
        if isinstance(calib_source, (Calibration, CalibrationReader)):
            raise ValueError(
                f"{fp32_path}: no bundle with held-out good images beside it; pass the calibration images as a "
                "folder or a file list, so that a share of them can be held out to choose the recipe"
            )
        folder, candidates = calibration_images(calib_source, fp32_path)
        rest, paths = split_source(candidates, seed, MIN_IMAGES)
        kind = "calibration-source images held out (the bundle records no held-out good images)"
        calibration = Calibration(fp32_path, CalibrationReader(info_model, rest, count=count, seed=seed))
    try:
        selection = good_set(paths, info_model.preprocessing, kind, folder)
        labelled = labelled_set(eval_data, info_model.preprocessing) if eval_data is not None else None
        if labelled is None:
            selection.anomalies, selection.note = synthetic_set(bundle, selection, info_model.preprocessing)
        if basis is not None:
            selection.threshold = threshold_sets(basis, info_model.preprocessing, reuse=selection)
        sigmas = threshold_sigmas(bundle)
    except BaseException:
        if calibration is not calib_source:
            calibration.cleanup()
        raise
    return calibration, selection, labelled, sigmas


def _score_stats(stats: dict[str, Any], selection: ImageSet, who: str, fp32_threshold: float) -> dict[str, Any]:
    """Good-image statistics as an artifact's ``score_stats``, saying where its threshold comes from."""
    tsets = selection.threshold
    where = f"{selection.kind}: {len(selection.paths)} in {selection.folder}"
    where = tsets.basis.summary() if tsets is not None else where
    return {**stats, "threshold_source": f"{where}, {who}", "fp32_threshold": fp32_threshold}


def _threshold_extra(selection: ImageSet, sets: list[ImageSet]) -> list[ImageSet]:
    """The sets behind the bundle's threshold that are not run already (none when they are the selection set)."""
    tsets = selection.threshold
    return [s for s in tsets.sets if all(s is not t for t in sets)] if tsets is not None else []


def _own_stats(selection: ImageSet, sets: list[ImageSet], outs: list[Outputs]) -> dict[str, Any]:
    """One model's own threshold statistics: the bundle's rule on its outputs on the threshold sets (see
    :func:`~.selection.basis_statistics`), else good-sigma on the selection set (a bundle with no images recorded)."""
    tsets: ThresholdSets | None = selection.threshold
    if tsets is None:
        assert outs[0].stats is not None
        return outs[0].stats
    index = {id(s): i for i, s in enumerate(sets)}
    anomalies = outs[index[id(tsets.anomalies)]] if tsets.anomalies is not None else None
    return basis_statistics(tsets, outs[index[id(tsets.good)]], anomalies)


def _rule(labelled: bool, synthetic: ImageSet | None, note: str, tolerance: float) -> str:
    speed = f"then the highest INT8 share of MACs (within {SAME_SPEED:g})"
    if labelled:
        return (
            f"labels of --eval-data: image and pixel AUROC loss <= {tolerance:g}; {speed}; then the smallest "
            "relative change of image scores + maps"
        )
    if synthetic is not None:
        return (
            f"{synthetic.summary()}: image and pixel AUROC loss against fp32 <= {tolerance:g}; {speed}; then the "
            "smallest change of image scores + maps on the held-out good images"
        )
    return (
        f"no labels{f' ({note})' if note else ''}: on the held-out good images, mean change of image scores and of "
        f"maps <= {tolerance:g} of the fp32 maps' range; {speed}; then the smallest sum of the two changes"
    )


def measure(
    fp32_onnx: str | os.PathLike[str],
    calibration: Calibration,
    selection: ImageSet,
    labelled: ImageSet | None = None,
    *,
    methods: Sequence[str] = METHODS,
    recipes: Sequence[str] | None = None,
    tolerance: float | None = None,
    target: str = "tensorrt",
    sigmas: float = 3.0,
    batch_size: int = 8,
) -> Measurement:
    """Quantize every (method, recipe) pair once, run each once on the sets, and choose one.

    Each candidate's outputs on the held-out good images give its own threshold (the bundle's rule,
    :func:`edge_ad.thresholds.rules.good_statistics`) and its closeness to fp32; on a labelled set
    (only when given)
    its metrics, else on the synthetic anomalies (``selection.anomalies``, when there) its synthetic AUROCs. The
    choice follows the data (see the module docstring). Nothing is evaluated twice.
    """
    declared = tuple(calibration.layout.recipes)  # the family's own recipes (None: all of them)
    recipes = declared if recipes is None else tuple(recipes)
    if not methods or not recipes:
        raise ValueError("measure_recipes needs at least one method and one recipe")
    for m in methods:
        check_choice("calibration method", m, METHODS)
    for r in recipes:
        check_choice("INT8 recipe", r, declared)
    check_choice("INT8 target", target, TARGETS)
    synthetic = selection.anomalies if labelled is None else None
    tolerance_given = tolerance
    if tolerance is None:
        tolerance = DEFAULT_GOOD_TOLERANCE if labelled is None and synthetic is None else DEFAULT_TOLERANCE
    fp32_path = Path(fp32_onnx)
    fp32_threshold = float(calibration.metadata["threshold"])
    sets = [selection] + ([labelled] if labelled is not None else []) + ([synthetic] if synthetic is not None else [])
    sets += _threshold_extra(selection, sets)
    fp32_out = run_model(OnnxRuntime(fp32_path, device="cpu"), sets, "evaluate fp32 (reference)", sigmas, batch_size)
    fp32_metrics = labelled_metrics(labelled, fp32_out[1]) if labelled is not None else None
    fp32_synthetic = synthetic_metrics(fp32_out[0], fp32_out[1], synthetic) if synthetic is not None else None
    synthetic_note = ""
    if fp32_synthetic is not None and not separates(fp32_synthetic["image_auroc"], fp32_synthetic["pixel_auroc"]):
        # the fp32 model does not tell these anomalies from good images: a recipe chosen on them is chosen on noise
        figures = {"fp32 image AUROC": fp32_synthetic["image_auroc"], "pixel AUROC": fp32_synthetic["pixel_auroc"]}
        synthetic_note = no_separation_line(
            "INT8 recipe", figures, "chosen without labels on the held-out good images (the default rule)"
        )
        console.log(synthetic_note)
        synthetic = None
        if tolerance_given is None:
            tolerance = DEFAULT_GOOD_TOLERANCE
    pairs = [(m, r) for m in methods for r in recipes]
    tmp = tempfile.TemporaryDirectory(prefix="edge-ad-int8-measure-")
    candidates: list[dict[str, Any]] = []
    kept: list[tuple[Path, dict[str, Any], dict[str, dict[str, float]] | None]] = []
    try:
        for index, (method, recipe) in enumerate(pairs, 1):
            path = Path(tmp.name) / f"{method}.{recipe}.onnx"
            model, recipe_meta = quantize_model(calibration, method, recipe, target)
            mac_fraction = int8_mac_fraction(model, calibration.macs)
            write_model(model, path)
            del model
            label = f"evaluate int8 {method}/{recipe} ({index}/{len(pairs)})"
            out = run_model(OnnxRuntime(path, device="cpu"), sets, label, sigmas, batch_size)
            own = _own_stats(selection, sets, out)
            good_dev = output_deviation(fp32_out[0].scores, fp32_out[0].maps, out[0].scores, out[0].maps)
            candidate: dict[str, Any] = {
                "method": method,
                "recipe": recipe,
                "threshold": own["image"]["threshold"],
                "score_stats": _score_stats(
                    own, selection, f"scored by this INT8 model ({method}/{recipe})", fp32_threshold
                ),
                "good_deviation": good_dev,
                "int8_mac_fraction": mac_fraction,
            }
            metrics = None
            if labelled is not None and fp32_metrics is not None:
                metrics = labelled_metrics(labelled, out[1])
                loss = auroc_losses(fp32_metrics["overall"], metrics["overall"])
                candidate.update(
                    metrics=metrics["overall"],
                    loss=loss,
                    deviation=output_deviation(fp32_out[1].scores, fp32_out[1].maps, out[1].scores, out[1].maps),
                    within_tolerance=_within(loss, tolerance),
                )
            elif synthetic is not None and fp32_synthetic is not None:
                figures = synthetic_metrics(out[0], out[1], synthetic)
                loss = auroc_losses(fp32_synthetic, figures)
                within = _within(loss, tolerance)
                candidate.update(synthetic=figures, synthetic_loss=loss, deviation=good_dev, within_tolerance=within)
            else:
                candidate.update(deviation=good_dev, within_tolerance=within_good_tolerance(good_dev, tolerance))
            candidates.append(candidate)
            kept.append((path, recipe_meta, metrics))
        if labelled is not None:
            chosen = choose_candidate(candidates, tolerance)
        elif synthetic is not None:
            chosen = choose_on_synthetic(candidates, tolerance)
        else:
            chosen = choose_without_labels(candidates, tolerance)
    except BaseException:
        tmp.cleanup()
        raise
    chosen_index = candidates.index(chosen)
    for index, (path, _, _) in enumerate(kept):
        if index != chosen_index:
            path.unlink(missing_ok=True)
    fp32_own = _own_stats(selection, sets, fp32_out)
    fp32_stats = _score_stats(fp32_own, selection, "scored by the fp32 ONNX model", fp32_threshold)
    result = {
        "selection": {k: v for k, v in selection.describe().items()},
        "selection_data": (labelled or synthetic or selection).summary(),
        "selection_note": synthetic_note or (selection.note if labelled is None and synthetic is None else ""),
        "labels_used": labelled is not None,
        "fp32": fp32_metrics["overall"] if fp32_metrics is not None else None,
        "fp32_synthetic": fp32_synthetic,
        "synthetic": synthetic.describe() if synthetic is not None else None,
        "fp32_threshold": {
            "bundle": fp32_threshold,
            "onnx": fp32_stats["image"]["threshold"],
        },
        "threshold_basis": selection.threshold.basis.describe() if selection.threshold is not None else None,
        "candidates": candidates,
        "chosen": {k: chosen[k] for k in ("method", "recipe", "within_tolerance")},
        "rule": _rule(labelled is not None, synthetic, synthetic_note or selection.note, tolerance),
        "tolerance": tolerance,
        "target": target,
        "eval": {k: v for k, v in labelled.describe().items() if k != "names"} if labelled is not None else None,
        "calibration": {k: v for k, v in calibration.reader_info.items() if k != "names"},
        "evaluations": {"fp32": 1, "candidates": len(pairs), "images_per_run": sum(len(s.data) for s in sets)},
    }
    path, recipe_meta, metrics = kept[chosen_index]
    return Measurement(
        result, calibration, selection, labelled, chosen, path, recipe_meta, metrics, fp32_stats, fp32_metrics, tmp
    )


def _within(loss: dict[str, float], tolerance: float) -> bool:
    return all(loss.get(k, 0.0) <= tolerance + 1e-12 for k in ("image_auroc", "pixel_auroc"))


def measure_recipes(
    fp32_onnx: str | os.PathLike[str],
    calib_source: CalibSource | CalibrationReader | Calibration = None,
    eval_data: str | os.PathLike[str] | None = None,
    *,
    methods: Sequence[str] = METHODS,
    recipes: Sequence[str] | None = None,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    tolerance: float | None = None,
    target: str = "tensorrt",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Quantize every (method, recipe) pair, measure each against fp32 and choose one (see :func:`measure`).

    The result's ``selection_data``/``labels_used`` say what the choice was made on: ``eval_data``'s labels, the
    bundle's synthetic validation set, or the held-out good images alone (``selection_note``: why).
    """
    calibration, selection, labelled, sigmas = selection_sets(
        fp32_onnx, calib_source, eval_data, count=count, seed=seed
    )
    try:
        measured = measure(
            fp32_onnx,
            calibration,
            selection,
            labelled,
            methods=methods,
            recipes=recipes,
            tolerance=tolerance,
            target=target,
            sigmas=sigmas,
            batch_size=batch_size,
        )
        measured.cleanup(calibration=False)
        return measured.result
    finally:
        if calibration is not calib_source:
            calibration.cleanup()
