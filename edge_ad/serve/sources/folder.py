"""Hot folder: every image written into DIR is scored exactly once, also across a crash and restart.

How a file travels (all moves are ``rename`` inside one file system, so each is atomic):

1. ``DIR/part.png`` is *complete* when its size and mtime have not changed for ``settle_s`` seconds. Writers that
   rename into place are supported too: names starting with ``.`` or ending ``.tmp`` / ``.part`` are ignored until
   renamed. Files whose suffix is not an image type, folders and special files are left alone.
2. It is *claimed*: renamed to ``DIR/.processing/<claim-time-ns>-part.png`` (and the folder fsync'd), so a restart
   knows it was taken and when.
3. It is read (never through a symlink: ``O_NOFOLLOW``), decoded by the input gate and submitted to the worker with
   ``block=True``: a full queue holds the folder back (back-pressure), nothing is dropped.
4. When the worker has fsync'd the record to ``results.jsonl`` it calls back, and the file moves to ``DIR/done/``
   (``DIR/failed/`` for an error record).

Unreadable or refused images and symlinks (whether they point in or out of the folder: none is followed) get an
error record and move to ``DIR/failed/``. After a crash, a file still in ``.processing/`` is looked up in the results
log (the worker's ``results.jsonl`` and its rotated files): if a record for it was written after its claim time it
only moves on; otherwise it is scored again. So every file ends with one record and one place in ``done/`` or
``failed/``. (A file whose earlier namesake was recorded less than a millisecond before this one was claimed would be
taken for recorded; fsync alone takes longer than that.)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ad.data.images import IMAGE_EXTENSIONS, ImageError
from edge_ad.serve.sources.base import SourceStatus

if TYPE_CHECKING:
    from edge_ad.data.gate import InputLimits
    from edge_ad.serve.metrics import Metrics
    from edge_ad.serve.worker import InferenceWorker

__all__ = ["FolderSource", "IGNORED_SUFFIXES"]

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part")
PROCESSING = ".processing"


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power cut, not only a killed process."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_ms(record: dict[str, Any]) -> int | None:
    try:
        when = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return int(when.replace(tzinfo=when.tzinfo or timezone.utc).timestamp() * 1000)


class FolderSource:
    """Watch one folder (not recursive); back-pressure, never drops. See the module docstring for the guarantees."""

    policy = "back-pressure"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        results_dir: str | os.PathLike[str] | None = None,
        settle_s: float = 0.5,
        poll_s: float = 0.2,
        limits: InputLimits | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()  # one label per folder, however the path was spelled
        self.name = f"folder:{self.folder}"
        self.results_path = Path(results_dir) / "results.jsonl" if results_dir is not None else None
        self.settle_s = float(settle_s)
        self.poll_s = float(poll_s)
        self.limits = limits
        self.done_dir = self.folder / "done"
        self.failed_dir = self.folder / "failed"
        self.processing_dir = self.folder / PROCESSING
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, time it last changed)
        self._lock = threading.Lock()
        self._in_flight: set[Path] = set()
        self.counts = {"done": 0, "failed": 0, "recovered": 0}
        self._worker: InferenceWorker | None = None
        self._metrics: Metrics | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, worker: InferenceWorker, metrics: Metrics) -> None:
        if not self.folder.is_dir():
            raise ValueError(f"hot folder not found or not a folder: {self.folder}")
        self._worker, self._metrics = worker, metrics
        # Recovery reads the log the worker writes; results_dir is the fallback for a worker that does not say.
        path = getattr(getattr(getattr(worker, "sinks", None), "results", None), "path", None)
        if path is not None:
            self.results_path = Path(path)
        self._ensure_dirs()
        metrics.set_policy(self.name, self.policy)
        metrics.set_source_up(self.name, True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"edge-ad {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _ensure_dirs(self) -> None:
        for d in (self.done_dir, self.failed_dir, self.processing_dir):
            try:
                d.mkdir(exist_ok=True)
            except FileNotFoundError:  # the folder itself vanished meanwhile; status() says so
                return

    def status(self) -> SourceStatus:
        alive = self._thread is not None and self._thread.is_alive()
        up = alive and self.folder.is_dir()
        with self._lock:
            in_flight = len(self._in_flight)
        detail = (
            f"watching {self.folder}: {in_flight} in flight, {self.counts['done']} done, {self.counts['failed']} failed"
            if up
            else ("stopped" if self._stop.is_set() else f"folder missing or watcher not running: {self.folder}")
        )
        if self._metrics is not None:
            self._metrics.set_source_up(self.name, up)
        return {"up": up, "detail": detail}

    # -- intake thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._recover()
        except Exception:
            log.exception("hot folder %s: recovery of claimed files failed; they stay in %s", self.folder, PROCESSING)
        while not self._stop.is_set():
            try:
                if self.folder.is_dir():
                    self._ensure_dirs()  # the folder may have been removed and made again (a remount)
                for path in self._ready_files():
                    if self._stop.is_set():
                        break
                    try:
                        self._take(path)
                    except OSError as exc:  # one file we cannot move or read: say so, keep watching the rest
                        log.error("hot folder %s: %s: %s", self.folder, path.name, exc)
                        if self._metrics is not None:
                            self._metrics.count_error(self.name, "io")
            except Exception:  # never let the watcher die: log, wait a little, look again
                log.exception("hot folder %s: scan failed", self.folder)
                self._stop.wait(5.0)
            self._stop.wait(self.poll_s)

    def _ready_files(self) -> list[Path]:
        """Complete candidate files (stable for settle_s), oldest first; symlinks are refused here."""
        now = time.monotonic()
        ready: list[tuple[int, str]] = []
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
                continue
            if entry.is_symlink():
                self._refuse_symlink(Path(entry.path))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            present.add(name)
            key = (st.st_size, st.st_mtime_ns)
            old = self._seen.get(name)
            if old is None or old[:2] != key:
                self._seen[name] = (*key, now)
                if self.settle_s > 0:
                    continue
            if now - self._seen[name][2] >= self.settle_s:
                ready.append((st.st_mtime_ns, name))
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        return [self.folder / name for _, name in sorted(ready)]

    def _take(self, path: Path) -> None:
        """Claim one file by renaming it into .processing/, then read, decode and submit it."""
        claimed = self.processing_dir / f"{time.time_ns()}-{path.name}"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:  # moved away by someone else since the scan
            return
        self._seen.pop(path.name, None)
        _fsync_dir(self.folder)
        self._score(claimed, path.name)

    def _score(self, claimed: Path, name: str) -> None:
        from edge_ad.data.gate import InputRejected, decode_image

        try:
            data = self._read(claimed)
            image = decode_image(data, f"{self.name}/{name}", self.limits)
        except InputRejected as exc:
            self._fail(claimed, name, str(exc), "rejected")
            return
        except ImageError as exc:
            self._fail(claimed, name, str(exc), "unreadable")
            return
        self._submit(claimed, name, image)

    def _read(self, claimed: Path) -> bytes:
        """The file's bytes, refusing symlinks and special files, and refusing to read past the byte limit."""
        from edge_ad.data.gate import DEFAULT_LIMITS, InputRejected

        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputRejected(f"{claimed.name}: a symlink, not followed") from None
            raise ImageError(f"cannot open {claimed.name}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InputRejected(f"{claimed.name}: not a regular file")
            max_bytes = (self.limits or DEFAULT_LIMITS).max_bytes
            if st.st_size > max_bytes:
                raise InputRejected(f"{claimed.name}: {st.st_size} bytes, more than the limit of {max_bytes}")
            return fh.read(max_bytes + 1)

    def _submit(self, claimed: Path, name: str, image: Any) -> None:
        from edge_ad.serve.worker import Job

        assert self._worker is not None
        job = Job(
            image=image, source=self.name, name=name, on_done=lambda record: self._finish(claimed, record), gated=True
        )
        with self._lock:
            self._in_flight.add(claimed)
        while not self._stop.is_set():
            if self._worker.submit(job, block=True, timeout=0.5):
                return
        # Stopped while the queue was full: back to the folder, the next start scores it.
        self._unclaim(claimed)
        with self._lock:
            self._in_flight.discard(claimed)

    def _unclaim(self, claimed: Path) -> None:
        """Give a claimed file back to the folder; if a namesake arrived meanwhile it stays claimed for next start."""
        original = self.folder / claimed.name.split("-", 1)[1]
        try:
            os.link(claimed, original, follow_symlinks=False)  # unlike rename, never replaces a newer namesake
        except FileExistsError:
            return
        os.unlink(claimed)

    # -- outcomes ----------------------------------------------------------------------------------------------
    def _finish(self, claimed: Path, record: dict[str, Any]) -> None:
        """Worker callback after the record is fsync'd: move the file to done/ (failed/ for an error record)."""
        failed = "error" in record
        if record.get("persisted") is False:
            # No record is on disk (shutdown, results log not writable): undo the claim so the file is scored later.
            self._unclaim(claimed)
            with self._lock:
                self._in_flight.discard(claimed)
            return
        self._move(claimed, self.failed_dir if failed else self.done_dir)
        with self._lock:
            self._in_flight.discard(claimed)
            self.counts["failed" if failed else "done"] += 1

    def _fail(self, claimed: Path, name: str, error: str, reason: str) -> None:
        """An input that gets no verdict: error record first, then the move (the record is the commit point)."""
        assert self._worker is not None
        self._worker.record_error(source=self.name, name=name, error=error, reason=reason)
        self._move(claimed, self.failed_dir)
        with self._lock:
            self.counts["failed"] += 1

    def _refuse_symlink(self, link: Path) -> None:
        """A symlink in the folder is never followed: it is claimed like a file and moved to failed/ as a link."""
        claimed = self.processing_dir / f"{time.time_ns()}-{link.name}"
        try:
            os.rename(link, claimed)
        except FileNotFoundError:
            return
        _fsync_dir(self.folder)
        self._fail(claimed, link.name, f"{self.name}/{link.name}: a symlink, not followed", "symlink")

    def _move(self, claimed: Path, target_dir: Path) -> None:
        name = claimed.name.split("-", 1)[1]
        target = target_dir / name
        if target.exists() or target.is_symlink():  # the same name arrived before: keep both
            stem, suffix = os.path.splitext(name)
            target = target_dir / f"{stem}~{claimed.name.split('-', 1)[0]}{suffix}"
        os.rename(claimed, target)
        _fsync_dir(target_dir)

    # -- crash recovery ----------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Finish what a previous run claimed: move on if its record exists, else score it again."""
        claims = sorted(p for p in self.processing_dir.iterdir() if "-" in p.name)
        if not claims:
            return
        records = self._recorded()
        for claimed in claims:
            claim_ns, name = claimed.name.split("-", 1)
            claim_ms = int(claim_ns) // 1_000_000 if claim_ns.isdigit() else 0
            record = next((r for t, r in records.get(name, []) if t >= claim_ms), None)
            self.counts["recovered"] += 1
            if record is not None:
                self._finish(claimed, record)
            elif claimed.is_symlink():
                self._fail(claimed, name, f"{self.name}/{name}: a symlink, not followed", "symlink")
            else:
                self._score(claimed, name)

    def _recorded(self) -> dict[str, list[tuple[int, dict[str, Any]]]]:
        """This source's records in the results log (current and rotated files), by name, newest first."""
        found: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        if self.results_path is None or not self.results_path.parent.is_dir():
            return found
        for path in sorted(self.results_path.parent.glob(f"{self.results_path.name}*")):
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:  # a line torn by the crash
                        continue
                    if not isinstance(record, dict) or record.get("source") != self.name:
                        continue
                    ms = _record_ms(record)
                    if ms is not None:
                        found.setdefault(str(record.get("name")), []).append((ms, record))
        for items in found.values():
            items.sort(key=lambda item: item[0], reverse=True)
        return found
