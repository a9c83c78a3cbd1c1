"""The ``edge-ad`` command: thin typer shells over library functions that the tests call directly.

Each command prints a rich table for people and writes JSON beside it for machines; bad input ends in one
clear line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from edge_ad import __version__
from edge_ad.cli.bench import bench_table
from edge_ad.cli.data import demo_data, synth
from edge_ad.cli.help import PlainHelpGroup
from edge_ad.cli.output import UserError, err, friendly, metrics_table, out
from edge_ad.cli.train import with_family_options
from edge_ad.io import atomic_write_json
from edge_ad.models.families import FAMILIES

app = typer.Typer(
    cls=PlainHelpGroup,  # help shows MODEL, PATH, INTEGER: not Python type names
    add_completion=False,
    no_args_is_help=True,
    help="Anomaly detection trained on good parts only.",
)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"edge-ad {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """edge-ad: train SimpleNet on good images, evaluate, predict, export to ONNX/TensorRT."""


app.command("demo-data")(demo_data)
app.command()(synth)


@app.command()
@with_family_options
@friendly
def train(
    data: Path = typer.Argument(..., help="MVTec AD root, a category folder, or a folder of good images."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle folder to write."),
    category: str = typer.Option(None, "--category", help="Category under DATA (MVTec layout)."),
    image_size: int = typer.Option(224, help="Network input side (paper 224; authors' MVTec script 288)."),
    resize: int = typer.Option(256, help="Shorter side before the centre crop (paper 256; authors 329)."),
    no_crop: bool = typer.Option(False, help="Resize straight to image-size, no crop (texture categories)."),
    epochs: int = typer.Option(None, help="Passes over the training set (SimpleNet paper: 160; NSA: its preset's)."),
    batch_size: int = typer.Option(None, help="Images per step (SimpleNet: 8; NSA: its preset's)."),
    holdout: float = typer.Option(0.1, help="Share of good training images held out to set the threshold."),
    seed: int = typer.Option(0),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    resume: bool = typer.Option(
        False,
        help="Continue an interrupted run in the same --out; a larger --epochs extends it (same result as one run "
        "of that length). Other settings must match.",
    ),
    keep_checkpoint: bool = typer.Option(
        False, help="Keep --out/.training after training, so a later --resume --epochs N can extend the run."
    ),
    model: str = typer.Option("simplenet", "--model", help=f"Model family: {', '.join(FAMILIES)}."),
    kind: str = typer.Option(
        None, help="object or texture, for a category the NSA table does not know (NSA training; synthetic validation)."
    ),
    select: str = typer.Option(
        "final", help="Weights to keep: final, or synthetic (the epoch with the best synthetic validation AUROCs)."
    ),
    synthetic_per_image: int = typer.Option(
        3, help="NSA anomalies per held-out good image for synthetic validation each epoch (0: no validation)."
    ),
    **family_values: Any,
) -> None:
    """Train a model family (SimpleNet by default) on good images and write a model bundle."""
    from edge_ad.cli.train import family_options, run_train

    run_train(
        data,
        out_dir,
        model=model,
        category=category,
        image_size=image_size,
        resize=resize,
        no_crop=no_crop,
        device=device or _default_device(),
        resume=resume,
        keep_checkpoint=keep_checkpoint,
        common={
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "holdout_fraction": holdout,
            "kind": kind,
            "select": select,
            "synthetic_per_image": synthetic_per_image,
        },
        family_options=family_options(family_values),
    )
    out.print(f"model bundle: {out_dir}")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@app.command("eval")
@friendly
def eval_cmd(
    model: Path = typer.Argument(..., help="Bundle folder or exported .onnx model."),
    data: Path = typer.Argument(..., help="MVTec AD root or category folder with test/ and ground_truth/."),
    category: str = typer.Option(None, "--category"),
    backend: str = typer.Option("auto", help="torch, onnxruntime, tensorrt, or auto."),
    device: str = typer.Option("cpu"),
    precision: str = typer.Option("fp32"),
    json_out: Path = typer.Option(None, "--json", help="Report path (default: MODEL/eval.json for bundles)."),
) -> None:
    """Image AUROC, pixel AUROC, AUPRO and F1-max, overall and per defect type."""
    from edge_ad.evaluation.evaluate import evaluate_model

    report = evaluate_model(model, data, category, backend=backend, device=device, precision=precision)
    out.print(metrics_table(f"{report['data']} ({report['backend']} {report['precision']})", report["metrics"]))
    target = json_out or (model / "eval.json" if model.is_dir() else model.with_suffix(".eval.json"))
    atomic_write_json(target, report)
    out.print(f"report: {target}")


@app.command()
@friendly
def predict(
    model: Path = typer.Argument(..., help="Bundle folder or exported .onnx model."),
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    out_dir: Path = typer.Option(
        Path("predictions"), "--out", "-o", help="Each run writes overlays and records into its own OUT/run-<time>/."
    ),
    backend: str = typer.Option("auto", help="torch, onnxruntime, tensorrt, or auto (by file type)."),
    device: str = typer.Option("cpu"),
    precision: str = typer.Option("fp32"),
    overlays: bool = typer.Option(True, help="Write a heat-map overlay PNG per image."),
) -> None:
    """Score images: verdict against the stored threshold, overlay PNGs, predictions.jsonl (in OUT/run-<time>/).

    Inputs the input gate refuses (blank frames, too small, too many pixels) get an error record, never a verdict.
    """
    from edge_ad.detector import Detector, Failure, expand_inputs
    from edge_ad.results import append_jsonl, new_run_dir, write_overlay

    items = expand_inputs(images)
    if not any(isinstance(item, Path) for item in items):
        raise UserError("nothing to score: " + "; ".join(item.error for item in items if isinstance(item, Failure)))
    det = Detector.load(model, backend=backend, device=device, precision=precision)
    run_dir = new_run_dir(out_dir)
    records = run_dir / "predictions.jsonl"
    table = Table(title=f"predictions (threshold {det.threshold:.4f})")
    for col in ("image", "score", "verdict"):
        table.add_column(col)
    failures = 0
    with open(records, "w") as fh:
        for i, result in enumerate(det.predict_paths(items)):
            if isinstance(result, Failure):
                failures += 1
                err.print(f"[red]{'rejected' if result.rejected else 'skipped'}[/] {result.error}")
                append_jsonl(fh, {"source": result.source, "error": result.error, "rejected": result.rejected})
                continue
            extra = {}
            if overlays:
                name = f"{i:05d}_{Path(result.source).stem}.png"
                extra["overlay"] = str(write_overlay(run_dir / name, result, det.heat_levels))
            append_jsonl(fh, result.record(**extra))
            style = "red" if result.is_anomalous else "green"
            table.add_row(result.source, f"{result.image_score:.4f}", f"[{style}]{result.verdict}[/]")
    out.print(table)
    out.print(f"records: {records}")
    if failures:
        err.print(f"[yellow]{failures} input(s) not scored (unreadable, not an image, or refused by the input gate)[/]")
        raise typer.Exit(1)


@app.command("import-simplenet")
@friendly
def import_simplenet(
    ckpt: Path = typer.Argument(..., help="ckpt.pth written by the SimpleNet authors' code."),
    backbone_weights: Path = typer.Option(..., help="The WideResNet50-2 weights the checkpoint was trained with."),
    out_dir: Path = typer.Option(..., "--out", "-o"),
    image_size: int = typer.Option(288, help="Authors' MVTec script: 288 (paper: 224)."),
    resize: int = typer.Option(
        None, help="Shorter side before the centre crop (default: image-size * 256/224: 224 -> 256, 288 -> 329)."
    ),
    no_crop: bool = typer.Option(False, help="Resize straight to image-size, no crop."),
    good_images: Path = typer.Option(None, help="Folder of good images to set the verdict threshold from."),
    bn_drift: bool = typer.Option(
        True,
        help="Repeat the authors' one train-mode forward of a ones image through the backbone (it moves every "
        "BatchNorm's statistics; their checkpoint was trained and scored that way). Off: the weights file as is.",
    ),
) -> None:
    """Make an edge-ad bundle from a checkpoint trained with the authors' code."""
    from edge_ad.models.simplenet.import_checkpoint import default_resize, import_checkpoint

    if no_crop and resize is not None:
        raise UserError("--no-crop resizes straight to --image-size: do not pass --resize with it")
    crop_from = None if no_crop else (resize if resize is not None else default_resize(image_size))
    if crop_from is not None and crop_from < image_size:
        raise UserError(
            f"--resize ({crop_from}) must be >= --image-size ({image_size}) so the centre crop fits; "
            "pass --no-crop to resize straight to --image-size"
        )
    import_checkpoint(
        ckpt,
        backbone_weights,
        out_dir,
        image_size=image_size,
        resize=crop_from,
        good_images=good_images,
        bn_drift=bn_drift,
    )
    out.print(f"model bundle: {out_dir}")
    if good_images is None:
        err.print("[yellow]no --good-images: the bundle has no verdict threshold (every image is 'good')[/]")


