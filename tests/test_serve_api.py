"""The serve core on loopback: HTTP API against the exported ONNX, bad inputs, load with 503s, auth, sinks, layering."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ad.detector import Detector
from edge_ad.serve.app import ServeState, create_app, token_ok
from edge_ad.serve.metrics import Metrics
from edge_ad.serve.service import ServeConfig, Service, build_service, is_loopback
from edge_ad.serve.sinks import OverlaySaver, ResultsLog, Sinks, WebhookSink
from edge_ad.serve.worker import InferenceWorker, Job
from tests.layering import assert_runs_without
from tests.serve_http import (
    get_json,
    multipart,
    png_header_only,
    post_image,
    raw_exchange,
    request,
    running_app,
)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def onnx_model(private_bundle: Path) -> Path:
    """The tiny bundle exported with a dynamic batch axis, so the worker really batches."""
    from edge_ad.export.onnx_export import export_onnx

    return export_onnx(private_bundle, private_bundle / "model.fp32.onnx", dynamic_batch=True, verify=False)


@pytest.fixture(scope="module")
def detector(onnx_model: Path) -> Detector:
    return Detector.load(onnx_model)


@pytest.fixture(scope="module")
def images(tiny_demo: Path) -> list[Path]:
    files = sorted((tiny_demo / "test").glob("*/*.png"))
    assert len(files) >= 6
    return files


@pytest.fixture(scope="module")
def served(
    onnx_model: Path, detector: Detector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, int]]:
    out = tmp_path_factory.mktemp("serve_out")
    service = build_service(ServeConfig(model=onnx_model, out=out, save="ng", max_body_mb=1.0), detector=detector)
    service.start()
    with running_app(service.app) as port:
        yield service, port
    assert service.shutdown()


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def _metric(text: str, name: str) -> float:
    """Sum of every sample of a metric family in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


class StubSource:
    """A Source whose status the test sets; records start/stop calls."""

    def __init__(self, name: str, up: bool):
        self.name, self.up, self.started, self.stopped = name, up, False, False

    def start(self, worker: InferenceWorker, metrics: Metrics) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def status(self) -> dict[str, Any]:
        return {"up": self.up, "detail": "ok" if self.up else "stub camera unplugged"}


def _state(detector: Detector, tmp: Path, **kw: Any) -> tuple[ServeState, InferenceWorker]:
    metrics = Metrics()
    worker = InferenceWorker(detector, Sinks(ResultsLog(tmp / "results.jsonl")), metrics, max_queue=8)
    worker.start()
    return ServeState(detector=detector, worker=worker, metrics=metrics, **kw), worker


