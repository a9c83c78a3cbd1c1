"""The ``edge-ad serve`` command (registered in :mod:`edge_ad.cli.main`); imports the server only when it runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

__all__ = ["serve_command"]

SERVE_HELP = "\n\n".join(
    [
        "Run the inspection service: score every input from the sources, write OUT/results.jsonl, answer HTTP. "
        "Needs the [serve] extra (pip install -e '.[serve]' in the edge-ad checkout; `edge-ad doctor` lists extras).",
        "Sources (--source, repeatable): 'http' (POST /v1/predict), 'folder:DIR' (hot folder), 'camera:N', "
        "'rtsp://...', a video file, or a GStreamer pipeline string ending in appsink (needs an OpenCV built with "
        "GStreamer, as JetPack's is; the pip wheel is not).",
        "Queue policies, one bounded queue (--max-queue) in front of the model: HTTP answers 503 with Retry-After "
        "when it is full (never an unbounded backlog); a camera/stream drops its oldest frame and counts the drop "
        "(edge_ad_dropped_total); a hot folder waits (back-pressure) and never drops a file. The metric "
        "edge_ad_queue_policy names each source's policy.",
        "Endpoints, always served on --host/--port: GET /healthz, /readyz, /metrics, /v1/results, "
        "/v1/latest/overlay.png, / (the live page); POST /v1/predict when 'http' is a source (otherwise 404).",
        "Files in OUT: results.jsonl (one record per input, fsync'd before any answer; rotated by size to "
        "results.jsonl.1 ...), overlays/<record id>.png (per --save). SIGTERM or Ctrl-C: stop intake, drain the "
        "queue, flush, exit 0.",
    ]
)


def serve_command(
    model: Path = typer.Argument(
        ..., help="Bundle folder, exported .onnx, or TensorRT .engine (built on this device)."
    ),
    source: list[str] = typer.Option(
        ["http"], "--source", "-s", help="Input; repeat for several: http, folder:DIR, camera:N, rtsp://..., "
        "a video file, or a GStreamer pipeline (see above)."
    ),
    out: Path = typer.Option(Path("serve-out"), "--out", "-o", help="Folder for results.jsonl and overlays/."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on. Anything but loopback requires an API token (--token)."
    ),
    port: int = typer.Option(8000, help="TCP port (0: pick a free one; the address is printed on start)."),
    token: str | None = typer.Option(
        None, envvar="EDGE_AD_TOKEN", show_envvar=True,
        help="API token for every route but /healthz and /metrics (Authorization: Bearer TOKEN, or ?token= for "
        "the page). Required with a non-loopback --host; prefer the environment variable to the command line.",
    ),
    save: str = typer.Option("ng", help="Overlay PNGs in OUT/overlays/: all, ng (anomalous only) or none."),
    webhook: str | None = typer.Option(
        None, help="POST each record as JSON to this http(s) URL; retried with back-off, failures counted "
        "(edge_ad_webhook_failed_total), never slows inference (its own bounded queue)."
    ),
    max_queue: int = typer.Option(
        64, help="Jobs waiting for the model, all sources together; when full: http 503, camera drops oldest, "
        "folder waits."
    ),
    max_batch: int | None = typer.Option(
        None, help="Most images per inference call (default: the model's batch size, or 8 for a dynamic batch)."
    ),
    fps: float | None = typer.Option(None, help="Rate limit for camera, stream and video sources (frames/s)."),
    loop_video: bool = typer.Option(False, help="Replay a video-file source from the start when it ends."),
    backend: str = typer.Option("auto", help="torch, onnxruntime, tensorrt, or auto (by file type)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N (onnxruntime/torch)."),
    precision: str = typer.Option("fp32", help="Which exported file of a bundle folder to load (fp32, fp16, int8)."),
    max_body_mb: float | None = typer.Option(
        None, help="Largest request body in MiB (default: the input gate's byte limit, 64 MiB)."
    ),
    rotate_mb: float = typer.Option(100.0, help="Rotate results.jsonl when it would grow past this many MiB."),
    keep_rotated: int = typer.Option(5, help="Rotated results files kept (results.jsonl.1 ... .N)."),
    request_timeout: float = typer.Option(30.0, help="Seconds an HTTP request waits for its result (then 504)."),
    drain_timeout: float = typer.Option(10.0, help="Seconds to finish queued work on SIGTERM before giving up."),
    print_systemd: bool = typer.Option(
        False, "--print-systemd", help="Print a systemd unit that runs this same command, and exit."
    ),
) -> None:
    from edge_ad.cli.output import friendly

    @friendly
    def run() -> None:
        if print_systemd:
            from edge_ad.serve.systemd import systemd_unit

            typer.echo(systemd_unit([a for a in sys.argv[1:] if a != "--print-systemd"]), nl=False)
            return
        from edge_ad.extras import require

        require("serve", "edge-ad serve")  # one line naming the extra, before the server's imports could fail
        from edge_ad.serve.service import ServeConfig, run_service

        config = ServeConfig(
            model=model,
            out=out,
            sources=list(source),
            host=host,
            port=port,
            token=token,
            save=save,
            webhook=webhook,
            max_queue=max_queue,
            max_batch=max_batch,
            fps=fps,
            loop_video=loop_video,
            backend=backend,
            device=device,
            precision=precision,
            max_body_mb=max_body_mb,
            rotate_mb=rotate_mb,
            keep_rotated=keep_rotated,
            request_timeout_s=request_timeout,
            drain_timeout_s=drain_timeout,
        )
        raise typer.Exit(run_service(config))

    run()


serve_command.__doc__ = SERVE_HELP
