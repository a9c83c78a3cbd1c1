"""K concurrent clients through Triton on loopback against the same model in-process, one run, one machine.

1. In-process: K threads call ``OnnxRuntime.predict`` on one image each, back to back, on one shared session
   (onnxruntime's ``run`` is thread-safe), for ``--seconds``.
2. Triton: the same ONNX in a Python-backend model (``edge-ad export --format triton --python-backend``; the only
   backend of the nvidia-pytriton wheel's CPU tritonserver), dynamic batching as exported; K threads, each with its
   own ``TritonRuntime`` (``--protocol``), send one image per request for ``--seconds``.
   The in-process phase runs again afterwards; its figure is the mean of the two (a shared machine drifts).

Reported: images/s of both, the ratio Triton / in-process, and the batches Triton formed: from the metrics endpoint
(``nv_inference_count`` / ``nv_inference_exec_count`` per model: images per model execution) and, per batch size,
from the statistics extension (``batch_stats``). Results -> ``benchmarks/results/triton_cpu.json`` with the machine.

    python -m edge_ad.benchmarks.bench_triton models/washer/model.fp32.onnx --clients 4 --seconds 15
(the ONNX must have a dynamic batch axis: ``edge-ad export models/washer --dynamic-batch``)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.bench.run import machine_info
from edge_ad.export.triton import DEFAULT_QUEUE_DELAY_US, write_triton_repository
from edge_ad.export.triton_server import TritonServer, metric_values
from edge_ad.io import atomic_write_json
from edge_ad.runtimes.onnx_runtime import OnnxRuntime
from edge_ad.runtimes.triton_runtime import TritonRuntime

DEFAULT_OUT = Path(__file__).parent / "results" / "triton_cpu.json"


def _closed_loop(make_predict: Any, clients: int, seconds: float, images: np.ndarray) -> dict[str, Any]:
    """K threads, each predicting one image at a time until the deadline; images/s and errors."""
    done = [0] * clients
    errors: list[str] = []
    start_gate = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        predict = make_predict()
        start_gate.wait(timeout=120)
        deadline = time.perf_counter() + seconds
        i = k
        while time.perf_counter() < deadline:
            try:
                predict(images[i % len(images)][None])
                done[k] += 1
            except Exception as exc:  # counted and reported, never hidden
                errors.append(repr(exc))
                return
            i += clients

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start_gate.wait(timeout=120)
    began = time.perf_counter()
    for t in threads:
        t.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - began
    return {"images": sum(done), "seconds": round(elapsed, 3), "img_per_s": sum(done) / elapsed, "errors": errors}


def _batch_stats(runtime: TritonRuntime) -> dict[str, int]:
    """{batch size: model executions} from Triton's statistics extension."""
    client = runtime._client()
    stats = client.get_inference_statistics(runtime.model)
    if runtime.protocol == "grpc":
        from google.protobuf import json_format

        stats = json_format.MessageToDict(stats, preserving_proto_field_name=True)
    out: dict[str, int] = {}
    for model in stats.get("model_stats", []):
        for entry in model.get("batch_stats", []):
            out[str(entry["batch_size"])] = int(entry.get("compute_infer", {}).get("count", 0))
    return out


def run(onnx_path: Path, clients: int, seconds: float, protocol: str, max_batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    local = OnnxRuntime(onnx_path)
    size = local.image_size
    images = rng.standard_normal((max(clients, 8), 3, size, size)).astype(np.float32)
    local.predict(images[:1])  # warm-up
    bare_before = _closed_loop(lambda: local.predict, clients, seconds, images)
    with tempfile.TemporaryDirectory(prefix="edge-ad-bench-triton-") as tmp:
        repo = Path(tmp) / "repo"
        export = write_triton_repository(onnx_path, repo, name="edge_ad", python_backend=True, max_batch=max_batch)
        with TritonServer(repo, startup_timeout_s=300) as server:
            url = (server.http_url if protocol == "http" else server.grpc_url) + "/edge_ad"
            probe = TritonRuntime(url, timeout_s=300)
            probe.predict(images[:1])  # warm-up (first run allocates in the backend)
            text = server.metrics()
            count0 = metric_values(text, "nv_inference_count").get("edge_ad", 0.0)
            exec0 = metric_values(text, "nv_inference_exec_count").get("edge_ad", 0.0)
            batches0 = _batch_stats(probe)
            served = _closed_loop(lambda: TritonRuntime(url, timeout_s=300).predict, clients, seconds, images)
            text = server.metrics()
            count = metric_values(text, "nv_inference_count").get("edge_ad", 0.0) - count0
            execs = metric_values(text, "nv_inference_exec_count").get("edge_ad", 0.0) - exec0
            batches = {k: v - batches0.get(k, 0) for k, v in _batch_stats(probe).items()}
            config = export.config.read_text().splitlines()
    bare_after = _closed_loop(lambda: local.predict, clients, seconds, images)
    bare = (bare_before["img_per_s"] + bare_after["img_per_s"]) / 2
    return {
        "benchmark": "bench_triton",
        "machine": machine_info(),
        "load_average": os.getloadavg(),
        "model": {"onnx": str(onnx_path), "image_size": size, "precision": local.precision},
        "clients": clients,
        "seconds_per_phase": seconds,
        "protocol": protocol,
        "triton": {
            **served,
            "max_batch_size": max_batch,
            "max_queue_delay_microseconds": DEFAULT_QUEUE_DELAY_US,
            "preferred_batch_size": next((line for line in config if "preferred_batch_size" in line), "").strip(),
            "nv_inference_count": count,
            "nv_inference_exec_count": execs,
            "mean_batch_formed": count / execs if execs else None,
            "executions_per_batch_size": {k: v for k, v in sorted(batches.items(), key=lambda kv: int(kv[0])) if v},
            "backend": "python (onnxruntime CPU inside the backend stub)",
        },
        "in_process": {"before": bare_before, "after": bare_after, "img_per_s": bare},
        "ratio_triton_over_in_process": served["img_per_s"] / bare if bare else None,
        "note": "one shared 2-core machine: both phases compete with other processes for the same cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="batch-dynamic edge-ad ONNX")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    report = run(args.onnx, args.clients, args.seconds, args.protocol, args.max_batch)
    atomic_write_json(args.out, report)
    tri, bare = report["triton"], report["in_process"]
    print(
        f"triton {tri['img_per_s']:.2f} img/s (mean batch {tri['mean_batch_formed']}), in-process "
        f"{bare['img_per_s']:.2f} img/s, ratio {report['ratio_triton_over_in_process']:.3f} -> {args.out}"
    )


if __name__ == "__main__":
    main()
