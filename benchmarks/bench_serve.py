"""``edge-ad serve`` against the bare runtime, same machine, same run: saturation throughput, latency at a fixed rate.

1. Bare runtime: ``Detector.predict_arrays`` in a loop on the same decoded images, in batches of the size the service
   would use (the runtime's batch size, else 8), for ``--seconds``; bare and service phases alternate ``--rounds``
   times (bare first and last), and each service phase is compared with the mean of the bare phases around it (on a
   shared machine the load drifts); the ratio reported is the median over rounds.
2. The service: ``edge-ad serve MODEL --source http --save none`` in its own process on a loopback port; ``--clients``
   threads POST PNG files back to back for ``--seconds`` (saturation: the queue never runs dry). Throughput counts
   200 answers only; 503s are reported beside it. Ratio = service / bare (goal: >= 0.9).
3. Fixed rate: requests sent open-loop at ``--rate-fraction`` of the service's measured throughput; latency is from
   the scheduled send time to the answer (queueing included), p50/p99.

The service's figure includes what the bare loop does not: HTTP, decoding through the input gate, the record's fsync.
Both phases run one after the other, never together. On a shared machine other processes compete for the same cores;
the load average before and after is recorded.

    python -m edge_ad.benchmarks.bench_serve models/washer/model.fp32.onnx --seconds 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.data.gate import decode_image
from edge_ad.data.images import list_images
from edge_ad.detector import Detector
from edge_ad.io import atomic_write_json
from edge_ad.serve.worker import model_sha256

DEFAULT_OUT = Path(__file__).parent / "results" / "serve_cpu.json"
DEFAULT_MAX_BATCH = 8  # the worker's default for a dynamic batch (edge_ad/serve/worker.py)


def textured_pngs(n: int, side: int, seed: int = 0) -> list[bytes]:
    """Synthetic part photos (smooth texture plus grain) when no image folder is given."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(40, 220, (side // 16, side // 16, 3)).astype(np.uint8)
        img = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".png", img)
        assert ok
        out.append(data.tobytes())
    return out


