"""The live page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium, nothing downloaded):
it loads through the token, shows a POSTed result within a second, draws the overlay and the chart, and logs no
console error. Skips where chromium, chromedriver or selenium is missing (.ci/run installs chromium as root).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from edge_ad.data.preprocess import Preprocessing  # noqa: E402
from edge_ad.detector import Detector  # noqa: E402
from edge_ad.serve.app import ServeState, create_app  # noqa: E402
from edge_ad.serve.metrics import Metrics  # noqa: E402
from edge_ad.serve.sinks import ResultsLog, Sinks  # noqa: E402
from edge_ad.serve.worker import InferenceWorker  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromedriver")
TOKEN = "page-test-token"


class BrightnessRuntime:
    """Runtime contract: the score is the mean normalised pixel, so a bright part is NG at threshold 0."""

    name = "fake"
    image_size = 32

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = batch.reshape(len(batch), -1).mean(axis=1).astype(np.float32)
        maps = np.broadcast_to(scores[:, None, None], (len(batch), 32, 32)).astype(np.float32)
        return scores, maps


def part_png(seed: int, bright: bool) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(150, 256, (48, 48, 3)) if bright else rng.integers(0, 100, (48, 48, 3))
    ok, data = cv2.imencode(".png", base.astype(np.uint8))
    assert ok
    return data.tobytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A.'s app over the real worker (fake runtime), on a loopback port, with a token required."""
    detector = Detector(BrightnessRuntime(), Preprocessing(image_size=32, resize=36), 0.0, {})
    metrics = Metrics()
    sinks = Sinks(results=ResultsLog(tmp_path / "results.jsonl"))
    worker = InferenceWorker(detector, sinks, metrics, max_queue=8)
    worker.start()
    state = ServeState(
        detector=detector, worker=worker, metrics=metrics, token=TOKEN, require_token=True, model_sha256="ab" * 32
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not srv.started and time.monotonic() < end:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)
    worker.drain_and_stop(5)
    sinks.close()
    sock.close()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def post(base: str, data: bytes, name: str) -> dict:
    request = urllib.request.Request(
        f"{base}/v1/predict?name={name}",
        data=data,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait(driver, script: str, timeout: float) -> float:
    """Seconds until ``script`` (JS returning a bool) is true; fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if driver.execute_script(script):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s: {script}")


def test_live_page_shows_a_new_result_within_a_second(server: str, browser) -> None:
    driver = browser
    driver.get(f"{server}/?token={TOKEN}")
    wait(driver, "return document.getElementById('ready').textContent === 'ready'", 15)
    assert driver.find_element("id", "verdict").text.lower() == "waiting"
    assert "http" in driver.find_element("id", "sources").text

    good = post(server, part_png(1, bright=False), "dark-part")
    shown = wait(driver, f"return document.getElementById('latest').dataset.recordId === {json.dumps(good['id'])}", 5)
    assert shown <= 1.0, f"the page showed the result {shown:.2f} s after the answer"
    assert driver.find_element("id", "verdict").text == "GOOD" and good["verdict"] == "good"
    assert driver.find_element("id", "name").text == "dark-part"

    ng = post(server, part_png(2, bright=True), "<b>bright</b>")  # a name is data, never markup
    shown = wait(driver, f"return document.getElementById('latest').dataset.recordId === {json.dumps(ng['id'])}", 5)
    assert shown <= 1.0, f"the page showed the result {shown:.2f} s after the answer"
    assert ng["verdict"] == "anomalous" and driver.find_element("id", "verdict").text == "NG"
    assert driver.find_element("id", "name").text == "<b>bright</b>"
    shown = wait(driver, f"return document.getElementById('overlay').dataset.recordId === {json.dumps(ng['id'])}", 5)
    assert shown <= 2.0, f"the page drew the NG part's overlay {shown:.2f} s after the answer"
    wait(driver, "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0", 5)
    assert driver.execute_script("return document.getElementById('chart').dataset.points") == "2"
    assert driver.find_element("id", "ngrate").text == "50.0 %"
    assert len(driver.find_elements("css selector", "#recent tbody tr")) == 2

    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert problems == [], problems


def test_page_without_token_is_refused(server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server}/v1/results?limit=1", timeout=10)
    assert info.value.code == 401
    with urllib.request.urlopen(f"{server}/static/app.js", timeout=10) as response:  # assets carry no data
        assert b"v1/results" in response.read()
