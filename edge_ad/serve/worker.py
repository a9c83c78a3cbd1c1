"""The one inference thread: takes queued jobs in batches, scores them, writes records, then tells the source.

Every source (HTTP, hot folder, camera) submits :class:`Job` objects here; the queue is bounded and each source
chooses what to do when it is full (HTTP: 503; camera: drop the oldest; folder: wait).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.artifacts import WEIGHTS_NAME
from edge_ad.bundle import file_sha256
from edge_ad.data.gate import InputLimits, InputRejected, check_frame
from edge_ad.detector import Detector
from edge_ad.results import Prediction, overlay_png
from edge_ad.serve.metrics import Metrics
from edge_ad.serve.record import error_record, make_record, new_record_id
from edge_ad.serve.sinks import Sinks

__all__ = ["DEFAULT_MAX_BATCH", "InferenceWorker", "Job", "model_sha256"]

log = logging.getLogger("edge_ad.serve")
DEFAULT_MAX_BATCH = 8


@dataclass
class Job:
    """One input waiting for a verdict. ``image`` is uint8 RGB HxWx3 that already passed the input gate.

    ``on_done(record)`` runs on the worker thread after the record is fsync'd to results.jsonl; it must be quick.
    The worker sets ``prediction`` before calling it (for ``?map=png``).
    """

    image: np.ndarray
    source: str
    name: str
    on_done: Callable[[dict[str, Any]], None] | None = None
    gated: bool = False  # True: the source ran the input gate on ``image`` already, so the worker does not repeat it
    id: str = field(default_factory=new_record_id)
    submitted: float = field(default_factory=time.perf_counter)
    prediction: Prediction | None = None


def model_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the model file (for a bundle folder: of its ``model.safetensors``), so a record names its model."""
    p = Path(path)
    if p.is_dir():
        p = p / WEIGHTS_NAME
    return file_sha256(p)


