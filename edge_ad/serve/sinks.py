"""Where records go: results.jsonl (durable before any answer), overlay PNGs, a webhook that never blocks inference."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.io import atomic_write_bytes
from edge_ad.results import Prediction, overlay_png
from edge_ad.serve.metrics import Metrics
from edge_ad.serve.results_repair import repair_tail

__all__ = ["SAVE_MODES", "OverlaySaver", "ResultsLog", "Sinks", "WebhookSink"]

log = logging.getLogger("edge_ad.serve")
SAVE_MODES = ("all", "ng", "none")


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_records(path: Path, n: int, block: int = 64 * 1024) -> list[dict[str, Any]]:
    """Up to ``n`` JSON-object lines from the end of ``path``, oldest first, reading blocks backwards."""
    if n <= 0:
        return []
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first line may be cut by the block boundary
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and "id" in record:
            records.append(record)
    return records[-n:]


class ResultsLog:
    """``OUT/results.jsonl``: one JSON line per input, flushed and fsync'd before the caller answers anyone.

    Rotated by size: ``results.jsonl`` -> ``results.jsonl.1`` -> ... -> ``results.jsonl.<keep>`` (oldest deleted).
    A torn tail left by a crash is moved aside on open (:func:`~edge_ad.serve.results_repair.repair_tail`), so the
    file holds complete records only and the next one starts on its own line.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 100 * 2**20, keep: int = 5):
        if max_bytes < 1 or keep < 1:
            raise ValueError(f"results rotation needs max_bytes >= 1 and keep >= 1, got {max_bytes}, {keep}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.keep = int(keep)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._fh = self._open()

    def _open(self) -> Any:
        fh = open(self.path, "ab")  # noqa: SIM115 - held open for the service's life
        if fh.tell() > 0:
            with open(self.path, "rb") as rd:
                rd.seek(-1, os.SEEK_END)
                if rd.read(1) != b"\n":
                    fh.write(b"\n")
        return fh

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        _fsync_dir(self.path.parent)
        self._fh = self._open()

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append records and fsync once; when this returns they survive a power cut."""
        if not records:
            return
        data = b"".join(json.dumps(r, separators=(",", ":")).encode("utf-8") + b"\n" for r in records)
        with self._lock:
            if self._fh.tell() > 0 and self._fh.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records on disk, oldest first (rotated files too), so a restarted service's page and
        ``GET /v1/results`` show the shift so far; torn or foreign lines are skipped. Reads from the end only."""
        found: list[dict[str, Any]] = []
        paths = [self.path] + [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]
        for path in paths:
            if len(found) >= n or not path.exists():
                break
            found = _last_records(path, n - len(found)) + found
        return found[-n:] if n > 0 else []

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()


class OverlaySaver:
    """Overlay PNGs under ``OUT/overlays/`` for every input (``all``), NG parts only (``ng``) or none.

    The file name is the record id (made by the service), never anything a request sent.
    """

    def __init__(self, out_dir: str | os.PathLike[str], mode: str, levels: tuple[float, float]):
        if mode not in SAVE_MODES:
            raise ValueError(f"--save must be one of {', '.join(SAVE_MODES)}, not {mode!r}")
        self.dir = Path(out_dir) / "overlays"
        self.mode = mode
        self.levels = levels

    def wants(self, prediction: Prediction) -> bool:
        return self.mode == "all" or (self.mode == "ng" and prediction.is_anomalous)

    def save(self, record_id: str, prediction: Prediction) -> str | None:
        """Write the overlay if the mode asks for it; returns its path relative to OUT (for the record)."""
        if not self.wants(prediction):
            return None
        atomic_write_bytes(self.dir / f"{record_id}.png", overlay_png(prediction, self.levels))
        return f"overlays/{record_id}.png"


class WebhookSink:
    """POSTs each record as JSON from its own thread; a bounded queue, retries with back-off, failures counted.

    ``submit`` never blocks: when the queue is full the record is dropped from the webhook (it is still in
    results.jsonl) and counted as ``edge_ad_webhook_failed_total{reason="queue_full"}``.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        max_queue: int = 1000,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--webhook must be an http:// or https:// URL, not {url!r}")
        self.url = url
        self.metrics = metrics
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-ad-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.metrics.webhook_failed.labels(reason="queue_full").inc()

    def _post(self, record: dict[str, Any]) -> None:
        req = urllib.request.Request(
            self.url, data=json.dumps(record).encode("utf-8"), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - scheme checked in __init__
            resp.read()

    def _deliver(self, record: dict[str, Any]) -> None:
        for attempt in range(self.retries + 1):
            try:
                self._post(record)
                self.metrics.webhook_sent.inc()
                return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                if attempt == self.retries or self._stop.wait(self.backoff_s * 2**attempt):
                    log.warning("webhook %s failed for record %s: %s", self.url, record.get("id"), exc)
                    self.metrics.webhook_failed.labels(reason="unreachable").inc()
                    return

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                record = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._deliver(record)

    def stop(self, timeout: float = 2.0) -> None:
        """Try to deliver what is queued for up to ``timeout`` s (no more retries); the rest stays in results.jsonl."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


@dataclass
class Sinks:
    """Everything a scored record is handed to, in order: overlay file, results.jsonl, then the webhook."""

    results: ResultsLog
    overlays: OverlaySaver | None = None
    webhook: WebhookSink | None = None

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()

    def close(self, timeout: float = 2.0) -> None:
        if self.webhook is not None:
            self.webhook.stop(timeout)
        self.results.close()

