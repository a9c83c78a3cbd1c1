"""Serve sources: hot folder (exactly once across SIGKILL, symlinks, bad files, back-pressure), capture (video file,
--fps, drop-oldest, reconnect with back-off), parse_source. Runs through the real InferenceWorker with a fake runtime.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.detector import Detector  # noqa: E402
from edge_ad.serve.metrics import Metrics  # noqa: E402
from edge_ad.serve.sinks import ResultsLog, Sinks  # noqa: E402
from edge_ad.serve.sources import CaptureSource, FolderSource, Source, parse_source  # noqa: E402
from edge_ad.serve.worker import InferenceWorker  # noqa: E402
from tests.layering import assert_runs_without  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class SlowRuntime:
    """Runtime contract with a per-image delay: score = mean of the batch item, so records differ per image."""

    name = "fake"
    image_size = 32

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.batches: list[int] = []

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(batch))
        time.sleep(self.delay_s * len(batch))
        scores = batch.reshape(len(batch), -1).mean(axis=1).astype(np.float32)
        return scores, np.zeros((len(batch), 32, 32), np.float32)


def make_worker(out: Path, delay_s: float = 0.0, max_queue: int = 8, max_batch: int = 4):
    detector = Detector(SlowRuntime(delay_s), Preprocessing(image_size=32, resize=36), 0.0, {})
    metrics = Metrics()
    sinks = Sinks(results=ResultsLog(out / "results.jsonl"))
    worker = InferenceWorker(detector, sinks, metrics, max_queue=max_queue, max_batch=max_batch)
    worker.start()
    return worker, metrics, sinks


def textured(seed: int, side: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def png_bytes(seed: int, side: int = 48) -> bytes:
    ok, data = cv2.imencode(".png", textured(seed, side))
    assert ok
    return data.tobytes()


def drop_file(folder: Path, name: str, data: bytes) -> None:
    """Write into place by rename, the way a well-behaved producer does."""
    tmp = folder / f"{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)


def records(out: Path) -> list[dict]:
    """Records in results.jsonl; a line torn by a crash (only ever the last before a restart) is skipped."""
    path = out / "results.jsonl"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


def wait_for(predicate, timeout: float = 20.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------------------------- parse_source
def test_parse_source_forms(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    video.write_bytes(b"x")
    folder = parse_source(f"folder:{tmp_path}")
    assert isinstance(folder, FolderSource) and folder.name == f"folder:{tmp_path.resolve()}"
    cam = parse_source("camera:2", fps=5)
    assert isinstance(cam, CaptureSource) and (cam.kind, cam.target, cam.fps, cam.policy) == (
        "camera",
        2,
        5,
        "drop-oldest",
    )
    rtsp = parse_source("rtsp://op:secret@10.0.0.5:554/line3")
    assert rtsp.kind == "stream" and "secret" not in rtsp.name and rtsp.target.endswith("/line3")
    assert parse_source("https://cam.local/mjpg").kind == "stream"
    gst = parse_source("nvarguscamerasrc ! video/x-raw ! appsink")
    assert gst.kind == "gstreamer" and gst.api == cv2.CAP_GSTREAMER and gst.name == "gstreamer:nvarguscamerasrc"
    clip = parse_source(str(video), loop=True)
    assert (clip.kind, clip.loop, clip.policy) == ("file", True, "back-pressure")
    assert all(isinstance(s, Source) for s in (folder, cam, rtsp, gst, clip))


@pytest.mark.parametrize(
    "spec, words",
    [
        ("http", "HTTP endpoint"),
        ("", "empty"),
        ("folder:", "needs a folder"),
        ("folder:/no/such/dir", "not found"),
        ("camera:front", "camera index"),
        ("missing.avi", "video file not found"),
        ("notes.txt", "use one of"),
        ("ftp://host/x", "use one of"),
    ],
)
def test_parse_source_refuses_with_one_line(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        parse_source(spec)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- hot folder
def test_folder_scores_good_files_refuses_bad_and_symlinks(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(99))
    for i in range(4):
        drop_file(inbox, f"part{i}.png", png_bytes(i))
    (inbox / "direct.png").write_bytes(png_bytes(7))  # written in place: taken once its size is stable
    (inbox / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (inbox / "flat.png").write_bytes(cv2.imencode(".png", np.full((48, 48, 3), 128, np.uint8))[1].tobytes())
    (inbox / "halfway.png.part").write_bytes(png_bytes(8))
    (inbox / "readme.txt").write_text("not an image")
    (inbox / "link.png").symlink_to(outside)
    worker, metrics, sinks = make_worker(out)
    source = FolderSource(inbox, settle_s=0.2, poll_s=0.05)
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: len(records(out)) >= 8)
        assert source.status()["up"]
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    recs = records(out)
    scored = sorted(r["name"] for r in recs if "error" not in r)
    errors = {r["name"]: r["error"] for r in recs if "error" in r}
    assert scored == ["direct.png", "part0.png", "part1.png", "part2.png", "part3.png"]
    assert set(errors) == {"bad.png", "flat.png", "link.png"} and "symlink" in errors["link.png"]
    assert "blank" in errors["flat.png"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == scored
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == sorted(errors)
    assert (inbox / "failed" / "link.png").is_symlink() and outside.exists()  # the link moved, its target untouched
    assert sorted(p.name for p in inbox.iterdir() if p.is_file() and not p.is_symlink()) == [
        "halfway.png.part",
        "readme.txt",
    ]
    assert sample(metrics, "edge_ad_errors_total", source=source.name, reason="symlink") == 1
    assert sample(metrics, "edge_ad_errors_total", source=source.name, reason="rejected") == 1
    assert sample(metrics, "edge_ad_queue_policy", source=source.name, policy="back-pressure") == 1


class FailingResults:
    """A results log that cannot write while ``broken`` (disk full), then writes through the real one."""

    def __init__(self, real: ResultsLog):
        self.real, self.broken, self.refused = real, True, 0

    def write(self, batch: list[dict]) -> None:
        if self.broken:
            self.refused += 1
            raise OSError(28, "No space left on device")
        self.real.write(batch)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_folder_keeps_a_file_whose_record_was_not_written(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    worker, metrics, sinks = make_worker(out)
    failing = FailingResults(sinks.results)
    sinks.results = failing
    drop_file(inbox, "part.png", png_bytes(3))
    source = FolderSource(inbox, settle_s=0.1, poll_s=0.05)
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: failing.refused >= 1)
        time.sleep(0.3)
        assert not (inbox / "failed").exists() or not any((inbox / "failed").iterdir())  # not consumed as an error
        assert records(out) == []
        failing.broken = False  # the disk has room again: the same file is scored, once
        assert wait_for(lambda: len(records(out)) == 1)
        assert wait_for(lambda: (inbox / "done" / "part.png").exists())
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    recs = records(out)
    assert [r["name"] for r in recs] == ["part.png"] and "error" not in recs[0]


def test_folder_waits_until_a_file_stops_growing(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    data = png_bytes(3)
    worker, metrics, sinks = make_worker(out)
    source = FolderSource(inbox, settle_s=0.6, poll_s=0.05)
    source.start(worker, metrics)
    try:
        with open(inbox / "slow.png", "wb") as fh:
            for start in range(0, len(data), len(data) // 4 + 1):  # a slow writer: a chunk every 0.3 s
                fh.write(data[start : start + len(data) // 4 + 1])
                fh.flush()
                time.sleep(0.3)
        assert wait_for(lambda: len(records(out)) >= 1)
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    (rec,) = records(out)
    assert rec["name"] == "slow.png" and "error" not in rec


def test_folder_back_pressure_never_drops(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    for i in range(20):
        drop_file(inbox, f"p{i:02d}.png", png_bytes(i))
    worker, metrics, sinks = make_worker(out, delay_s=0.02, max_queue=1, max_batch=1)
    source = FolderSource(inbox, settle_s=0.0, poll_s=0.05)
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: len(list((inbox / "done").iterdir())) == 20)
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    names = [r["name"] for r in records(out)]
    assert sorted(names) == [f"p{i:02d}.png" for i in range(20)]
    assert sample(metrics, "edge_ad_dropped_total", source=source.name) == 0


def test_folder_recovery_reads_the_results_log(tmp_path: Path) -> None:
    """A claim whose record was written moves on without a second record; one without a record is scored."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    (inbox / ".processing").mkdir(parents=True)
    out.mkdir()
    claim = time.time_ns()
    (inbox / ".processing" / f"{claim}-recorded.png").write_bytes(png_bytes(1))
    (inbox / ".processing" / f"{claim}-lost.png").write_bytes(png_bytes(2))
    label = f"folder:{inbox.resolve()}"
    time.sleep(0.01)
    from edge_ad.serve.record import utc_now

    earlier = {"id": "a", "time": "2020-01-01T00:00:00.000Z", "source": label, "name": "lost.png", "verdict": "good"}
    done = {"id": "b", "time": utc_now(), "source": label, "name": "recorded.png", "verdict": "good"}
    (out / "results.jsonl").write_text(json.dumps(earlier) + "\n" + json.dumps(done) + "\n" + '{"torn')
    worker, metrics, sinks = make_worker(out)
    source = FolderSource(inbox, settle_s=0.0, poll_s=0.05)
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: len(list((inbox / "done").iterdir())) == 2)
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    names = [r.get("name") for r in records(out)]
    assert names.count("recorded.png") == 1 and names.count("lost.png") == 2  # the 2020 record is an earlier file's
    assert source.counts["recovered"] == 2 and not list((inbox / ".processing").iterdir())


