"""The HTTP face of the service (Starlette): predict, health, readiness, metrics, results, the live page.

Routes (every answer is JSON unless said otherwise; errors are ``{"error": "<one line>"}``):

- ``POST /v1/predict``: the image file as the body (``Content-Type: image/png|jpeg|bmp|tiff|webp`` or
  ``application/octet-stream``) or as the multipart field ``image``. ``?name=`` labels the record (it is only data,
  never a path). Answers the record once it is fsync'd to results.jsonl; ``?map=png`` adds ``overlay_png`` (base64).
  400 undecodable image, 413 body over the limit (by Content-Length, or by counting a streamed body), 415 not an
  image content type, 422 refused by the input gate (too small, too many pixels, blank), 503 + ``Retry-After`` when
  the queue is full, 404 when the service was started without ``--source http``.
- ``GET /healthz``: the process answers. ``GET /readyz``: model loaded, worker running and every source up (503 and
  ``not_ready`` naming what is not). ``GET /metrics``: Prometheus text.
- ``GET /v1/results?limit=N``: ``{"results": [records, newest last], "threshold": t, "model_sha256": h}``.
- ``GET /v1/latest/overlay.png``: the latest scored input's heat-map overlay (404 before the first one);
  header ``X-Record-Id`` names its record.
- ``GET /``: the live page (``static/index.html``); the other files of ``static/`` at ``/static/<file>``.

With ``require_token`` (a non-loopback ``--host``) every route but ``/healthz``, ``/metrics`` and the page's static
assets needs ``Authorization: Bearer <token>`` or ``?token=<token>`` (the page passes its own ``?token=`` on).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from edge_ad.data import gate
from edge_ad.data.images import ImageError
from edge_ad.detector import Detector
from edge_ad.results import overlay_png
from edge_ad.serve.metrics import CONTENT_TYPE, Metrics
from edge_ad.serve.sources.base import Source
from edge_ad.serve.worker import InferenceWorker, Job

__all__ = ["IMAGE_CONTENT_TYPES", "PUBLIC_PATHS", "ServeState", "TokenAuth", "create_app", "token_ok"]

log = logging.getLogger("edge_ad.serve")
STATIC_DIR = Path(__file__).parent / "static"
IMAGE_CONTENT_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/webp",
        "application/octet-stream",
    }
)
PUBLIC_PATHS = ("/healthz", "/metrics", "/favicon.ico")
MAX_RESULTS = 500
NAME_MAX = 200


@dataclass
class ServeState:
    """What the routes need; built by :func:`edge_ad.serve.service.build_service` (or a test)."""

    detector: Detector
    worker: InferenceWorker
    metrics: Metrics
    sources: list[Source] = field(default_factory=list)
    http_enabled: bool = True
    token: str | None = None
    require_token: bool = False
    limits: Any = None  # edge_ad.data.gate.InputLimits; None = the gate's defaults
    max_body_bytes: int | None = None  # None: the gate's byte limit
    request_timeout_s: float = 30.0
    retry_after_s: int = 1
    model_path: str = ""
    model_sha256: str | None = None
    static_dir: Path = STATIC_DIR

    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return int((self.limits or gate.DEFAULT_LIMITS).max_bytes)


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status, headers=headers)


def token_ok(authorization: str | None, query_token: str | None, expected: str) -> bool:
    """True when ``Authorization: Bearer <expected>`` or ``?token=<expected>`` was sent (constant-time compare)."""
    offered = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
    if offered is None:
        offered = query_token
    return offered is not None and hmac.compare_digest(offered.encode("utf-8"), expected.encode("utf-8"))


def is_public(path: str) -> bool:
    """Routes a scraper or load balancer reaches without a token, and the page's own script/style files."""
    return path in PUBLIC_PATHS or path.startswith("/static/")


