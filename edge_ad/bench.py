"""``edge-ad bench``: speed (and, with data, accuracy) of every backend and precision in one table.

Each configuration is warmed up, then timed per batch: latency p50/p90/p99, images per second, the ratio to
the paper's 77 FPS (RTX 3080 Ti) and to the reference baseline (the authors' inference path, measured in the
same run on the same device), peak host and device memory. Stages are timed separately: preprocessing,
network (the runtime's ``predict``, which includes the in-graph post-processing), post-processing alone (the
numpy head on the patch map, for scale), and end to end from image files (decode + preprocess + predict).
CPU timing uses a monotonic clock; CUDA timing uses CUDA events and synchronises before reading them.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad import __version__
from edge_ad.bundle import file_sha256, read_bundle
from edge_ad.data.images import list_images, read_image
from edge_ad.data.layout import resolve_category, train_images
from edge_ad.data.preprocess import Preprocessing
from edge_ad.postprocess.numpy_ops import postprocess

PAPER_FPS = 77.0  # SimpleNet paper, WideResNet50, RTX 3080 Ti
BACKENDS = ("torch", "onnxruntime", "tensorrt")


@dataclass
class LatencyStats:
    """Per-batch latency percentiles (milliseconds) and the throughput they imply."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float

    @classmethod
    def from_times(cls, seconds: Sequence[float], batch: int) -> LatencyStats:
        if not seconds:
            raise ValueError("no timings")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), float(batch * 1e3 / p50))


def ratio(value: float, baseline: float) -> float | None:
    """value / baseline, or None when there is no baseline to compare with."""
    return float(value / baseline) if baseline and baseline > 0 else None