def test_folder_down_while_missing_and_back_when_remade(tmp_path: Path) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    worker, metrics, sinks = make_worker(out)
    source = FolderSource(inbox, settle_s=0.0, poll_s=0.05)
    source.start(worker, metrics)
    try:
        assert source.status()["up"]
        inbox.rename(tmp_path / "gone")  # an unmounted share (one atomic step: the watcher cannot race it)
        status = source.status()
        assert not status["up"] and "missing" in status["detail"]
        assert sample(metrics, "edge_ad_source_up", source=source.name) == 0
        inbox.mkdir()
        drop_file(inbox, "after.png", png_bytes(4))
        assert wait_for(lambda: (inbox / "done" / "after.png").is_file())  # moved after its record is on disk
        assert source.status()["up"] and len(records(out)) == 1
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.test_serve_sources import make_worker
    from edge_ad.serve.sources import FolderSource
    inbox, out = Path(sys.argv[1]), Path(sys.argv[2])
    worker, metrics, sinks = make_worker(out, delay_s=0.03, max_queue=2, max_batch=2)
    source = FolderSource(inbox, settle_s=0.0, poll_s=0.02)
    source.start(worker, metrics)
    print("started", flush=True)
    while True:
        time.sleep(1)
    """
)


def test_folder_exactly_once_across_sigkill(tmp_path: Path) -> None:
    """40 files, the process is SIGKILLed in the middle and restarted: each file ends once in the log and in done/."""
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    names = [f"part{i:02d}.png" for i in range(40)]
    for i, name in enumerate(names):
        drop_file(inbox, name, png_bytes(i))
    code = CHILD.format(root=str(ROOT))
    env = {**os.environ, "EDGE_AD_QUIET": "1"}

    def launch() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code, str(inbox), str(out)], env=env, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        return proc

    first = launch()
    try:
        assert wait_for(lambda: len(records(out)) >= 12, timeout=60, step=0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    at_kill = len(records(out))
    assert at_kill < 40, "the kill came too late to test anything"
    second = launch()
    try:
        assert wait_for(lambda: len(list((inbox / "done").iterdir())) == 40, timeout=90)
        time.sleep(0.3)  # anything wrongly scored twice would show up now
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    scored = [r["name"] for r in records(out) if "error" not in r]
    assert sorted(scored) == names, "each file exactly once in results.jsonl"
    assert sorted(p.name for p in (inbox / "done").iterdir()) == names
    assert not list((inbox / ".processing").iterdir()) and not list((inbox / "failed").iterdir())
    assert not [p for p in inbox.iterdir() if p.is_file()]


# ---------------------------------------------------------------------------------------------- capture
def write_video(path: Path, frames: int, side: int = 64) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (side, side))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(frames):
        writer.write(textured(i, side)[..., ::-1].copy())
    writer.release()


def test_video_file_every_frame_at_the_fps_limit_then_finished(tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    write_video(video, 12)
    out = tmp_path / "out"
    worker, metrics, sinks = make_worker(out)
    source = parse_source(str(video), fps=20)
    t0 = time.monotonic()
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: source.status()["detail"].startswith("finished"), timeout=20)
        elapsed = time.monotonic() - t0
        assert wait_for(lambda: len(records(out)) == 12)
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    assert elapsed >= 11 / 20 * 0.95, f"12 frames at --fps 20 took only {elapsed:.2f} s"
    assert [r["name"] for r in records(out)] == [str(i) for i in range(12)]
    assert all(r["source"] == f"video:{video}" for r in records(out))
    assert source.status()["up"] and source.frames_dropped == 0


class FakeCamera:
    """A cv2.VideoCapture stand-in: present/absent on demand, a frame every ``period_s``, reads can start failing."""

    def __init__(self, period_s: float = 0.002, present: bool = True, frame: np.ndarray | None = None):
        self.period_s, self.present, self.failing = period_s, present, False
        self.frame = textured(5, 64) if frame is None else frame
        self.opens: list[float] = []
        self.lock = threading.Lock()

    def factory(self, target, api):
        self.opens.append(time.monotonic())
        cam = self

        class Capture:
            def isOpened(self) -> bool:  # noqa: N802
                return cam.present

            def read(self):
                time.sleep(cam.period_s)
                if cam.failing or not cam.present:
                    return False, None
                return True, cam.frame.copy()

            def release(self) -> None:
                pass

        return Capture()


def test_live_fps_limit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cam = FakeCamera(period_s=0.004)  # ~250 frames/s offered
    worker, metrics, sinks = make_worker(out)
    source = parse_source("camera:0", fps=10, capture_factory=cam.factory)
    t0 = time.monotonic()
    source.start(worker, metrics)
    time.sleep(1.5)
    source.stop()
    elapsed = time.monotonic() - t0
    worker.drain_and_stop(5)
    sinks.close()
    n = len(records(out))
    assert source.frames_read > 8 * n, f"the fake camera offered {source.frames_read} frames, {n} scored"
    assert 3 <= n <= 10 * elapsed + 1, f"--fps 10 for {elapsed:.2f} s scored {n} frames"


def test_live_drop_oldest_counts_drops(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cam = FakeCamera(period_s=0.005)
    worker, metrics, sinks = make_worker(out, delay_s=0.1, max_queue=1, max_batch=1)
    source = parse_source("camera:1", capture_factory=cam.factory)
    source.start(worker, metrics)
    time.sleep(1.5)
    source.stop()
    worker.drain_and_stop(5)
    sinks.close()
    dropped = sample(metrics, "edge_ad_dropped_total", source="camera:1")
    assert dropped == source.frames_dropped > 50
    # Every frame read is accounted for: scored/queued, dropped, or the one left in the slot at stop.
    assert source.frames_read - source.frames_submitted - source.frames_dropped in (0, 1)
    assert len(records(out)) == source.frames_submitted < 25
    assert sample(metrics, "edge_ad_queue_policy", source="camera:1", policy="drop-oldest") == 1


def test_camera_down_retries_with_backoff_and_recovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cam = FakeCamera(present=False)
    worker, metrics, sinks = make_worker(out)
    source = CaptureSource(3, kind="camera", fps=20, capture_factory=cam.factory, backoff_s=0.1, max_backoff_s=0.4)
    source.start(worker, metrics)
    try:
        assert wait_for(lambda: len(cam.opens) >= 5, timeout=10)
        status = source.status()
        assert not status["up"] and "cannot open camera:3" in status["detail"]
        assert sample(metrics, "edge_ad_source_up", source="camera:3") == 0
        gaps = np.diff(cam.opens[:5])
        # A wait never ends early, so each gap is at least its back-off: 0.1, 0.2, 0.4, then capped at 0.4.
        assert all(gaps >= np.array([0.1, 0.2, 0.4, 0.4]) * 0.98), f"no back-off: {gaps}"
        cam.present = True  # the camera is plugged in
        assert wait_for(lambda: source.status()["up"] and len(records(out)) >= 3, timeout=5)
        assert sample(metrics, "edge_ad_source_up", source="camera:3") == 1
        cam.failing = True  # ... and pulled out again mid-stream
        assert wait_for(lambda: not source.status()["up"], timeout=5)
        assert "reconnecting" in source.status()["detail"] or "cannot open" in source.status()["detail"]
        cam.failing = False
        before = len(records(out))
        assert wait_for(lambda: source.status()["up"] and len(records(out)) > before + 2, timeout=5)
    finally:
        source.stop()
        worker.drain_and_stop(5)
        sinks.close()
    assert source.reconnects >= 1


def test_blank_frames_are_counted_not_scored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cam = FakeCamera(period_s=0.01, frame=np.zeros((64, 64, 3), np.uint8))  # a covered lens
    worker, metrics, sinks = make_worker(out)
    source = parse_source("camera:0", capture_factory=cam.factory)
    source.start(worker, metrics)
    assert wait_for(lambda: source.frames_rejected >= 5, timeout=5)
    source.stop()
    worker.drain_and_stop(5)
    sinks.close()
    assert records(out) == []
    assert sample(metrics, "edge_ad_errors_total", source="camera:0", reason="rejected") == source.frames_rejected


def test_sources_import_no_torch() -> None:
    assert_runs_without("import edge_ad.serve.sources", ["torch"])


def test_service_wires_folder_and_video_sources(tmp_path: Path) -> None:
    """Through the service's own wiring (ServeConfig -> parse_source -> start/shutdown), no HTTP server."""
    from edge_ad.serve.service import ServeConfig, build_service

    inbox, out, video = tmp_path / "in", tmp_path / "out", tmp_path / "clip.avi"
    inbox.mkdir()
    write_video(video, 5)
    for i in range(3):
        drop_file(inbox, f"p{i}.png", png_bytes(i))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"stand-in: the detector is passed in")
    detector = Detector(SlowRuntime(), Preprocessing(image_size=32, resize=36), 0.0, {})
    config = ServeConfig(model=model, out=out, sources=[f"folder:{inbox}", str(video)], save="none")
    service = build_service(config, detector=detector)
    service.start()
    try:
        assert wait_for(lambda: len(records(out)) == 8)
        assert all(s.status()["up"] for s in service.sources)
    finally:
        assert service.shutdown()
    by_source = {}
    for r in records(out):
        by_source.setdefault(r["source"], []).append(r["name"])
    assert sorted(by_source[f"folder:{inbox.resolve()}"]) == ["p0.png", "p1.png", "p2.png"]
    assert by_source[f"video:{video}"] == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["p0.png", "p1.png", "p2.png"]