class TokenAuth:
    """ASGI middleware: 401 for every non-public route unless the request carries the token."""

    def __init__(self, app: ASGIApp, token: str):
        if not token:
            raise ValueError("an API token is required: give --token or set EDGE_AD_TOKEN")
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b""))
        if token_ok(headers.get("authorization"), query.get("token"), self.token):
            await self.app(scope, receive, send)
            return
        response = _error(401, "missing or wrong API token (send Authorization: Bearer <token>)")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused by its Content-Length or, when streamed, once the count passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ValueError(f"bad Content-Length {declared!r}") from None
        if size > limit:
            raise _TooLarge(f"body of {size} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    stream: AsyncIterator[bytes] = request.stream()
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            # Read (and drop) a bounded remainder so the client sees the 413 instead of a reset connection.
            drained = 0
            async for rest in stream:
                drained += len(rest)
                if drained > limit:
                    break
            raise _TooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_image(headers: Headers, body: bytes, limit: int) -> tuple[bytes, str | None]:
    async def once() -> AsyncIterator[bytes]:
        yield body

    form = await MultiPartParser(headers, once(), max_files=1, max_fields=8, max_part_size=limit).parse()
    try:
        item = form.get("image")
        if item is None:
            raise ValueError("multipart body has no field 'image'")
        if isinstance(item, UploadFile):
            return await item.read(), item.filename
        return item.encode("utf-8"), None
    finally:
        await form.close()


def _clean_name(raw: str | None) -> str:
    """A label for the record: printable, short; it is only ever data (overlay files are named by record id)."""
    text = "".join(ch for ch in (raw or "") if ch.isprintable())[:NAME_MAX].strip()
    return text or "upload"


def create_app(state: ServeState) -> Starlette:
    """The Starlette app over a running worker; the caller owns the worker's and the sources' lifecycle."""
    if state.require_token and not state.token:
        raise ValueError("a non-loopback --host needs an API token: give --token or set EDGE_AD_TOKEN")
    limit = state.body_limit()

    async def predict(request: Request) -> Response:
        if not state.http_enabled:
            return _error(404, "the http source is not enabled (start the service with --source http)")
        want_map = request.query_params.get("map")
        if want_map not in (None, "", "png"):
            return _error(400, f"map must be 'png', not {want_map!r}")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        multipart = ctype == "multipart/form-data"
        if not multipart and ctype not in IMAGE_CONTENT_TYPES:
            state.metrics.count_error("http", "content_type")
            return _error(
                415,
                f"unsupported content type {ctype or '(none)'}: send the image file as the body "
                "(image/png, image/jpeg, image/bmp, image/tiff, image/webp) or as multipart field 'image'",
            )
        filename = None
        try:
            data = await _read_body(request, limit)
            if multipart:
                data, filename = await _multipart_image(request.headers, data, limit)
        except _TooLarge as exc:
            state.metrics.count_error("http", "too_large")
            return _error(413, str(exc))
        except (MultiPartException, ValueError) as exc:
            state.metrics.count_error("http", "bad_request")
            return _error(400, f"bad request: {exc}")
        except ClientDisconnect:
            state.metrics.count_error("http", "disconnected")
            return _error(400, "the client went away before sending the whole body")
        name = _clean_name(request.query_params.get("name") or filename)
        try:
            image = await run_in_threadpool(gate.decode_image, data, f"http upload {name!r}", state.limits)
        except gate.InputRejected as exc:
            state.metrics.count_error("http", "rejected")
            return _error(422, str(exc))
        except ImageError as exc:
            state.metrics.count_error("http", "bad_image")
            return _error(400, str(exc))

        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()

        def resolve(record: dict[str, Any]) -> None:
            if not answer.done():
                answer.set_result(record)

        def on_done(record: dict[str, Any]) -> None:  # worker thread; the record is already on disk
            with contextlib.suppress(RuntimeError):  # the loop is gone: the request timed out and the server stopped
                loop.call_soon_threadsafe(resolve, record)

        job = Job(image=image, source="http", name=name, on_done=on_done, gated=True)  # decode_image gated it
        if not state.worker.submit(job, block=False):
            state.metrics.rejected_busy.inc()
            return _error(
                503, "busy: the inference queue is full, retry later", {"Retry-After": str(state.retry_after_s)}
            )
        try:
            record = await asyncio.wait_for(asyncio.shield(answer), state.request_timeout_s)
        except asyncio.TimeoutError:
            state.metrics.count_error("http", "timeout")
            return _error(504, f"no result within {state.request_timeout_s:g} s (record {job.id} may still come)")
        if "error" in record:
            return JSONResponse(record, 500)
        body = dict(record)
        if want_map == "png" and job.prediction is not None:
            png = await run_in_threadpool(overlay_png, job.prediction, state.detector.heat_levels)
            body["overlay_png"] = base64.b64encode(png).decode("ascii")
        return JSONResponse(body)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _source_statuses() -> dict[str, dict[str, Any]]:
        statuses: dict[str, dict[str, Any]] = {}
        for src in state.sources:
            try:
                st = dict(src.status())
            except Exception as exc:  # a broken status() means the source is not known to be up
                st = {"up": False, "detail": f"status failed: {exc}"}
            st["up"] = bool(st.get("up"))
            statuses[src.name] = st
            state.metrics.set_source_up(src.name, st["up"])
        return statuses

    async def readyz(request: Request) -> Response:
        statuses = _source_statuses()
        problems = [] if state.worker.alive else ["inference worker not running"]
        problems += [f"{name}: {st.get('detail') or 'down'}" for name, st in statuses.items() if not st["up"]]
        body = {
            "ready": not problems,
            "model": state.model_path,
            "model_sha256": state.model_sha256,
            "http": state.http_enabled,
            "sources": statuses,
            "queue_depth": state.worker.queue_depth(),
            "not_ready": problems,
        }
        return JSONResponse(body, 200 if not problems else 503)

    async def metrics(request: Request) -> Response:
        state.metrics.queue_depth.set(state.worker.queue_depth())
        _source_statuses()
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    async def results(request: Request) -> Response:
        raw = request.query_params.get("limit", "50")
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 1 <= n <= MAX_RESULTS:
            return _error(400, f"limit must be an integer from 1 to {MAX_RESULTS}, not {raw!r}")
        return JSONResponse(
            {
                "results": state.worker.recent(n),
                "threshold": state.detector.threshold,
                "model_sha256": state.model_sha256,
            }
        )

    async def latest_overlay(request: Request) -> Response:
        latest = await run_in_threadpool(state.worker.latest_overlay_png)
        if latest is None:
            return _error(404, "no result yet")
        record_id, png = latest
        return Response(png, media_type="image/png", headers={"X-Record-Id": record_id, "Cache-Control": "no-store"})

    index = state.static_dir / "index.html"

    async def page(request: Request) -> Response:
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-store"})
        return HTMLResponse("<!doctype html><title>edge-ad</title><p>edge-ad serve is running; no live page installed.")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    routes: list[Any] = [
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/results", results),
        Route("/v1/latest/overlay.png", latest_overlay),
        Route("/", page),
        Route("/favicon.ico", favicon),  # browsers ask for it on every visit: 204, not a 404 in the log
    ]
    if state.static_dir.is_dir():
        routes.append(Mount("/static", app=StaticFiles(directory=state.static_dir)))
    middleware = [Middleware(TokenAuth, token=state.token)] if (state.require_token or state.token) else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.serve = state
    return app
