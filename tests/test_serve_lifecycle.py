"""`edge-ad serve` as a real process: SIGTERM drains and exits 0; SIGKILL loses nothing that was answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.serve_http import post_image, request


@pytest.fixture(scope="module")
def onnx_model(private_bundle: Path) -> Path:
    """Static batch 1 (the export default): the worker runs batches of one."""
    from edge_ad.export.onnx_export import export_onnx

    return export_onnx(private_bundle, verify=False)


@pytest.fixture(scope="module")
def payload(tiny_demo: Path) -> bytes:
    return sorted((tiny_demo / "test").glob("*/*.png"))[0].read_bytes()


class ServeProcess:
    """``python -m edge_ad.cli.main serve`` on a free loopback port; stderr is read continuously (never blocks it)."""

    def __init__(self, model: Path, out: Path, *extra: str):
        cmd = [sys.executable, "-m", "edge_ad.cli", "serve", str(model), "--port", "0", "--out", str(out)]
        env = {**os.environ, "EDGE_AD_QUIET": "1"}
        env.pop("EDGE_AD_TOKEN", None)
        self.proc = subprocess.Popen([*cmd, *extra], stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120) or self._port is None:
            self.proc.kill()
            raise AssertionError("serve did not start:\n" + "".join(self.lines))
        self.port = self._port

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "listening on http://127.0.0.1:" in line:
                self._port = int(line.split("127.0.0.1:")[1].split()[0])
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if request(self.port, "GET", "/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve never became ready")

    def stop(self, sig: int, timeout: float = 20) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve did not exit within {timeout} s:\n" + "".join(self.lines)) from None
        return rc, time.monotonic() - start


@pytest.fixture
def serve_process(onnx_model: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(*extra: str) -> ServeProcess:
        started.append(ServeProcess(onnx_model, tmp_path / "out", *extra))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def test_sigterm_drains_answers_and_exits_zero(serve_process: Any, payload: bytes, tmp_path: Path) -> None:
    srv = serve_process("--source", "http", "--save", "none", "--max-queue", "16")
    srv.wait_ready()
    answered: list[str] = []
    first = threading.Event()

    def client(k: int) -> list[int | str]:
        got: list[int | str] = []
        for i in range(4):
            try:
                status, _, body = post_image(srv.port, payload, query=f"?name=c{k}-{i}", timeout=30)
            except OSError as exc:  # after shutdown: refused or reset, never a hang
                got.append(type(exc).__name__)
                break
            got.append(status)
            if status == 200:
                answered.append(body["id"])
                first.set()
        return got

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, k) for k in range(8)]
        assert first.wait(60), "no request was answered"
        rc, took = srv.stop(signal.SIGTERM)
        outcomes = [o for f in futures for o in f.result(timeout=60)]
    assert rc == 0, "".join(srv.lines)
    assert took < 10, f"took {took:.1f} s to drain and exit"
    assert set(outcomes) <= {200, 503, "ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected"}
    ids = [r["id"] for r in _records(tmp_path / "out")]
    assert len(ids) == len(set(ids))
    assert set(answered) <= set(ids) and answered  # every 200 is on disk
    assert len(ids) >= len(answered)
    assert "Traceback" not in "".join(srv.lines)


def test_sigkill_loses_nothing_answered_and_restart_appends(
    serve_process: Any, payload: bytes, tmp_path: Path
) -> None:
    srv = serve_process("--source", "http", "--save", "all")
    srv.wait_ready()
    answered = []
    for i in range(5):
        status, _, body = post_image(srv.port, payload, query=f"?name=k{i}")
        assert status == 200, body
        answered.append(body["id"])
    rc, _ = srv.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    out = tmp_path / "out"
    assert [r["id"] for r in _records(out)] == answered
    assert all((out / "overlays" / f"{rid}.png").is_file() for rid in answered)

    again = serve_process("--source", "http", "--save", "none")
    again.wait_ready()
    status, _, body = post_image(again.port, payload, query="?name=after")
    assert status == 200
    rc, _ = again.stop(signal.SIGTERM)
    assert rc == 0, "".join(again.lines)
    assert [r["id"] for r in _records(out)] == [*answered, body["id"]]
