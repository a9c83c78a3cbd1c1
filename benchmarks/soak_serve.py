"""Soak ``edge-ad serve``: steady HTTP load on 127.0.0.1 for a stated time, watching what a months-long run would leak.

A line-side service answers millions of requests between restarts, so its memory and descriptors must not grow with
the number of requests. This runs ``edge-ad serve MODEL --source http --save none`` in its own process, with a small
``--rotate-mb`` so that results.jsonl rotates several times, and ``--clients`` keep-alive connections that send PNGs
at a steady total ``--rate`` (open loop per client: a late answer is not made up for with a burst). Every
``--sample-s`` seconds it records the service's RSS, open file descriptors and threads (from ``/proc/PID``), the
requests answered so far, the p50/p99 latency of the answers since the last sample and the size of the results
files. The summary states the least-squares slope of RSS (MiB) and of descriptors and threads per 10,000 requests,
fitted after the first ``--warmup-fraction`` of the samples (start-up allocation is not a leak), and how many
rotations happened. The JSON report goes to ``benchmarks/results/soak_serve_cpu.json`` unless ``--out`` says.

    python -m edge_ad.benchmarks.soak_serve                       # 10 minutes, tiny model built on the spot
    python -m edge_ad.benchmarks.soak_serve MODEL.onnx --seconds 20 --sample-s 1   # a smoke run

Without MODEL a tiny SimpleNet (random backbone, 64 px, 2 epochs on 12 demo images) is trained and exported to ONNX
in a temporary folder first (needs [train]); the service itself runs torch-free on that ONNX. CI does not run the
10-minute soak; ``tests/test_soak_serve.py`` runs the measurement and slope code on a short one.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.benchmarks.bench_serve import ServiceProcess, post, textured_pngs
from edge_ad.io import atomic_write_json

DEFAULT_OUT = Path(__file__).parent / "results" / "soak_serve_cpu.json"
PER_REQUESTS = 10_000


@dataclass
class Sample:
    """One look at the service: when, after how many answers, what it holds, how fast it answered lately."""

    t_s: float
    requests: int
    errors: int
    rss_mib: float
    open_fds: int
    threads: int
    results_bytes: int
    results_files: int
    p50_ms: float | None
    p99_ms: float | None


def process_usage(pid: int) -> dict[str, float | int]:
    """RSS (MiB), open descriptors and threads of a live process, read from ``/proc`` (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    return {
        "rss_mib": rss_kib / 1024.0,
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"].strip()),
    }


def results_size(out: Path) -> tuple[int, int]:
    """Bytes and number of results files (results.jsonl and its rotated results.jsonl.N)."""
    files = [p for p in out.glob("results.jsonl*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def slope_per(samples: list[dict[str, Any]], key: str, per: int = PER_REQUESTS, warmup_fraction: float = 0.2) -> float:
    """Least-squares slope of ``key`` against the request count, per ``per`` requests, after the warm-up samples.

    Fewer than two usable samples, or no requests between them, give 0.0 (nothing measured is no growth claimed).
    """
    usable = samples[int(len(samples) * warmup_fraction) :]
    if len(usable) < 2:
        return 0.0
    x = np.asarray([s["requests"] for s in usable], dtype=np.float64)
    y = np.asarray([s[key] for s in usable], dtype=np.float64)
    if np.ptp(x) == 0:
        return 0.0
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * per)


def rotations_seen(samples: list[dict[str, Any]], rotated_files_at_end: int) -> int:
    """Rotations: the live file shrank between two samples, or rotated files exist at the end (a lower bound)."""
    shrinks = sum(1 for a, b in zip(samples, samples[1:], strict=False) if b["live_bytes"] < a["live_bytes"])
    return max(shrinks, rotated_files_at_end)


class Load:
    """``clients`` threads on keep-alive connections, together sending ``rate`` requests/s; latency per answer."""

    def __init__(self, port: int, bodies: list[bytes], rate: float, clients: int):
        self.port, self.bodies, self.clients = port, bodies, clients
        self.interval = clients / rate
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.answered = 0
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _client(self, k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = k
        next_at = time.perf_counter() + k * self.interval / self.clients
        while not self.stop.is_set():
            delay = next_at - time.perf_counter()
            if delay > 0:
                self.stop.wait(delay)
            t0 = time.perf_counter()
            try:
                status = post(conn, self.bodies[i % len(self.bodies)])
            except OSError:
                status = -1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            ms = (time.perf_counter() - t0) * 1e3
            with self.lock:
                if status == 200:
                    self.answered += 1
                    self.latencies_ms.append(ms)
                else:
                    self.errors += 1
            i += self.clients
            next_at = max(next_at + self.interval, time.perf_counter() - self.interval)  # no catch-up burst
        conn.close()

    def take(self) -> tuple[int, int, list[float]]:
        """Answers and errors so far, and the latencies since the last call."""
        with self.lock:
            lat, self.latencies_ms = self.latencies_ms, []
            return self.answered, self.errors, lat

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=70)


def soak(
    model: Path,
    out: Path,
    *,
    seconds: float,
    sample_s: float,
    rate: float,
    clients: int,
    rotate_mb: float,
    keep_rotated: int = 3,
    image_side: int = 96,
    warmup_fraction: float = 0.2,
) -> dict[str, Any]:
    """Run the service under load for ``seconds``; returns the report (samples and summary)."""
    bodies = textured_pngs(16, image_side)
    extra = ["--rotate-mb", str(rotate_mb), "--keep-rotated", str(keep_rotated)]
    service = ServiceProcess(model, out, max_queue=64, extra=extra)
    samples: list[dict[str, Any]] = []
    load = Load(service.port, bodies, rate, clients)
    t0 = time.perf_counter()
    try:
        base = process_usage(service.proc.pid)
        load.start()
        while (elapsed := time.perf_counter() - t0) < seconds:
            time.sleep(min(sample_s, max(0.0, seconds - elapsed)))
            answered, errors, lat = load.take()
            usage = process_usage(service.proc.pid)
            total, files = results_size(out)
            live = (out / "results.jsonl").stat().st_size if (out / "results.jsonl").exists() else 0
            p50, p99 = (float(v) for v in np.percentile(lat, [50, 99])) if lat else (None, None)
            sample = Sample(
                round(time.perf_counter() - t0, 2), answered, errors, round(float(usage["rss_mib"]), 2),
                int(usage["open_fds"]), int(usage["threads"]), total, files,
                None if p50 is None else round(p50, 2), None if p99 is None else round(p99, 2),
            )
            samples.append({**asdict(sample), "live_bytes": live})
    finally:
        load.join()
        code, drain_s = service.stop()
    elapsed = time.perf_counter() - t0
    rotated = len([p for p in out.glob("results.jsonl.*") if p.suffix.lstrip(".").isdigit()])
    answered = samples[-1]["requests"] if samples else 0
    all_p50 = [s["p50_ms"] for s in samples if s["p50_ms"] is not None]
    all_p99 = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    summary = {
        "seconds": round(elapsed, 1),
        "requests_answered": answered,
        "requests_failed": samples[-1]["errors"] if samples else 0,
        "requests_per_s": round(answered / elapsed, 2) if elapsed else None,
        "rss_mib": {"start": round(float(base["rss_mib"]), 1), "end": samples[-1]["rss_mib"] if samples else None},
        "open_fds": {"start": int(base["open_fds"]), "end": samples[-1]["open_fds"] if samples else None},
        "threads": {"start": int(base["threads"]), "end": samples[-1]["threads"] if samples else None},
        **{
            f"{key}_per_{PER_REQUESTS}_requests": round(slope_per(samples, key, warmup_fraction=warmup_fraction), 3)
            for key in ("rss_mib", "open_fds", "threads")
        },
        "p50_ms_median_of_samples": round(float(np.median(all_p50)), 2) if all_p50 else None,
        "p99_ms_max_of_samples": round(float(np.max(all_p99)), 2) if all_p99 else None,
        "rotations": rotations_seen(samples, rotated),
        "results_bytes_end": samples[-1]["results_bytes"] if samples else 0,
        "sigterm_exit_code": code,
        "sigterm_seconds": drain_s,
    }
    return {
        "benchmark": "serve_soak",
        "settings": {
            "model": str(model), "seconds": seconds, "sample_s": sample_s, "rate_per_s": rate, "clients": clients,
            "rotate_mb": rotate_mb, "keep_rotated": keep_rotated, "image_side": image_side,
            "warmup_fraction": warmup_fraction,
        },
        "summary": summary,
        "samples": samples,
    }


def tiny_model(folder: Path) -> Path:
    """A tiny SimpleNet bundle (random backbone, 64 px) exported to ONNX: enough to exercise the service."""
    from edge_ad.data.preprocess import Preprocessing
    from edge_ad.datasets.demo import make_demo_dataset
    from edge_ad.export.onnx_export import export_onnx
    from edge_ad.models.simplenet.model import SimpleNetConfig
    from edge_ad.models.simplenet.pipeline import BackboneSpec, random_backbone_recipe, train_bundle
    from edge_ad.models.simplenet.trainer import TrainConfig

    counts = {"n_train": 12, "n_test_good": 2, "n_test_per_defect": 1, "image_size": 96}
    (data,) = make_demo_dataset(folder / "data", ["washer"], seed=3, **counts)
    bundle = train_bundle(
        data,
        folder / "washer",
        backbone=BackboneSpec(random=True),
        preprocessing=Preprocessing(image_size=64, resize=72),
        model_cfg=random_backbone_recipe(SimpleNetConfig()),
        train_cfg=TrainConfig(epochs=2, batch_size=4, seed=1),
    )
    return Path(export_onnx(bundle, verify=False))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?", help="exported .onnx / .engine or bundle (default: a tiny ONNX)")
    ap.add_argument("--seconds", type=float, default=600.0, help="soak length (default 10 minutes)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second, all clients together")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rotate-mb", type=float, default=0.25, help="results.jsonl rotation size (small: it rotates)")
    ap.add_argument("--keep-rotated", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edge-ad-soak-") as tmp:
        model = args.model or tiny_model(Path(tmp) / "model")
        report = soak(
            model, Path(tmp) / "serve-out", seconds=args.seconds, sample_s=args.sample_s, rate=args.rate,
            clients=args.clients, rotate_mb=args.rotate_mb, keep_rotated=args.keep_rotated,
        )
    report["machine"] = machine_info()
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["note"] = "one run; other processes may share the cores (see loadavg_end); model: " + (
        str(args.model) if args.model else "tiny SimpleNet ONNX (random backbone, 64 px)"
    )
    atomic_write_json(args.out, report)
    s = report["summary"]
    print(
        f"soak: {s['requests_answered']} answers in {s['seconds']} s, RSS {s['rss_mib']['start']} -> "
        f"{s['rss_mib']['end']} MiB ({s[f'rss_mib_per_{PER_REQUESTS}_requests']} MiB per 10k requests), fds "
        f"{s['open_fds']['start']} -> {s['open_fds']['end']} ({s[f'open_fds_per_{PER_REQUESTS}_requests']} per 10k), "
        f"{s['rotations']} rotations; report: {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
