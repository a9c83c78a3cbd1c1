"""The one export entry: ``export(model, format, precision, ...)`` -> ONNX (fp32 / fp16 / calibrated INT8), a
TensorRT engine (built, adopted from trtexec, or its trtexec line), a Triton model repository or a DeepStream config.

``edge-ad export`` is a thin shell over :func:`export`; what to print goes through ``say`` (plain lines) and ``warn``
(notices), so the library decides and the CLI only shows. The engine and serving branches are torch-free (they run
on the target, where torch may be missing); the ONNX export itself needs the ``train`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_ad.artifacts import artifact_path

__all__ = ["FORMATS", "ExportResult", "export", "export_engine", "export_serving"]

FORMATS = ("onnx", "engine", "triton", "deepstream")

Say = Callable[[str], object]


def _quiet(_: str) -> None:
    return None


@dataclass
class ExportResult:
    """What an export wrote: ``path`` (the ONNX, engine, Triton model folder or DeepStream config) and, for INT8, the
    calibration ``report``; ``onnx`` the ONNX the engine or repository was made from, when there is one."""

    format: str
    precision: str
    path: Path | None
    onnx: Path | None = None
    report: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def export(
    model: str | Path,
    format: str = "onnx",
    precision: str = "fp32",
    *,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    max_batch: int = 8,
    workspace_mib: int = 1024,
    dry_run: bool = False,
    from_trtexec: Path | None = None,
    dla: int | None = None,
    head: str = "graph",
    verify_count: int = 8,
    calib_data: Path | None = None,
    eval_data: Path | None = None,
    calib_method: str | None = None,
    calib_count: int = 128,
    int8_target: str = "tensorrt",
    out_dir: Path | None = None,
    python_backend: bool = False,
    say: Say = _quiet,
    warn: Say = _quiet,
) -> ExportResult:
    """Export ``model`` (a bundle folder; for ``engine``, also an exported ``.onnx``) to ``format``.

    ``onnx``: the fused inference graph at ``precision`` (``int8``: calibrated Q/DQ, the recipe chosen on good images,
    see :func:`edge_ad.calibration.calibrate`). ``engine``: a TensorRT engine from the bundle's ONNX of that precision
    (exported first when missing), verified against onnxruntime on ``verify_count`` good images. ``triton`` /
    ``deepstream``: written to ``out_dir``. Bad input raises ``ValueError`` (one line).
    """
    model = Path(model)
    if format in ("triton", "deepstream"):
        path = export_serving(model, format, out_dir, precision, batch_size, max_batch, python_backend, say=say)
        return ExportResult(format, precision, path)
    if format not in ("onnx", "engine"):
        raise ValueError(f"--format must be onnx, engine, triton or deepstream, not {format!r}")
    onnx_path = model if model.suffix == ".onnx" else artifact_path(model, precision)
    needs_onnx = model.suffix != ".onnx" and (format == "onnx" or not onnx_path.exists())
    report = None
    if needs_onnx and precision == "int8":
        report = _calibrated(model, calib_data, eval_data, calib_method, calib_count, int8_target, say)
        onnx_path = Path(report["models"]["int8"])
    elif needs_onnx:
        from edge_ad.export.onnx_export import export_onnx_checked

        result = export_onnx_checked(model, precision=precision, batch_size=batch_size, dynamic_batch=dynamic_batch)
        onnx_path = result.path
        say(f"onnx: {onnx_path}")
        for line in result.summary():
            say(line)
    if format == "onnx":
        return ExportResult(format, precision, onnx_path, onnx_path, report)
    engine = export_engine(
        onnx_path,
        precision,
        dynamic_batch=dynamic_batch,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        dry_run=dry_run,
        from_trtexec=from_trtexec,
        dla=dla,
        head=head,
        verify_count=verify_count,
        calib_data=calib_data,
        say=say,
        warn=warn,
    )
    return ExportResult(format, precision, engine, onnx_path, report)


def _calibrated(
    model: Path,
    calib_data: Path | None,
    eval_data: Path | None,
    method: str | None,
    count: int,
    target: str,
    say: Say,
) -> dict[str, Any]:
    """The INT8 ONNX by :func:`edge_ad.calibration.calibrate`, with the fp32 export it starts from when missing."""
    from edge_ad.calibration import calibrate

    def export_fp32(bundle: Path, out: Path) -> Path:
        from edge_ad.export.onnx_export import export_onnx  # needs torch: only when the fp32 export is missing

        return export_onnx(bundle, out)

    report = calibrate(model, calib_data, eval_data, method, count, target=target, export_fp32=export_fp32)
    onnx_path = Path(report["models"]["int8"])
    reports = onnx_path.parent / "calibration_report"
    say(f"onnx: {onnx_path}  (report: {reports}.md; for machines: {reports}.json)")
    th = report["threshold"]
    say(f"recipe: {report['method']} / {report['recipe']}, chosen on {report['selection']['summary']}")
    say(f"threshold: fp32 {th['fp32']:.6g} -> int8 {th['int8']:.6g} (from its own good-image scores)")
    return report


def export_serving(
    model: Path,
    fmt: str,
    out_dir: Path | None,
    precision: str,
    batch_size: int,
    max_batch: int,
    python_backend: bool,
    *,
    say: Say = _quiet,
) -> Path:
    """`export --format triton|deepstream`: a Triton model repository, or an nvinfer config with a normalising ONNX."""
    if out_dir is None:
        what = "model repository" if fmt == "triton" else "folder"
        raise ValueError(f"--format {fmt} needs --out: the {what} to write")
    if fmt == "triton":
        from edge_ad.export.triton import write_triton_repository

        engine = None if model.suffix == ".onnx" else artifact_path(model, precision, "engine")
        engine = engine if engine is not None and engine.is_file() and not python_backend else None
        result = write_triton_repository(
            model, out_dir, precision=precision, max_batch=max_batch, python_backend=python_backend, engine=engine
        )
        say(f"triton model: {result.model_dir} ({result.kind}; config {result.config})")
        return Path(result.model_dir)
    from edge_ad.export.deepstream_config import write_deepstream

    ds = write_deepstream(model, out_dir, precision=precision, batch_size=batch_size)
    say(f"deepstream: {ds.config} (onnx {ds.onnx}; nvinfer builds {ds.engine}; probe example anomaly_probe.py)")
    return Path(ds.config)


def export_engine(
    onnx_path: Path,
    precision: str,
    *,
    dynamic_batch: bool,
    max_batch: int,
    workspace_mib: int,
    dry_run: bool,
    from_trtexec: Path | None,
    dla: int | None,
    head: str,
    verify_count: int,
    calib_data: Path | None,
    say: Say = _quiet,
    warn: Say = _quiet,
) -> Path | None:
    """`export --format engine`: build (or adopt a trtexec engine, or print the trtexec line), then verify."""
    import importlib.util

    from edge_ad.artifacts import sidecar_path
    from edge_ad.export.tensorrt_builder import adopt_engine, build_engine
    from edge_ad.export.tensorrt_options import BuildOptions, edge_ad_onnx, engine_path_for, trtexec_command
    from edge_ad.runtimes.tensorrt_engine import TensorRTUnavailable, import_tensorrt

    info = edge_ad_onnx(onnx_path)  # a text/truncated/foreign ONNX is one line here, not a traceback
    if head == "cuda":  # the kernel computes the max: refused for a family that declares another image score
        from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of

        check_cuda_postprocess(image_score_of(info.metadata, str(onnx_path)), str(onnx_path))
    dynamic = info.static_batch is None
    options = BuildOptions(
        precision=precision,
        workspace_mib=workspace_mib,
        max_batch=max_batch if dynamic else 1,
        timing_cache=onnx_path.with_suffix(".timing.cache"),
        dynamic=True if dynamic_batch else None,
        dla_core=dla,
        head=head,
    )
    if dry_run:
        version = None
        if importlib.util.find_spec("tensorrt") is not None:
            version = import_tensorrt().__version__
        say(trtexec_command(info, options, version))
        if version is None:
            warn("TensorRT is not installed here: the line is for TensorRT 10.x (JetPack 6)")
        adopt = f"--from-trtexec {engine_path_for(onnx_path, precision)}"
        say(f"then: edge-ad export {onnx_path} --format engine --precision {precision} {adopt}")
        return None
    try:
        if from_trtexec is not None:
            adopt_engine(onnx_path, from_trtexec, precision)
            engine = from_trtexec
        else:
            engine = build_engine(onnx_path, options=options)
    except TensorRTUnavailable as exc:
        raise ValueError(str(exc)) from None
    say(f"engine: {engine} (sidecar {sidecar_path(engine)})")
    if verify_count > 0:
        from edge_ad.export.tensorrt_verify import verification_images, verify_engine

        images, source = verification_images(info, calib_data, verify_count)
        try:
            result = verify_engine(engine, onnx_path, images, source)
        except RuntimeError as exc:  # e.g. no CUDA buffer layer on the build machine: the engine stands
            warn(f"engine built but not verified: {exc}")
            return Path(engine)
        say(
            f"verified against onnxruntime on {source}: max |score diff| {result['max_abs_score_diff']:.3g}, "
            f"max |map diff| {result['max_abs_map_diff']:.3g} ({result['max_map_diff_of_range']:.2%} of the map range)"
        )
        if not result["within_tolerance"]:
            limit = f"{result['tolerance_of_range']:.1%}"
            warn(f"beyond the {limit} tolerance for {precision}: check the engine before deploying it")
    return Path(engine)
