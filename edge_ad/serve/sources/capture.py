"""Frames from OpenCV's VideoCapture: a camera index, an RTSP/HTTP stream, a GStreamer pipeline or a video file.

Policies (stated in ``edge-ad serve --help`` and in the ``edge_ad_queue_policy`` metric):

- **Live sources** (camera, stream, GStreamer) read frames as fast as the device gives them, keep at most ``fps`` per
  second, and hand them to the worker through a one-frame slot: when the worker is behind, the waiting frame is
  replaced by the newer one and counted in ``edge_ad_dropped_total`` (drop-oldest; a line inspection wants the
  part in front of the camera now, not a backlog).
- **Video files** are replayed at most ``fps`` frames per second (as fast as the worker takes them without ``fps``)
  with back-pressure: every frame is scored, none dropped. At the end of the file the source stops and reports
  ``finished`` (still up), or starts again from the first frame with ``loop=True``.
- A device that cannot be opened, or a stream whose read fails, makes the source *down* (``/readyz`` fails); it is
  reopened with exponential back-off (``backoff_s`` doubling up to ``max_backoff_s``) and comes back up by itself.

Every frame goes through the input gate's ``check_frame``; a refused frame (blank, too small) is counted in
``edge_ad_errors_total{reason="rejected"}`` and skipped without a record, so a covered lens does not flood
``results.jsonl``. A GStreamer pipeline needs an OpenCV built with GStreamer (JetPack's is; the pip wheel is not).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge_ad.serve.sources.base import SourceStatus

if TYPE_CHECKING:
    from edge_ad.data.gate import InputLimits
    from edge_ad.serve.metrics import Metrics
    from edge_ad.serve.worker import InferenceWorker

__all__ = ["KINDS", "CaptureSource", "VideoCaptureLike", "redact_url"]

log = logging.getLogger(__name__)

KINDS = ("camera", "stream", "gstreamer", "file")


class VideoCaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the source uses (tests pass fakes)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[int | str, int], VideoCaptureLike]


def opencv_capture(target: int | str, api: int) -> VideoCaptureLike:
    return cv2.VideoCapture(target, api)


def redact_url(url: str) -> str:
    """A stream URL without its password, fit for logs, metrics labels and records."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frames are BGR (or gray / BGRA); the model takes RGB uint8 HxWx3."""
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class CaptureSource:
    """One VideoCapture, its reconnect loop and its queue policy (see the module docstring)."""

    def __init__(
        self,
        target: int | str,
        *,
        kind: str,
        fps: float | None = None,
        loop: bool = False,
        limits: InputLimits | None = None,
        capture_factory: CaptureFactory | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown capture kind {kind!r}; choose from {', '.join(KINDS)}")
        if fps is not None and fps <= 0:
            raise ValueError(f"--fps must be positive, not {fps}")
        self.target, self.kind, self.fps, self.loop, self.limits = target, kind, fps, loop, limits
        self.live = kind != "file"
        self.policy = "drop-oldest" if self.live else "back-pressure"
        self.name = {
            "camera": f"camera:{target}",
            "stream": redact_url(str(target)),
            "gstreamer": f"gstreamer:{str(target).split('!')[0].strip()}",
            "file": f"video:{target}",
        }[kind]
        self.api = cv2.CAP_GSTREAMER if kind == "gstreamer" else cv2.CAP_ANY
        self.factory = capture_factory or opencv_capture
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._slot: tuple[int, np.ndarray] | None = None
        self._slot_cv = threading.Condition()
        self._up = False
        self._detail = "not started"
        self.frames_read = 0
        self.frames_submitted = 0
        self.frames_dropped = 0
        self.frames_rejected = 0
        self.reconnects = 0
        self._worker: InferenceWorker | None = None
        self._metrics: Metrics | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, worker: InferenceWorker, metrics: Metrics) -> None:
        self._worker, self._metrics = worker, metrics
        metrics.set_policy(self.name, self.policy)
        metrics.set_source_up(self.name, False)
        self._stop.clear()
        targets = [self._read_loop] + ([self._feed_loop] if self.live else [])
        self._threads = [threading.Thread(target=t, name=f"edge-ad {self.name}", daemon=True) for t in targets]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._slot_cv:
            self._slot_cv.notify_all()
        for t in self._threads:
            t.join(timeout=1.0)

    def status(self) -> SourceStatus:
        return {"up": self._up, "detail": self._detail}

    def _set(self, up: bool, detail: str) -> None:
        if up != self._up and self._metrics is not None:
            self._metrics.set_source_up(self.name, up)
        if up != self._up:
            log.info("%s is %s: %s", self.name, "up" if up else "down", detail)
        self._up, self._detail = up, detail

    # -- reading -----------------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        delay = self.backoff_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            cap = self.factory(self.target, self.api)
            if not cap.isOpened():
                cap.release()
                self._set(False, f"cannot open {self.name} (attempt {attempt}, next try in {delay:.1f} s)")
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            got = self._read_frames(cap)
            cap.release()
            if got:
                delay, attempt = self.backoff_s, 0
            if self._stop.is_set():
                break
            if not self.live and got and not self.loop:
                self._set(True, f"finished: end of file after {self.frames_read} frames")
                return
            if not self.live and got:
                continue  # loop=True: replay from the first frame at once
            self.reconnects += 1
            what = "stream ended or failed" if got else "opened but gave no frame"
            self._set(False, f"{self.name}: {what}; reconnecting in {delay:.1f} s")
            self._stop.wait(delay)
            delay = min(delay * 2, self.max_backoff_s)
        self._set(False, "stopped")

    def _read_frames(self, cap: VideoCaptureLike) -> int:
        """Read until the stream ends, fails or stop(); returns how many frames it gave."""
        got = 0
        period = 1.0 / self.fps if self.fps else 0.0
        next_due = time.monotonic()
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok or frame is None:
                return got
            got += 1
            self.frames_read += 1
            self._set(True, f"reading {self.name}: {self.frames_read} frames, {self.frames_dropped} dropped")
            now = time.monotonic()
            if self.live:
                if now < next_due:
                    continue  # over the --fps rate: skipped, not a drop
                next_due = max(next_due + period, now)
                self._put_latest(self.frames_read - 1, frame)
            else:
                if now < next_due:
                    self._stop.wait(next_due - now)
                next_due = max(next_due + period, time.monotonic())
                self._deliver(self.frames_read - 1, frame)
        return got

    # -- handing frames to the worker --------------------------------------------------------------------------
    def _put_latest(self, index: int, frame: np.ndarray) -> None:
        """Live policy: one waiting frame at most; a newer frame replaces it and the older one counts as dropped."""
        with self._slot_cv:
            if self._slot is not None:
                self.frames_dropped += 1
                if self._metrics is not None:
                    self._metrics.count_drop(self.name)
            self._slot = (index, frame)
            self._slot_cv.notify()

    def _feed_loop(self) -> None:
        while not self._stop.is_set():
            with self._slot_cv:
                while self._slot is None and not self._stop.is_set():
                    self._slot_cv.wait(0.5)
                if self._slot is None:
                    return
                index, frame = self._slot
                self._slot = None
            self._deliver(index, frame)

    def _deliver(self, index: int, frame: np.ndarray) -> None:
        """Gate the frame and submit it, waiting while the queue is full (the slot keeps taking newer frames)."""
        from edge_ad.data.gate import InputRejected, check_frame
        from edge_ad.serve.worker import Job

        rgb = to_rgb(frame)
        try:
            check_frame(rgb, f"{self.name} frame {index}", self.limits)
        except InputRejected as exc:
            self.frames_rejected += 1
            if self._metrics is not None:
                self._metrics.count_error(self.name, "rejected")
            if self.frames_rejected in (1, 10, 100) or self.frames_rejected % 1000 == 0:
                log.warning("%s (%d frames refused so far)", exc, self.frames_rejected)
            return
        job = Job(image=rgb, source=self.name, name=str(index), on_done=None, gated=True)
        assert self._worker is not None
        while not self._stop.is_set():
            if self._worker.submit(job, block=True, timeout=0.5):
                self.frames_submitted += 1
                return