def _runtime_batch(detector: Detector) -> int:
    rt = detector.runtime
    for attr in ("batch_size", "max_batch"):
        value = getattr(rt, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_BATCH


class InferenceWorker:
    """Batches queued jobs up to ``max_batch`` (default: the runtime's batch size, else 8) and scores them."""

    def __init__(
        self,
        detector: Detector,
        sinks: Sinks,
        metrics: Metrics,
        max_queue: int = 64,
        max_batch: int | None = None,
        model_hash: str | None = None,
        history: int = 500,
        limits: InputLimits | None = None,
    ):
        if max_queue < 1:
            raise ValueError(f"--max-queue must be >= 1, got {max_queue}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
        self.detector = detector
        self.sinks = sinks
        self.metrics = metrics
        self.max_queue = max_queue
        self.max_batch = max_batch or _runtime_batch(detector)
        self.model_hash = model_hash
        self.limits = limits
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._accepting = threading.Event()
        self._accepting.set()  # jobs may queue before start(); stop_intake() closes intake for good
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-ad-inference", daemon=True)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        tail = getattr(sinks.results, "tail", None)
        if callable(tail):  # a restarted service shows what it wrote before (page, GET /v1/results)
            try:
                self._recent.extend(tail(history))
            except OSError as exc:
                log.warning("could not read earlier results: %s", exc)
        self._recent_lock = threading.Lock()
        self._latest: tuple[str, Prediction] | None = None
        self._latest_png: tuple[str, bytes] | None = None

    # ----------------------------------------------------------------- intake
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job, block: bool, timeout: float | None = None) -> bool:
        """Queue a job; False when the queue is full (not blocking, or ``timeout`` passed) or the worker is stopping."""
        if not self._accepting.is_set():
            return False
        job.submitted = time.perf_counter()
        try:
            if block:
                # Wait in short steps so a blocked folder source notices a shutdown.
                end = None if timeout is None else time.monotonic() + timeout
                while True:
                    try:
                        self._queue.put(job, timeout=0.1)
                        break
                    except queue.Full:
                        if not self._accepting.is_set() or (end is not None and time.monotonic() >= end):
                            return False
            else:
                self._queue.put_nowait(job)
        except queue.Full:
            return False
        self.metrics.queue_depth.set(self._queue.qsize())
        return True

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def record_error(self, *, source: str, name: str, error: str, reason: str) -> dict[str, Any]:
        """Write an error record for an input that got no verdict (a source's bad file, the gate's refusal)."""
        record = error_record(id=new_record_id(), source=source, name=name, error=error)
        self.sinks.results.write([record])
        self.metrics.count_error(source, reason)
        self._remember([record], None)
        return record

    # ----------------------------------------------------------------- results kept in memory
    def _remember(self, records: list[dict[str, Any]], latest: tuple[str, Prediction] | None) -> None:
        """Publish the records and the latest overlay source together: a page that sees a record gets its overlay."""
        with self._recent_lock:
            if latest is not None:
                self._latest = latest
            self._recent.extend(records)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` records, newest last."""
        with self._recent_lock:
            items = list(self._recent)
        return items[-limit:] if limit > 0 else []

    def latest_overlay_png(self) -> tuple[str, bytes] | None:
        """(record id, overlay PNG) of the latest scored input, drawn on first request and cached."""
        with self._recent_lock:
            latest, cached = self._latest, self._latest_png
        if latest is None:
            return None
        if cached is not None and cached[0] == latest[0]:
            return cached
        png = (latest[0], overlay_png(latest[1], self.detector.heat_levels))
        with self._recent_lock:
            self._latest_png = png
        return png

    # ----------------------------------------------------------------- the loop
    def _take_batch(self) -> list[Job]:
        try:
            first = self._queue.get(timeout=0.05)
        except queue.Empty:
            return []
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                jobs = self._take_batch()
                if jobs:
                    self.metrics.queue_depth.set(self._queue.qsize())
                    self._process(jobs)
            except Exception:  # the service must outlive any one batch
                log.exception("inference worker: unexpected error")

    def _score(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Records in job order; a frame the gate refuses fails alone, never its batch. Each frame passes the gate once:
        at its source (``gated``), else here."""
        records: dict[int, dict[str, Any]] = {}
        for i, job in enumerate(jobs):
            if job.gated:
                continue
            try:
                check_frame(job.image, job.name, self.limits)
            except InputRejected as exc:
                self.metrics.count_error(job.source, "rejected")
                records[i] = error_record(id=job.id, source=job.source, name=job.name, error=str(exc))
        kept = [i for i in range(len(jobs)) if i not in records]
        for i, record in zip(kept, self._predict([jobs[i] for i in kept]), strict=True):
            records[i] = record
        return [records[i] for i in range(len(jobs))]

    def _predict(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Score gated frames through the Detector (its one preprocessing)."""
        if not jobs:
            return []
        try:
            preds = self.detector.score_frames([j.image for j in jobs], [j.name for j in jobs])
        except Exception as exc:  # a runtime failure becomes error records; the service goes on
            log.exception("inference failed for a batch of %d", len(jobs))
            message = f"inference failed: {type(exc).__name__}: {exc}".splitlines()[0]
            for job in jobs:
                self.metrics.count_error(job.source, "inference")
            return [error_record(id=j.id, source=j.source, name=j.name, error=message) for j in jobs]
        done = time.perf_counter()
        records = []
        for job, pred in zip(jobs, preds, strict=True):
            job.prediction = pred
            record = make_record(
                pred,
                id=job.id,
                source=job.source,
                name=job.name,
                latency_ms=(done - job.submitted) * 1000.0,
                model_sha256=self.model_hash,
            )
            if self.sinks.overlays is not None:
                try:
                    path = self.sinks.overlays.save(job.id, pred)
                except (OSError, RuntimeError) as exc:
                    log.warning("could not save overlay %s: %s", job.id, exc)
                    self.metrics.count_error(job.source, "overlay")
                    path = None
                if path is not None:
                    record["overlay"] = path
            records.append(record)
        return records

    def _process(self, jobs: list[Job]) -> None:
        records = self._score(jobs)
        try:
            self.sinks.results.write(records)
        except OSError as exc:  # disk full, read-only: nobody gets a 200 for a record that is not on disk
            log.error("could not write results.jsonl: %s", exc)
            records = [
                error_record(
                    id=j.id, source=j.source, name=j.name, error=f"results not written: {exc}", persisted=False
                )
                for j in jobs
            ]
            for job in jobs:
                self.metrics.count_error(job.source, "results_write")
                job.prediction = None
        else:
            self._account(jobs, records)
        for job, record in zip(jobs, records, strict=True):
            if job.on_done is not None:
                try:
                    job.on_done(record)
                except Exception:
                    log.exception("on_done of %s failed", job.source)
        if self.sinks.webhook is not None:
            for record in records:
                self.sinks.webhook.submit(record)

    def _account(self, jobs: list[Job], records: list[dict[str, Any]]) -> None:
        self.metrics.batch_size.observe(len(jobs))
        end = time.perf_counter()
        latest = None
        for job, record in zip(jobs, records, strict=True):
            if "error" in record:
                continue
            self.metrics.latency.observe(end - job.submitted)
            self.metrics.images_scored.labels(source=job.source).inc()
            if record["verdict"] != "good":
                self.metrics.ng.labels(source=job.source).inc()
            if job.prediction is not None:
                latest = (job.id, job.prediction)
        self._remember(records, latest)

    # ----------------------------------------------------------------- shutdown
    def stop_intake(self) -> None:
        """Refuse new jobs (submit returns False); what is queued is still scored."""
        self._accepting.clear()

    def drain_and_stop(self, timeout: float = 10.0) -> bool:
        """Stop intake, score everything queued, stop the thread; True when the queue was emptied in time."""
        self.stop_intake()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        drained = not self._thread.is_alive() and self._queue.empty()
        if not self._thread.is_alive():
            self._refuse_leftovers()
        if not drained:
            log.error("inference worker did not drain within %.1f s (%d job(s) left)", timeout, self._queue.qsize())
        self.metrics.queue_depth.set(self._queue.qsize())
        return drained

    def _refuse_leftovers(self) -> None:
        """Jobs that raced past ``stop_intake`` after the loop ended: answer them, never leave a caller waiting."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job.on_done is not None:
                record = error_record(
                    id=job.id, source=job.source, name=job.name, error="service stopping", persisted=False
                )
                job.on_done(record)