@dataclass
class BenchRow:
    backend: str
    precision: str
    device: str
    batch: int
    latency: LatencyStats
    preprocess_ms_per_image: float
    postprocess_ms_per_image: float
    end_to_end_images_per_s: float
    vs_paper_77fps: float | None
    vs_reference: float | None
    peak_host_mib: float
    peak_device_mib: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def time_calls(fn: Callable[[], Any], warmup: int, iters: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call for ``iters`` calls after ``warmup`` untimed ones.

    CPU: a monotonic clock. GPU (``sync`` given): CUDA events recorded around each call on the current
    stream, read after synchronising, so queued work is counted where it runs.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
        import torch

        times = []
        for _ in range(iters):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            sync()
            times.append(start.elapsed_time(stop) / 1e3)
        return times
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def peak_host_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def machine_info() -> dict[str, Any]:
    """CPU, GPU and library versions the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "edge_ad": __version__,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info["gpu"] = out or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    for module in ("torch", "onnxruntime", "tensorrt", "onnx"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def _sample_files(data: Path | None, image_size: int, count: int, scratch: Path) -> list[Path]:
    """Image files to time on: the data's good images when given, else synthetic PNGs written to ``scratch``."""
    if data is not None:
        folder = resolve_category(data, None) if (data / "train").exists() or (data / "test").exists() else data
        paths = train_images(folder) if folder != data or not list_images(data) else list_images(data)
        return (paths * (count // max(len(paths), 1) + 1))[:count]
    import cv2

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = scratch / f"{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (image_size + 32, image_size + 32, 3), dtype=np.uint8))
        files.append(path)
    return files


def make_runtime(target: Path, backend: str, precision: str, device: str) -> Any:
    """A runtime for a bundle folder (torch, or its exported ONNX/engine) or an artifact file."""
    from edge_ad.detector import Detector

    return Detector.load(target, backend=backend, device=device, precision=precision).runtime


def run_bench(
    target: str | Path,
    *,
    backends: Sequence[str] = ("torch",),
    precisions: Sequence[str] = ("fp32",),
    device: str = "cpu",
    batches: Sequence[int] = (1, 8),
    data: str | Path | None = None,
    warmup: int = 2,
    iters: int = 10,
    reference: bool = True,
    runtime_factory: Callable[[Path, str, str, str], Any] = make_runtime,
) -> dict[str, Any]:
    """Benchmark every (backend, precision, batch); returns the JSON report (rows + machine + artifact)."""
    target = Path(target)
    info = read_bundle(target) if target.is_dir() else None
    preprocessing = info.preprocessing if info else Preprocessing()
    size = preprocessing.image_size
    scratch = tempfile.TemporaryDirectory(prefix="edge-ad-bench-")
    files = _sample_files(Path(data) if data else None, size, max(batches), Path(scratch.name))
    images = [read_image(p) for p in files]
    sync = _cuda_sync(device)
    rows: list[BenchRow] = []
    reference_fps: dict[int, float] = {}
    if reference and info is not None:
        from edge_ad.benchmarks.reference_baseline import ReferenceBaseline
        from edge_ad.models.registry import load_model

        baseline = ReferenceBaseline(load_model(target)[0], device=device)
        for b in batches:
            x = preprocessing.batch(images[:b])  # _sample_files gave max(batches) images
            stats = LatencyStats.from_times(time_calls(lambda x=x: baseline.predict(x), warmup, iters, sync), b)
            reference_fps[b] = stats.images_per_s
            rows.append(_row("reference (authors' path)", "fp32", device, b, stats, reference_fps[b]))
    for backend in backends:
        for precision in precisions:
            if backend == "torch" and precision == "int8":
                continue  # INT8 exists only as a Q/DQ ONNX (onnxruntime, TensorRT)
            try:
                runtime = runtime_factory(target, backend, precision, device)
            except Exception as exc:  # noqa: BLE001 - one unavailable backend must not stop the table
                rows.append(_error_row(backend, precision, device, batches[0], exc))
                continue
            metrics: dict[str, float] = {}  # accuracy does not depend on the batch size: measured once per runtime
            if data is not None and info is not None and (Path(data) / "test").exists():
                from edge_ad.evaluate import evaluate

                overall = evaluate(runtime, Path(data), preprocessing)["overall"]
                metrics = {k: round(v, 4) for k, v in overall.items() if k in ("image_auroc", "pixel_auroc")}
            for b in batches:
                batch_imgs = images[:b]
                x = preprocessing.batch(batch_imgs)
                net = LatencyStats.from_times(time_calls(lambda x=x, rt=runtime: rt.predict(x), warmup, iters, sync), b)
                pre = time_calls(lambda imgs=batch_imgs: preprocessing.batch(imgs), 1, max(2, iters // 2))
                patch = _patch_map_for(runtime, x)
                post = time_calls(lambda p=patch: postprocess(p, (size, size)), 1, max(2, iters // 2))
                e2e = time_calls(  # from image files: decode + preprocess + predict
                    lambda fs=files[:b], rt=runtime: rt.predict(preprocessing.batch([read_image(f) for f in fs])),
                    1,
                    max(2, iters // 2),
                    sync,
                )
                row = _row(backend, precision, device, b, net, reference_fps.get(b))
                row.preprocess_ms_per_image = float(np.median(pre) * 1e3 / b)
                row.postprocess_ms_per_image = float(np.median(post) * 1e3 / b)
                row.end_to_end_images_per_s = float(b / np.median(e2e))
                row.metrics = dict(metrics)
                rows.append(row)
    report = {
        "edge_ad_bench": 1,
        "target": str(target),
        "artifact_sha256": file_sha256(info.weights_path) if info else file_sha256(target),
        "paper_fps": PAPER_FPS,
        "machine": machine_info(),
        "settings": {"warmup": warmup, "iters": iters, "batches": list(batches), "device": device},
        "rows": [asdict(r) for r in rows],
    }
    report["flops"] = _flops(target, info)
    scratch.cleanup()
    return report


def _patch_map_for(runtime: Any, x: np.ndarray) -> np.ndarray:
    """A patch-score map to time the post-processing on (the runtime's own when it exposes one)."""
    if hasattr(runtime, "patch_scores"):
        patch = np.asarray(runtime.patch_scores(x).cpu().numpy())[:, 0]
    else:
        grid = x.shape[-1] // 8
        patch = np.random.default_rng(0).standard_normal((x.shape[0], grid, grid)).astype(np.float32)
    return patch


def _row(
    backend: str,
    precision: str,
    device: str,
    b: int,
    stats: LatencyStats,
    ref: float | None,
) -> BenchRow:
    return BenchRow(
        backend=backend,
        precision=precision,
        device=device,
        batch=b,
        latency=stats,
        preprocess_ms_per_image=float("nan"),
        postprocess_ms_per_image=float("nan"),
        end_to_end_images_per_s=float("nan"),
        vs_paper_77fps=ratio(stats.images_per_s, PAPER_FPS),
        vs_reference=ratio(stats.images_per_s, ref or 0.0),
        peak_host_mib=peak_host_mib(),
        peak_device_mib=_peak_device_mib(device),
    )


def _error_row(backend: str, precision: str, device: str, b: int, exc: Exception) -> BenchRow:
    nan = float("nan")
    return BenchRow(
        backend,
        precision,
        device,
        b,
        LatencyStats(nan, nan, nan, nan, nan),
        nan,
        nan,
        nan,
        None,
        None,
        peak_host_mib(),
        None,
        error=f"{type(exc).__name__}: {exc}",
    )


def _cuda_sync(device: str) -> Callable[[], None] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.synchronize


def _peak_device_mib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def _flops(target: Path, info: Any) -> dict[str, float] | None:
    """Multiply-add FLOPs per image and stage of the exported graph, when the export stage can count them."""
    try:
        from edge_ad.export.onnx_export import graph_flops
    except ImportError:
        return None
    try:
        return graph_flops(target) if info else None
    except Exception:  # noqa: BLE001 - FLOPs are informative; never fail a benchmark on them
        return None
