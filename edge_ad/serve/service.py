"""Wiring of ``edge-ad serve``: model, worker, sinks, sources and the HTTP server, and an orderly shutdown.

Shutdown (SIGTERM or SIGINT): the sources stop taking input and the worker refuses new jobs (HTTP answers 503),
the HTTP server finishes the requests it holds, the worker scores what is queued, results.jsonl is fsync'd and
closed, the process exits 0. Every answered request and every file moved to ``done/`` has its record on disk
before that answer or move, so even a SIGKILL loses nothing that was acknowledged.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from edge_ad.artifacts import artifact_path
from edge_ad.detector import Detector
from edge_ad.serve.app import ServeState, create_app
from edge_ad.serve.metrics import Metrics
from edge_ad.serve.sinks import SAVE_MODES, OverlaySaver, ResultsLog, Sinks, WebhookSink
from edge_ad.serve.worker import InferenceWorker, model_sha256

__all__ = ["HTTP_SOURCE", "ServeConfig", "Service", "build_service", "is_loopback", "run_service"]

log = logging.getLogger("edge_ad.serve")
HTTP_SOURCE = "http"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: the only hosts that may serve without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Everything ``edge-ad serve`` takes; validated on creation so a bad value is one clear line."""

    model: Path
    out: Path
    sources: list[str] = field(default_factory=lambda: [HTTP_SOURCE])
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    save: str = "ng"
    webhook: str | None = None
    max_queue: int = 64
    max_batch: int | None = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    fps: float | None = None
    loop_video: bool = False
    rotate_mb: float = 100.0
    keep_rotated: int = 5
    max_body_mb: float | None = None
    request_timeout_s: float = 30.0
    drain_timeout_s: float = 10.0
    limits: Any = None  # edge_ad.data.gate.InputLimits; None = the gate's defaults

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.out = Path(self.out)
        if not self.sources:
            raise ValueError("give at least one --source (http, folder:DIR, camera:N, a stream URL or a video file)")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"a --source is given twice: {self.sources}")
        if self.save not in SAVE_MODES:
            raise ValueError(f"--save must be one of {', '.join(SAVE_MODES)}, not {self.save!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {self.port}")
        if self.max_queue < 1:
            raise ValueError(f"--max-queue must be >= 1, got {self.max_queue}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"--fps must be > 0, got {self.fps}")
        if self.rotate_mb <= 0 or self.keep_rotated < 1:
            raise ValueError("--rotate-mb must be > 0 and --keep-rotated >= 1")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ValueError(f"--webhook must be an http:// or https:// URL, not {self.webhook!r}")
        if self.max_body_mb is not None and self.max_body_mb <= 0:
            raise ValueError(f"--max-body-mb must be > 0, got {self.max_body_mb}")
        if self.require_token and not self.token:
            raise ValueError(
                f"--host {self.host} is not a loopback address: an API token is required "
                "(give --token or set EDGE_AD_TOKEN)"
            )

    @property
    def require_token(self) -> bool:
        return not is_loopback(self.host)

    @property
    def http_enabled(self) -> bool:
        return HTTP_SOURCE in self.sources


class Service:
    """The running parts of one service; :func:`run_service` adds the HTTP server and the signals."""

    def __init__(self, config: ServeConfig, detector: Detector | None = None):
        self.config = config
        # Sources first: a bad --source is reported before a model takes seconds to load.
        self.sources = [_make_source(spec, config) for spec in config.sources if spec != HTTP_SOURCE]
        self.detector = detector or Detector.load(
            config.model, backend=config.backend, device=config.device, precision=config.precision
        )
        # A remote model (--backend triton) has no local file: its runtime names the served file's hash.
        remote_hash = getattr(self.detector.runtime, "model_sha256", None)
        self.model_hash = remote_hash or model_sha256(_model_file(config))
        self.metrics = Metrics()
        config.out.mkdir(parents=True, exist_ok=True)
        levels = self.detector.heat_levels
        self.sinks = Sinks(
            results=ResultsLog(config.out / "results.jsonl", int(config.rotate_mb * 2**20), config.keep_rotated),
            overlays=None if config.save == "none" else OverlaySaver(config.out, config.save, levels),
            webhook=WebhookSink(config.webhook, self.metrics) if config.webhook else None,
        )
        self.worker = InferenceWorker(
            self.detector, self.sinks, self.metrics, config.max_queue, config.max_batch, model_hash=self.model_hash,
            limits=config.limits,
        )
        if config.http_enabled:
            self.metrics.set_policy(HTTP_SOURCE, "reject-503")
        self.state = ServeState(
            detector=self.detector,
            worker=self.worker,
            metrics=self.metrics,
            sources=self.sources,
            http_enabled=config.http_enabled,
            token=config.token,
            require_token=config.require_token,
            limits=config.limits,
            max_body_bytes=None if config.max_body_mb is None else int(config.max_body_mb * 2**20),
            request_timeout_s=config.request_timeout_s,
            model_path=str(config.model),
            model_sha256=self.model_hash,
        )
        self.app = create_app(self.state)
        self._stopped = False

    def start(self) -> None:
        self.sinks.start()
        self.worker.start()
        for source in self.sources:
            source.start(self.worker, self.metrics)

    def stop_intake(self) -> None:
        """No new input from any source; what is queued is still scored."""
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                log.exception("stopping source %s failed", source.name)
        self.worker.stop_intake()

    def shutdown(self) -> bool:
        """Stop intake, drain the queue, flush and close the sinks; True when nothing was left unscored."""
        if self._stopped:
            return True
        self._stopped = True
        self.stop_intake()
        drained = self.worker.drain_and_stop(self.config.drain_timeout_s)
        self.sinks.close()
        return drained


def _model_file(config: ServeConfig) -> Path:
    """The file a record's ``model_sha256`` is of: the .onnx / .engine given, or the runtime's own file."""
    path = config.model
    if path.is_dir() and config.backend in ("onnxruntime", "tensorrt"):
        suffix = "onnx" if config.backend == "onnxruntime" else "engine"
        return artifact_path(path, config.precision, suffix)
    return path


def _make_source(spec: str, config: ServeConfig) -> Any:
    from edge_ad.serve.sources import parse_source

    return parse_source(spec, fps=config.fps, results_dir=config.out, loop=config.loop_video, limits=config.limits)


def build_service(config: ServeConfig, detector: Detector | None = None) -> Service:
    """Load the model and build every part, started by ``Service.start``; tests call this without uvicorn."""
    return Service(config, detector)


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves: a taken port is one clear line, and ``--port 0`` picks a free one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_service(config: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT, then drain and exit; returns the process exit code (0: clean)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = _bind(config.host, config.port)
    try:
        service = build_service(config)
    except BaseException:
        sock.close()
        raise
    service.start()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not uvicorn's own: it re-raises the signal after shutdown, and the process would not exit 0.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            log.info("signal %d: stopping intake, draining", sig)
            service.stop_intake()
            self.should_exit = True

    server = Server(
        uvicorn.Config(
            service.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=max(1, int(config.drain_timeout_s)),
        )
    )
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    sources = ", ".join(config.sources)
    print(f"edge-ad serve: listening on http://{shown}:{port} (sources: {sources}; out: {config.out})", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        drained = service.shutdown()
        sock.close()
    log.info("stopped (%s)", "drained" if drained else "queue NOT drained")
    return 0 if drained else 1