@app.command()
@friendly
def export(
    model: Path = typer.Argument(..., help="Bundle folder (or, for --format engine, an exported .onnx)."),
    precision: str = typer.Option("fp32", help="fp32, fp16, or int8 (calibrated Q/DQ from good images)."),
    fmt: str = typer.Option(
        "onnx", "--format", help="onnx, engine (TensorRT; build on the target GPU), triton (model repository) or "
        "deepstream (nvinfer config + normalising ONNX)."
    ),
    batch_size: int = typer.Option(1, help="Static batch size of the graph."),
    dynamic_batch: bool = typer.Option(False, help="Dynamic batch axis (engine: profile 1..--max-batch)."),
    max_batch: int = typer.Option(8, help="Largest batch of the engine's optimisation profile (dynamic batch)."),
    workspace_mib: int = typer.Option(1024, help="TensorRT workspace memory pool limit."),
    dry_run: bool = typer.Option(False, help="With --format engine: print the trtexec line instead of building."),
    from_trtexec: Path = typer.Option(None, help="With --format engine: adopt this trtexec-built engine (sidecar)."),
    dla: int = typer.Option(None, help="With --format engine: build for DLA core 0 or 1 (GPU fallback)."),
    head: str = typer.Option("graph", help="With --format engine: graph, or cuda (engine stops at patch scores)."),
    verify_count: int = typer.Option(8, help="With --format engine: good images to compare against onnxruntime."),
    calib_data: Path = typer.Option(None, help="INT8: good images to calibrate on (default: the bundle's own)."),
    eval_data: Path = typer.Option(None, help="INT8: labelled category folder to choose on (default: no labels)."),
    calib_method: str = typer.Option(None, help="INT8: entropy, percentile or minmax (default: by measurement)."),
    calib_count: int = typer.Option(128, help="INT8: number of calibration images."),
    int8_target: str = typer.Option("tensorrt", help="INT8 Q/DQ placement: tensorrt, or cpu (onnxruntime only)."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="With --format triton|deepstream: the folder to write."),
    python_backend: bool = typer.Option(
        False, help="With --format triton: a Python-backend model running the ONNX in onnxruntime (CPU servers)."
    ),
) -> None:
    """Export the fused inference graph to ONNX (fp32/fp16/int8), build a TensorRT engine from it, or write a Triton
    model repository / DeepStream nvinfer config (--format triton|deepstream)."""
    from edge_ad.artifacts import ArtifactCheckError
    from edge_ad.export.entry import export as run_export

    try:
        run_export(
            model,
            fmt,
            precision,
            batch_size=batch_size,
            dynamic_batch=dynamic_batch,
            max_batch=max_batch,
            workspace_mib=workspace_mib,
            dry_run=dry_run,
            from_trtexec=from_trtexec,
            dla=dla,
            head=head,
            verify_count=verify_count,
            calib_data=calib_data,
            eval_data=eval_data,
            calib_method=calib_method,
            calib_count=calib_count,
            int8_target=int8_target,
            out_dir=out_dir,
            python_backend=python_backend,
            say=lambda line: out.print(line, soft_wrap=True, markup=False),
            warn=lambda line: err.print(f"[yellow]{escape(line)}[/]"),
        )
    except ArtifactCheckError as exc:  # a check failed and nothing was written: one line, not a dump
        err.print(f"[bold red]error:[/] export failed, nothing written: {escape(str(exc))}")
        raise typer.Exit(1) from None