def bare_runtime(detector: Detector, images: list[np.ndarray], batch: int, seconds: float) -> dict[str, Any]:
    """Images/s of predict_arrays alone, after one warm-up batch."""
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    chunks = [c for c in chunks if len(c) == batch] or [(images * batch)[:batch]]
    detector.predict_arrays(chunks[0])
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        detector.predict_arrays(chunks[done // batch % len(chunks)])
        done += batch
    elapsed = time.perf_counter() - t0
    return {"images": done, "seconds": round(elapsed, 3), "images_per_s": round(done / elapsed, 3)}


class ServiceProcess:
    """``edge-ad serve`` in a child process on a free loopback port."""

    def __init__(self, model: Path, out: Path, max_queue: int, extra: list[str] | None = None):
        cmd = [sys.executable, "-m", "edge_ad.cli.main", "serve", str(model), "--source", "http", "--port", "0"]
        cmd += ["--out", str(out), "--save", "none", "--max-queue", str(max_queue), *(extra or [])]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGE_AD_QUIET": "1"})
        self.port = self._port_from_log(timeout=180)
        threading.Thread(target=self._drain_log, daemon=True).start()
        self._wait_ready(timeout=120)

    def _port_from_log(self, timeout: float) -> int:
        assert self.proc.stderr is not None
        end = time.monotonic() + timeout
        lines = []
        while time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("edge-ad serve exited: " + "".join(lines[-5:]))
            lines.append(line)
            found = re.search(r"listening on http://[^:]+:(\d+)", line)
            if found:
                return int(found.group(1))
        raise RuntimeError("edge-ad serve did not say where it listens")

    def _drain_log(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def _wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("edge-ad serve never became ready")

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, as systemd would; returns the exit code and how long the drain took."""
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        return code, round(time.perf_counter() - t0, 3)


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    response.read()
    return response.status


def saturate(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections posting back to back; counts answers by status."""
    counts: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        start.wait()
        while time.perf_counter() < deadline[0]:
            status = post(conn, bodies[i % len(bodies)])
            i += clients
            with lock:
                counts[status] = counts.get(status, 0) + 1
            if status == 503:
                time.sleep(0.01)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0  # includes the last answers in flight at the deadline
    ok = counts.get(200, 0)
    return {
        "clients": clients,
        "seconds": round(elapsed, 3),
        "answers": {str(k): v for k, v in sorted(counts.items())},
        "images_per_s": round(ok / elapsed, 3),
    }


def fixed_rate(port: int, bodies: list[bytes], rate: float, n: int) -> dict[str, Any]:
    """Open-loop requests at ``rate``/s; latency from each request's scheduled time to its answer."""
    local = threading.local()
    t0 = time.perf_counter() + 0.2

    def one(i: int) -> tuple[int, float]:
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status = post(local.conn, bodies[i % len(bodies)])
        return status, time.perf_counter() - scheduled

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(n)))
    lat = [s * 1000 for status, s in results if status == 200]
    p50, p99 = np.percentile(lat, [50, 99]) if lat else (float("nan"), float("nan"))
    return {
        "rate_per_s": round(rate, 3),
        "requests": n,
        "ok": len(lat),
        "not_ok": n - len(lat),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="exported .onnx / .engine or bundle folder")
    ap.add_argument("--images", type=Path, help="folder of images to send (default: synthetic PNGs)")
    ap.add_argument("--image-side", type=int, default=256, help="side of the synthetic PNGs")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each throughput phase")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="bare/service alternations (the ratio is their median)")
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--rate-fraction", type=float, default=0.5, help="fixed rate as a share of saturation")
    ap.add_argument("--rate-requests", type=int, default=0, help="requests at the fixed rate (default: 15 s worth)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    if args.images:
        bodies = [p.read_bytes() for p in list_images(args.images)][:32]
    else:
        bodies = textured_pngs(16, args.image_side)
    images = [decode_image(b, f"bench image {i}") for i, b in enumerate(bodies)]
    load_before = os.getloadavg()

    detector = Detector.load(args.model)
    batch = getattr(detector.runtime, "batch_size", None) or DEFAULT_MAX_BATCH
    bares: list[dict[str, Any]] = []
    serves: list[dict[str, Any]] = []

    def bare_phase() -> None:
        bares.append(bare_runtime(detector, images, batch, args.seconds))
        print(f"bare runtime: {bares[-1]['images_per_s']:.2f} img/s (batch {batch})", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="edge-ad-bench-serve-") as tmp:
        service = ServiceProcess(args.model, Path(tmp), args.max_queue)
        try:
            saturate(service.port, bodies, args.clients, min(3.0, args.seconds))  # warm-up, not counted
            for _ in range(args.rounds):  # bare, service, bare, service, ..., bare: the load drifts on a shared box
                bare_phase()
                serves.append(saturate(service.port, bodies, args.clients, args.seconds))
                print(f"service: {serves[-1]['images_per_s']:.2f} img/s {serves[-1]['answers']}", file=sys.stderr)
            bare_phase()
            rate = args.rate_fraction * statistics.median(x["images_per_s"] for x in serves)
            n = args.rate_requests or max(20, int(rate * 15))
            fixed = fixed_rate(service.port, bodies, rate, n)
            print(f"fixed rate {rate:.2f}/s: p50 {fixed['p50_ms']} ms, p99 {fixed['p99_ms']} ms", file=sys.stderr)
        finally:
            code, drain_s = service.stop()
        records = len((Path(tmp) / "results.jsonl").read_text(encoding="utf-8").splitlines())
    # Each service phase against the mean of the bare phases on either side of it.
    ratios = [
        x["images_per_s"] / ((bares[i]["images_per_s"] + bares[i + 1]["images_per_s"]) / 2)
        for i, x in enumerate(serves)
    ]
    served = {"images_per_s": round(statistics.median(x["images_per_s"] for x in serves), 3), "phases": serves}
    bare = {"images_per_s": round(statistics.median(x["images_per_s"] for x in bares), 3), "phases": bares}
    ratio = statistics.median(ratios)
    result = {
        "benchmark": "serve_vs_bare_runtime",
        "machine": machine_info(),
        "model": {
            "path": str(args.model),
            "sha256": model_sha256(args.model),
            "runtime": getattr(detector.runtime, "name", type(detector.runtime).__name__),
            "precision": getattr(detector.runtime, "precision", None),
            "image_size": detector.preprocessing.image_size,
        },
        "images": {"count": len(bodies), "source": str(args.images or f"synthetic {args.image_side}px PNG")},
        "batch": batch,
        "bare_runtime": bare,
        "service_saturation": served,
        "throughput_ratio": round(ratio, 3),
        "throughput_ratio_per_round": [round(r, 3) for r in ratios],
        "goal_ratio": 0.9,
        "goal_met": ratio >= 0.9,
        "fixed_rate": fixed,
        "records_written": records,
        "sigterm_exit_code": code,
        "sigterm_seconds": drain_s,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "note": "one run; bare and service phases alternate (never together) in the same run on the same machine; "
        "ratio = median over rounds of service / mean of the bare phases around it; "
        "service = HTTP + gate decode + inference + fsync'd record, --save none; other processes may share the cores",
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