# ----------------------------------------------------------------------------- parity and API shape
def test_scores_equal_detector_and_predict_cli(
    served: tuple[Service, int], detector: Detector, images: list[Path], onnx_model: Path, tmp_path: Path
) -> None:
    service, port = served
    picked = images[:6]
    answers = []
    for path in picked:
        status, _, body = post_image(port, path.read_bytes(), query=f"?name={path.name}")
        assert status == 200, body
        answers.append(body)
    library = detector.predict(picked)
    from edge_ad.cli.main import app

    result = CliRunner().invoke(app, ["predict", str(onnx_model), *map(str, picked), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    (pred_file,) = (tmp_path / "p").rglob("predictions.jsonl")
    cli_scores = [json.loads(line)["image_score"] for line in pred_file.read_text().splitlines()]
    for body, lib, cli_score, path in zip(answers, library, cli_scores, picked, strict=True):
        assert abs(body["image_score"] - lib.image_score) <= 1e-5, path
        assert abs(body["image_score"] - cli_score) <= 1e-5, path
        assert body["verdict"] == lib.verdict and body["threshold"] == pytest.approx(detector.threshold, abs=1e-6)
        assert body["name"] == path.name and body["source"] == "http"
        assert body["model_sha256"] == service.model_hash and len(body["model_sha256"]) == 64
        assert body["latency_ms"] > 0 and body["time"].endswith("Z")
    on_disk = {r["id"]: r for r in _records(service.config.out)}
    for body in answers:  # answered only after its record was written
        assert on_disk[body["id"]]["image_score"] == body["image_score"]
        if body["verdict"] == "anomalous":  # --save ng: overlays of NG parts, named by record id
            assert (service.config.out / body["overlay"]).is_file()
            assert body["overlay"] == f"overlays/{body['id']}.png"
        else:
            assert "overlay" not in body
    assert {b["verdict"] for b in answers} <= {"good", "anomalous"}


def test_multipart_and_map_png(served: tuple[Service, int], detector: Detector, images: list[Path]) -> None:
    _, port = served
    data = images[-1].read_bytes()
    body, ctype = multipart("image", "../../etc/passwd.png", data)
    status, _, answer = post_image(port, body, ctype, query="?map=png")
    assert status == 200, answer
    (expected,) = detector.predict([images[-1]])
    assert abs(answer["image_score"] - expected.image_score) <= 1e-5
    assert answer["name"] == "../../etc/passwd.png"  # only data in the record, never a path
    png = cv2.imdecode(np.frombuffer(base64.b64decode(answer["overlay_png"]), np.uint8), cv2.IMREAD_COLOR)
    size = detector.preprocessing.image_size
    assert png.shape == (size, size, 3)
    status, head, raw = request(port, "GET", "/v1/latest/overlay.png")
    assert status == 200 and head["content-type"] == "image/png" and head["x-record-id"] == answer["id"]
    assert cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR).shape == (size, size, 3)
    status, listing = get_json(port, "/v1/results?limit=1")
    assert status == 200 and [r["id"] for r in listing["results"]] == [answer["id"]]
    assert listing["threshold"] == pytest.approx(detector.threshold)


def test_bad_inputs_get_one_line_4xx_and_service_goes_on(served: tuple[Service, int], images: list[Path]) -> None:
    service, port = served
    good = images[0].read_bytes()
    cases = {
        "zero bytes": (b"", "image/png", 400),
        "truncated png": (good[: len(good) // 2], "image/png", 400),
        "text": (b"hello, this is not an image\n" * 20, "image/png", 400),
        "wrong content type": (good, "text/plain", 415),
        "no content type": (good, "", 415),
        "20000x20000 png": (png_header_only(20000, 20000), "image/png", 422),
        "tiny image": (cv2.imencode(".png", np.full((8, 8, 3), 100, np.uint8))[1].tobytes(), "image/png", 422),
    }
    for label, (data, ctype, expected) in cases.items():
        start = time.perf_counter()
        status, _, body = post_image(port, data, ctype)
        assert status == expected, (label, body)
        assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"], label
        if label == "20000x20000 png":  # refused from the header: no 1.2 GB decode
            assert time.perf_counter() - start < 2.0 and "pix" in body["error"].lower()
        assert request(port, "GET", "/healthz")[0] == 200
    status, _, body = post_image(port, good, "image/png", query="?map=jpeg")
    assert status == 400
    body_no_field, ctype = multipart("photo", "a.png", good)
    assert post_image(port, body_no_field, ctype)[0] == 400

    limit = 2**20  # max_body_mb=1.0 in the fixture
    # Refused by Content-Length before any byte of the body is sent.
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {50 * limit}\r\n\r\n"
    answer = raw_exchange(port, head.encode(), [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Refused by counting a streamed (chunked) body that announces no length.
    head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"\x00" * 65536
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * (limit // len(piece) + 2) + [b"0\r\n\r\n"]
    answer = raw_exchange(port, head.encode(), chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the limit" in answer

    status, _, body = post_image(port, good)
    assert status == 200 and "image_score" in body
    metrics = request(port, "GET", "/metrics")[2].decode()
    assert _metric(metrics, 'edge_ad_errors_total{reason="too_large",source="http"}') == 2
    assert _metric(metrics, 'edge_ad_errors_total{reason="content_type",source="http"}') == 2
    assert _metric(metrics, 'edge_ad_errors_total{reason="rejected",source="http"}') == 2


def test_health_ready_metrics_and_page(served: tuple[Service, int]) -> None:
    service, port = served
    assert get_json(port, "/healthz") == (200, {"status": "ok"})
    status, ready = get_json(port, "/readyz")
    assert status == 200 and ready["ready"] is True and ready["not_ready"] == []
    status, head, text = request(port, "GET", "/metrics")
    assert status == 200 and head["content-type"].startswith("text/plain")
    for name in (
        "edge_ad_latency_seconds_bucket",
        "edge_ad_queue_depth",
        "edge_ad_rejected_busy_total",
        'edge_ad_queue_policy{policy="reject-503",source="http"}',
    ):
        assert name.encode() in text, name
    assert get_json(port, "/v1/results?limit=0")[0] == 400
    assert get_json(port, "/v1/results?limit=abc")[0] == 400
    status, head, page = request(port, "GET", "/")
    assert status == 200 and head["content-type"].startswith("text/html") and b"<" in page
    assert request(port, "GET", "/favicon.ico")[0] == 204  # what a browser asks for: no 404 in the log


def test_readyz_names_the_source_that_is_down_and_predict_404_without_http(detector: Detector, tmp_path: Path) -> None:
    camera, folder = StubSource("camera:0", up=False), StubSource("folder:/in", up=True)
    state, worker = _state(detector, tmp_path, sources=[camera, folder], http_enabled=False)
    with running_app(create_app(state)) as port:
        status, ready = get_json(port, "/readyz")
        assert status == 503 and ready["ready"] is False
        assert ready["not_ready"] == ["camera:0: stub camera unplugged"]
        assert ready["sources"]["folder:/in"]["up"] is True
        metrics = request(port, "GET", "/metrics")[2].decode()
        assert 'edge_ad_source_up{source="camera:0"} 0.0' in metrics
        assert 'edge_ad_source_up{source="folder:/in"} 1.0' in metrics
        camera.up = True  # recovers by itself
        assert get_json(port, "/readyz")[0] == 200
        status, _, body = post_image(port, b"\x89PNG")
        assert status == 404 and "--source http" in body["error"]
        assert get_json(port, "/v1/latest/overlay.png")[0] == 404
    assert worker.drain_and_stop(5)


# ----------------------------------------------------------------------------- load, 503s, counts
def test_bounded_load_every_request_answered_and_counted(
    onnx_model: Path, detector: Detector, images: list[Path], tmp_path: Path
) -> None:
    config = ServeConfig(model=onnx_model, out=tmp_path, save="none", max_queue=2, max_batch=4)
    service = build_service(config, detector=detector)
    service.start()
    payloads = [p.read_bytes() for p in images[:4]]
    clients, per_client = 32, 20

    def client(k: int) -> list[tuple[int, str | None, str | None]]:
        got = []
        for i in range(per_client):
            status, head, body = post_image(port, payloads[(k + i) % len(payloads)], query=f"?name=c{k}-{i}")
            got.append((status, body.get("id") if status == 200 else None, head.get("retry-after")))
        return got

    with running_app(service.app) as port, ThreadPoolExecutor(clients) as pool:
        answers = [a for batch in pool.map(client, range(clients)) for a in batch]
        metrics = request(port, "GET", "/metrics")[2].decode()
    assert service.shutdown()
    statuses = Counter(status for status, _, _ in answers)
    assert len(answers) == clients * per_client
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # the queue of 2 overflowed, and work was done
    assert all(retry == "1" for status, _, retry in answers if status == 503)
    records = _records(tmp_path)
    assert len(records) == statuses[200]
    assert {r["id"] for r in records} == {rid for status, rid, _ in answers if status == 200}
    assert _metric(metrics, "edge_ad_rejected_busy_total") == statuses[503]
    assert _metric(metrics, "edge_ad_images_scored_total") == statuses[200]
    assert _metric(metrics, "edge_ad_batch_size_count") < statuses[200]  # some batches held more than one image


# ----------------------------------------------------------------------------- worker
def test_worker_refuses_when_full_and_drains_on_stop(detector: Detector, images: list[Path], tmp_path: Path) -> None:
    from edge_ad.data.images import read_image

    metrics = Metrics()
    worker = InferenceWorker(detector, Sinks(ResultsLog(tmp_path / "results.jsonl")), metrics, max_queue=3)
    assert worker.max_batch == 8  # dynamic-batch ONNX: the default
    done: list[dict[str, Any]] = []
    img = read_image(images[0])
    jobs = [Job(image=img, source="test", name=f"n{i}", on_done=done.append) for i in range(4)]
    assert [worker.submit(j, block=False) for j in jobs] == [True, True, True, False]  # not started: nothing taken
    assert worker.queue_depth() == 3
    assert not worker.submit(jobs[3], block=True, timeout=0.2)
    worker.start()
    blank = Job(image=np.zeros((64, 64, 3), np.uint8), source="test", name="blank", on_done=done.append)
    assert worker.submit(blank, block=True, timeout=10)
    assert worker.drain_and_stop(30)
    assert not worker.submit(jobs[3], block=False)  # intake stays closed
    assert [r["name"] for r in done] == ["n0", "n1", "n2", "blank"]
    assert "error" in done[-1] and "image_score" in done[0]  # a blank frame fails alone, never its batch
    assert len(_records(tmp_path)) == 4
    err = worker.record_error(source="folder:/x", name="bad.png", error="cannot decode", reason="bad_image")
    assert err["error"] == "cannot decode" and worker.recent(1) == [err]
    assert b'edge_ad_errors_total{reason="bad_image",source="folder:/x"} 1.0' in metrics.render()


# ----------------------------------------------------------------------------- token auth
def test_token_check_function() -> None:
    assert token_ok("Bearer s3cret", None, "s3cret")
    assert token_ok("bearer s3cret", None, "s3cret")
    assert token_ok(None, "s3cret", "s3cret")
    assert not token_ok(None, None, "s3cret")
    assert not token_ok("Bearer wrong", "s3cret", "s3cret")  # a wrong header is not rescued by the query
    assert not token_ok("Basic s3cret", None, "s3cret")
    assert not token_ok("Bearer ", None, "s3cret")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("plant-host")
    with pytest.raises(ValueError, match="EDGE_AD_TOKEN"):
        ServeConfig(model=Path("m.onnx"), out=Path("o"), host="0.0.0.0")
    assert ServeConfig(model=Path("m.onnx"), out=Path("o"), host="0.0.0.0", token="t").require_token


def test_token_required_on_every_route_but_health_and_metrics(
    detector: Detector, images: list[Path], tmp_path: Path
) -> None:
    tokenless, idle = _state(detector, tmp_path / "a", require_token=True)
    with pytest.raises(ValueError, match="token"):
        create_app(tokenless)
    assert idle.drain_and_stop(5)
    state, worker = _state(detector, tmp_path, require_token=True, token="s3cret")
    good = images[0].read_bytes()
    bearer = {"Authorization": "Bearer s3cret"}
    with running_app(create_app(state)) as port:  # bound to 127.0.0.1 even though the token is enforced
        assert request(port, "GET", "/healthz")[0] == 200
        assert request(port, "GET", "/metrics")[0] == 200
        assert request(port, "GET", "/favicon.ico")[0] == 204  # browsers send no token for it
        for path in ("/readyz", "/v1/results?limit=5", "/", "/v1/latest/overlay.png"):
            status, head, _ = request(port, "GET", path)
            assert status == 401 and head["www-authenticate"] == "Bearer", path
            assert request(port, "GET", path, headers={"Authorization": "Bearer nope"})[0] == 401, path
        assert post_image(port, good)[0] == 401
        assert post_image(port, good, headers=bearer)[0] == 200
        assert request(port, "GET", "/readyz", headers=bearer)[0] == 200
        assert request(port, "GET", "/?token=s3cret")[0] == 200  # the live page opened with ?token=
        assert request(port, "GET", "/v1/results?limit=5&token=s3cret")[0] == 200
    assert worker.drain_and_stop(10)


# ----------------------------------------------------------------------------- sinks
def test_results_log_rotates_and_closes_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"id": "old"}\n{"id": "cut sh')  # a crash in the middle of a line
    log = ResultsLog(path, max_bytes=400, keep=2)
    for i in range(30):
        log.write([{"id": f"r{i:02d}", "pad": "x" * 20}])
    log.close()
    rotated = sorted(p for p in tmp_path.glob("results.jsonl*") if ".torn-" not in p.name)
    assert [p.name for p in rotated] == ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]
    assert [p.read_bytes() for p in tmp_path.glob("results.jsonl.torn-*")] == [b'{"id": "cut sh']  # moved aside
    assert all(p.stat().st_size <= 400 for p in rotated)
    lines = [line for p in reversed(rotated) for line in p.read_text().splitlines()]
    ids = [json.loads(line)["id"] for line in lines if line.startswith('{"id":"r')]
    assert ids == [f"r{i:02d}" for i in range(30 - len(ids), 30)] and len(ids) > 10  # newest kept, in order
    assert all(line.startswith("{") for line in lines)  # no record glued to the cut line


def test_a_restarted_worker_shows_the_results_written_before(detector: Detector, tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, max_bytes=400, keep=3)
    for i in range(20):
        log.write([{"id": f"r{i:02d}", "pad": "x" * 20}])
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn')  # the crash cut the last line
    assert len(list(tmp_path.glob("results.jsonl*"))) > 1  # the tail spans rotated files
    assert [r["id"] for r in ResultsLog(path, keep=3).tail(7)] == [f"r{i:02d}" for i in range(13, 20)]
    sinks = Sinks(results=ResultsLog(path, max_bytes=400, keep=3))
    worker = InferenceWorker(detector, sinks, Metrics(), history=5)
    assert [r["id"] for r in worker.recent(10)] == [f"r{i:02d}" for i in range(15, 20)]
    sinks.close()


def test_overlay_saver_modes(detector: Detector, images: list[Path], tmp_path: Path) -> None:
    (pred,) = detector.predict([images[0]])
    for mode, expect in (("all", True), ("none", False), ("ng", pred.is_anomalous)):
        saver = OverlaySaver(tmp_path / mode, mode, detector.heat_levels)
        rel = saver.save("20260101T000000000000-abcd1234", pred)
        assert (rel is not None) == expect
        if rel:
            assert (tmp_path / mode / rel).is_file() and rel == "overlays/20260101T000000000000-abcd1234.png"
    with pytest.raises(ValueError, match="--save"):
        OverlaySaver(tmp_path, "some", detector.heat_levels)


class _FlakyHook(http.server.BaseHTTPRequestHandler):
    fails_left = 2
    received: list[dict[str, Any]] = []  # noqa: RUF012 - test double

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _FlakyHook.fails_left > 0:
            _FlakyHook.fails_left -= 1
            self.send_response(500)
        else:
            _FlakyHook.received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_retries_counts_failures_and_never_blocks() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    metrics = Metrics()
    hook = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook", metrics, backoff_s=0.01)
    hook.start()
    hook.submit({"id": "a1", "verdict": "good"})
    deadline = time.monotonic() + 10
    while not _FlakyHook.received and time.monotonic() < deadline:
        time.sleep(0.01)
    hook.stop()
    server.shutdown()
    server.server_close()
    assert _FlakyHook.received == [{"id": "a1", "verdict": "good"}]  # delivered on the third try
    assert b"edge_ad_webhook_sent_total 1.0" in metrics.render()

    dead = WebhookSink("http://127.0.0.1:9/none", metrics, max_queue=3, retries=1, backoff_s=0.01, timeout_s=0.5)
    start = time.perf_counter()
    for i in range(50):  # not started: nothing drains, the queue fills at once
        dead.submit({"id": f"x{i}"})
    assert time.perf_counter() - start < 0.5
    dead.start()
    dead.stop(timeout=10)
    text = metrics.render().decode()
    assert 'edge_ad_webhook_failed_total{reason="queue_full"} 47.0' in text
    assert 'edge_ad_webhook_failed_total{reason="unreachable"} 3.0' in text
    with pytest.raises(ValueError, match="http"):
        WebhookSink("file:///etc/passwd", metrics)


# ----------------------------------------------------------------------------- layering and CLI
def test_serve_imports_no_torch_and_help_explains_policies() -> None:
    assert_runs_without(
        "import edge_ad.serve, edge_ad.serve.app, edge_ad.serve.service, edge_ad.serve.worker, "
        "edge_ad.serve.sinks, edge_ad.serve.metrics, edge_ad.serve.record, edge_ad.cli.serve, edge_ad.serve.sources\n"
        "from typer.testing import CliRunner\nfrom edge_ad.cli.main import app\n"
        "r = CliRunner().invoke(app, ['serve', '--help'], terminal_width=200)\n"
        "assert r.exit_code == 0, r.output\n"
        "for word in ('503', 'drops its oldest', 'back-pressure', '--max-queue', '--token', '--save', '--webhook',"
        " '--print-systemd', 'GStreamer', 'EDGE_AD_TOKEN'):\n"
        "    assert word in r.output, word\n",
        ["torch"],
    )


def test_serve_cli_refuses_bad_options_with_one_line(onnx_model: Path, tmp_path: Path) -> None:
    from edge_ad.cli.main import app

    runner = CliRunner()
    cases = [
        ["--host", "0.0.0.0"],
        ["--save", "sometimes"],
        ["--max-queue", "0"],
        ["--source", "ftp://nowhere"],
        ["--webhook", "file:///etc/passwd"],
        ["--port", "70000"],
    ]
    for extra in cases:
        args = ["serve", str(onnx_model), "--out", str(tmp_path), "--port", "0", *extra]
        result = runner.invoke(app, args, env={"EDGE_AD_TOKEN": None})
        assert result.exit_code == 2, (extra, result.output)
        assert "error:" in result.output and "Traceback" not in result.output, extra
    with socket.socket() as busy:  # a port another process listens on: one line, before the model is loaded
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        args = ["serve", str(onnx_model), "--out", str(tmp_path), "--port", str(busy.getsockname()[1])]
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.output, result.output


def test_service_wires_a_folder_source_without_http(
    onnx_model: Path, detector: Detector, images: list[Path], tmp_path: Path
) -> None:
    hot = tmp_path / "in"
    hot.mkdir()
    config = ServeConfig(model=onnx_model, out=tmp_path / "out", sources=[f"folder:{hot}"], save="none")
    service = build_service(config, detector=detector)
    assert not service.state.http_enabled and [s.name for s in service.sources] == [f"folder:{hot.absolute()}"]
    service.start()
    with running_app(service.app) as port:
        names = [f"{i}_{path.parent.name}_{path.name}" for i, path in enumerate(images[:3])]
        for name, path in zip(names, images, strict=False):
            (hot / name).write_bytes(path.read_bytes())
        deadline = time.monotonic() + 30
        while len(list((hot / "done").glob("*"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, ready = get_json(port, "/readyz")
        assert status == 200 and ready["sources"][f"folder:{hot.absolute()}"]["up"] is True
        assert post_image(port, images[0].read_bytes())[0] == 404
        metrics = request(port, "GET", "/metrics")[2].decode()
    assert service.shutdown()
    records = _records(config.out)
    assert sorted(r["name"] for r in records) == sorted(names)
    assert {r["source"] for r in records} == {f"folder:{hot.absolute()}"}
    assert f'edge_ad_queue_policy{{policy="back-pressure",source="folder:{hot.absolute()}"}} 1.0' in metrics