@app.command()
@friendly
def bench(
    target: Path = typer.Argument(..., help="Bundle folder (its exported models are used too) or an .onnx/.engine."),
    backend: str = typer.Option(
        None, help="torch, onnxruntime, tensorrt, torch-tensorrt, all, or a comma list (default: torch for a bundle; "
        "an .onnx runs on onnxruntime, an .engine on tensorrt)."
    ),
    precision: str = typer.Option(
        None, help="fp32, fp16, int8, or a comma list (default: fp32 for a bundle; a file's own precision)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    postprocess: str = typer.Option(
        "torch", help="Post-processing: torch (the graph's own head), cuda (the fused CUDA kernel), or a comma list."
    ),
    batch: str = typer.Option("1,8", help="Comma-separated batch sizes."),
    data: Path = typer.Option(None, help="Category folder: real images for timing, and AUROC per row."),
    warmup: int = typer.Option(2),
    iters: int = typer.Option(10),
    reference: bool = typer.Option(True, help="Also time the authors' inference path (the in-run baseline)."),
    json_out: Path = typer.Option(None, "--json", help="Report path (default: bench-<device>.json beside TARGET)."),
) -> None:
    """FPS and latency per backend/precision/batch, against the paper's 77 FPS and the in-run baseline. Each row
    names the backend, precision and file that ran; what this machine cannot run is listed as not available.
    "e2e img/s" is files -> scores and maps as predict/eval run them (the next batch decoded and preprocessed while
    the graph runs this one; wall clock over several batches); "e2e seq img/s" the same steps one after the other."""
    from edge_ad.bench.plan import resolve_options
    from edge_ad.bench.run import run_bench
    from edge_ad.bench.target import artifact_metadata

    postprocesses = [p.strip() for p in postprocess.split(",")]
    metadata = artifact_metadata(target) if target.is_file() else {}
    backends, precisions = resolve_options(
        target, backend, precision, device=device, postprocess=postprocesses, metadata=metadata
    )
    report = run_bench(
        target,
        backends=backends,
        precisions=precisions,
        device=device,
        batches=[int(b) for b in batch.split(",")],
        data=data,
        warmup=warmup,
        iters=iters,
        reference=reference,
        postprocesses=postprocesses,
    )
    table, notes = bench_table(report)
    out.print(table)
    for note in notes:
        out.print(note, soft_wrap=True)
    target_json = json_out or (target if target.is_dir() else target.parent) / f"bench-{device}.json"
    atomic_write_json(target_json, report)
    out.print(f"report: {target_json}")


