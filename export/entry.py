"""The engine and serving branches of ``edge-ad export``: TensorRT build/adopt/dry-run and verification, Triton
repository and DeepStream config. Torch-free: these run on the target, where torch may be missing.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from edge_ad.artifacts import artifact_path
from edge_ad.cli.output import UserError, err, out


def export_serving(
    model: Path, fmt: str, out_dir: Path | None, precision: str, batch_size: int, max_batch: int, python_backend: bool
) -> None:
    """`export --format triton|deepstream`: a Triton model repository, or an nvinfer config with a normalising ONNX."""
    if out_dir is None:
        what = "model repository" if fmt == "triton" else "folder"
        raise UserError(f"--format {fmt} needs --out: the {what} to write")
    if fmt == "triton":
        from edge_ad.export.triton import write_triton_repository

        engine = None if model.suffix == ".onnx" else artifact_path(model, precision, "engine")
        engine = engine if engine is not None and engine.is_file() and not python_backend else None
        result = write_triton_repository(
            model, out_dir, precision=precision, max_batch=max_batch, python_backend=python_backend, engine=engine
        )
        out.print(f"triton model: {result.model_dir} ({result.kind}; config {result.config})")
        return
    from edge_ad.export.deepstream_config import write_deepstream

    ds = write_deepstream(model, out_dir, precision=precision, batch_size=batch_size)
    out.print(f"deepstream: {ds.config} (onnx {ds.onnx}; nvinfer builds {ds.engine}; probe example anomaly_probe.py)")


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
) -> None:
    """`export --format engine`: build (or adopt a trtexec engine, or print the trtexec line), then verify."""
    import importlib.util

    from edge_ad.export import tensorrt_builder as tb

    info = tb.edge_ad_onnx(onnx_path)  # a text/truncated/foreign ONNX is one line here, not a traceback
    if head == "cuda":  # the kernel computes the max: refused for a family that declares another image score
        from edge_ad.postprocess.image_score import check_cuda_postprocess, image_score_of

        check_cuda_postprocess(image_score_of(info.metadata, str(onnx_path)), str(onnx_path))
    dynamic = info.static_batch is None
    options = tb.BuildOptions(
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
            version = tb.import_tensorrt().__version__
        out.print(escape(tb.trtexec_command(info, options, version)), soft_wrap=True)
        if version is None:
            err.print("[yellow]TensorRT is not installed here: the line is for TensorRT 10.x (JetPack 6)[/]")
        adopt = f"--from-trtexec {tb.engine_path_for(onnx_path, precision)}"
        out.print(escape(f"then: edge-ad export {onnx_path} --format engine --precision {precision} {adopt}"))
        return
    try:
        if from_trtexec is not None:
            tb.adopt_engine(onnx_path, from_trtexec, precision)
            engine = from_trtexec
        else:
            engine = tb.build_engine(onnx_path, options=options)
    except tb.TensorRTUnavailable as exc:
        raise UserError(str(exc)) from None
    out.print(f"engine: {engine} (sidecar {tb.sidecar_path(engine)})")
    if verify_count > 0:
        from edge_ad.export.tensorrt_verify import verification_images, verify_engine

        images, source = verification_images(info, calib_data, verify_count)
        try:
            result = verify_engine(engine, onnx_path, images, source)
        except RuntimeError as exc:  # e.g. no CUDA buffer layer on the build machine: the engine stands
            err.print(f"[yellow]engine built but not verified: {exc}[/]")
            return
        out.print(
            f"verified against onnxruntime on {source}: max |score diff| {result['max_abs_score_diff']:.3g}, "
            f"max |map diff| {result['max_abs_map_diff']:.3g} ({result['max_map_diff_of_range']:.2%} of the map range)",
            soft_wrap=True,
        )
        if not result["within_tolerance"]:
            limit = f"{result['tolerance_of_range']:.1%}"
            err.print(f"[yellow]beyond the {limit} tolerance for {precision}: check the engine before deploying it[/]")