@app.command()
@friendly
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """What this machine can run: GPU, CUDA, TensorRT, bindings, and which engine/serve setups will work."""
    from edge_ad.doctor import collect, render_lines

    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for line in render_lines(report):
        out.print(line, soft_wrap=True, markup=False, highlight=False)


@app.command()
@friendly
def demo(
    root: Path = typer.Argument(Path("edge-ad-demo"), help="Working folder for data, model and results."),
    category: str = typer.Option(None, help="Demo category (default: brushed_metal)."),
    model: str = typer.Option(
        "simplenet", "--model", help="simplenet (pretrained EfficientNet-Lite0), simplenet-random (random WRN50), nsa."
    ),
    epochs: int = typer.Option(None, help="Default: the family's short CPU schedule (SimpleNet 30, NSA 60)."),
    seed: int = typer.Option(0),
) -> None:
    """The main job end to end: demo data -> train (SimpleNet on pretrained Lite0, or NSA) -> eval -> predict."""
    from edge_ad.cli.demo import DEMO_RECIPES, run_demo

    recipe = DEMO_RECIPES.get(model)
    if recipe is None:
        raise UserError(f"unknown --model {model!r}; choose one of {', '.join(DEMO_RECIPES)}")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    err.print(f"[yellow]demo:[/] {escape(recipe.note)}")
    report = run_demo(root, category, model=model, epochs=epochs, seed=seed, device=_default_device())
    out.print(metrics_table(f"demo: {report['data']}", report["metrics"]))
    overall = report["metrics"]["overall"]
    out.print(f"image AUROC {overall['image_auroc']:.4f}  pixel AUROC {overall['pixel_auroc']:.4f}")
    test_dir = Path(report["data"]) / "test"
    sample = [sorted(d.glob("*.png"))[0] for d in sorted(test_dir.iterdir()) if d.is_dir()]
    predict.__wrapped__(Path(report["model"]), sample, root / "predictions", "torch", "cpu", "fp32", True)  # type: ignore[attr-defined]


from edge_ad.cli.serve import serve_command  # noqa: E402 - torch-free; the server is imported when it runs

app.command("serve")(serve_command)
from edge_ad.cli.sdas import sdas_app  # noqa: E402 - torch-free until a command runs

app.add_typer(sdas_app, name="sdas")


@app.command("threshold")
@friendly
def threshold_cmd(
    model: Path = typer.Argument(..., help="Bundle folder."),
    good_dir: Path = typer.Argument(..., help="Folder of new good images (e.g. after the line's lighting changed)."),
    rule: str = typer.Option("good-sigma", help="good-sigma (mean + k std of good scores) or synthetic-f1."),
    sigmas: float = typer.Option(None, help="k of good-sigma (default: as recorded at training)."),
    seed: int = typer.Option(None, help="synthetic-f1: seed of the synthetic set (default: the bundle's)."),
    kind: str = typer.Option(None, help="synthetic-f1: object or texture, for a category NSA does not know."),
    dry_run: bool = typer.Option(False, help="Compute and print; write nothing."),
    device: str = typer.Option("cpu"),
) -> None:
    """Re-derive the bundle's verdict threshold from new good images, without retraining; older exports of it are
    refused from then on (re-export them)."""
    from edge_ad.thresholds.rethreshold import result_lines, rethreshold

    options = {"rule": rule, "sigmas": sigmas, "seed": seed, "kind": kind, "dry_run": dry_run, "device": device}
    result = rethreshold(model, good_dir, **options)
    for line in result_lines(result):
        out.print(line, soft_wrap=True, markup=False, highlight=False)
    print(json.dumps({k: result[k] for k in ("old", "new", "images", "dry_run")}))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "json"]
