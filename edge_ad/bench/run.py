"""``edge-ad bench``: speed (and, with data, accuracy) of every backend and precision in one table.

Each configuration is warmed up, then timed per batch: latency p50/p90/p99, images per second, the ratio to
the paper's 77 FPS (RTX 3080 Ti) and to the reference baseline (the authors' inference path, measured in the
same run on the same device), peak host and device memory. Stages are timed separately: preprocessing,
network (the runtime's ``predict``, which includes the in-graph post-processing), post-processing alone (the
numpy form of the head the graph declares -- image score max or mean, its smoothing sigma -- on the runtime's own
patch map, for scale), and end to end from image files: ``end_to_end_images_per_s`` is the pipelined reader
that ``predict`` and ``eval`` use (files -> scores and maps through :func:`edge_ad.runtimes.scoring.score_batches`
with the next batch decoded, gated and preprocessed in a worker thread while the graph runs this one; wall clock over
several batches), ``end_to_end_sequential_images_per_s`` the same steps one after the other on one batch (decode +
preprocess, then predict; the median call). Each row also gives the
GFLOP per image of the graph it runs, counted from its ONNX (torch-free; "-" where there is no ONNX to count).
CPU timing uses a monotonic clock; CUDA timing of torch rows uses CUDA events and synchronises before reading
them. Rows of other backends on ``--device cuda`` (onnxruntime, TensorRT) use the monotonic clock, which is exact
for them because ``predict`` returns host arrays only when the device work is done.

Torch is imported only when a torch row runs (torch, torch-tensorrt, the reference path), so a torch-free Jetson
benchmarks its onnxruntime and TensorRT rows. Peak device memory is measured per row for every backend: the
device's used memory (``cudaMemGetInfo`` through cuda-python, sampled every few milliseconds while the row runs)
minus what was in use before the row's runtime was created; torch rows also report torch's allocator peak, reset
before each row. ``postprocesses=("cuda",)`` times the fused CUDA kernel in place of the graph's own head.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
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
from edge_ad.artifacts import artifact_path
from edge_ad.bench.head import numpy_head, patch_map_of
from edge_ad.bench.memory import DeviceMemory, device_memory_used
from edge_ad.bench.plan import KNOWN_BACKENDS, sample_files, unavailable_reason, what_ran
from edge_ad.bench.target import PAPER_FPS, artifact_metadata, paper_fps_for, target_preprocessing
from edge_ad.bundle import file_sha256, read_bundle, warn_threshold
from edge_ad.data.images import read_image
from edge_ad.data.preprocess import Preprocessing
from edge_ad.detector import open_runtime
from edge_ad.runtimes.scoring import score_batches

BACKENDS = ("torch", "onnxruntime", "tensorrt")
EXTRA_BACKENDS = ("torch-tensorrt",)  # named explicitly, not part of "all" (needs the torch-tensorrt extra)
TORCH_BACKENDS = ("torch", "torch-tensorrt")
POSTPROCESS = ("torch", "cuda")  # the graph's own head (torch ops or their ONNX/TensorRT form), or the CUDA kernel


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
    postprocess: str = "torch"
    torch_allocator_peak_mib: float | None = None
    gflop_per_image: float | None = None  # of the ONNX graph the row runs (or was built from); None without one
    artifact: str | None = None  # the file that ran (an ONNX, an engine, the bundle's weights)
    # decode + preprocess then predict, one after the other on one batch (end_to_end_images_per_s is pipelined)
    end_to_end_sequential_images_per_s: float = float("nan")


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
        info[module] = _package_version(module)
    return info


def _package_version(module: str) -> str | None:
    """Installed version without importing the package (importing torch is what a Jetson row must avoid)."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    if module == "torch" or importlib.util.find_spec(module) is None:
        return None
    try:  # JetPack's TensorRT comes from apt, without pip metadata; importing it needs no torch
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a broken install is reported as absent
        return None


def open_bench_runtime(target: Path, backend: str, precision: str, device: str, postprocess: str = "torch") -> Any:
    """:func:`edge_ad.detector.open_runtime` with bench's words: ``postprocess="torch"`` is the graph's own head.

    A threshold resting on too few images is warned about as :meth:`Detector.load` does (once per command)."""
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {', '.join(POSTPROCESS)}, not {postprocess!r}")
    head = "graph" if postprocess == "torch" else postprocess
    runtime = open_runtime(target, backend, device=device, precision=precision, postprocess=head)
    if getattr(runtime, "threshold", None) is not None:
        warn_threshold(runtime.threshold, getattr(runtime, "score_stats", {}) or {}, getattr(runtime, "url", target))
    return runtime


def _reference_class(model: Any) -> Any:
    """The in-run baseline the model's family declares (``reference_baseline = "module:class"``), or None."""
    spec = getattr(type(model), "reference_baseline", None)
    if spec is None:
        return None
    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(module), name)


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
    runtime_factory: Callable[..., Any] = open_bench_runtime,
    postprocesses: Sequence[str] = ("torch",),
    check_available: bool | None = None,
) -> dict[str, Any]:
    """Benchmark every (backend, precision, post-processing, batch); returns the JSON report.

    ``runtime_factory(target, backend, precision, device)`` makes each runtime (``postprocess=`` is passed too
    when it is not the graph's own head). Torch is imported only for torch rows. ``check_available`` (default: with
    the real runtimes) lists a row this machine cannot run under ``not_available`` with the reason, not as a row.
    """
    target = Path(target)
    for pp in postprocesses:
        if pp not in POSTPROCESS:
            raise ValueError(f"--postprocess must be one of {', '.join(POSTPROCESS)}, not {pp!r}")
    for backend in backends:
        if backend not in KNOWN_BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(KNOWN_BACKENDS)}")
    if check_available is None:
        check_available = runtime_factory is open_bench_runtime
    not_available: list[dict[str, str]] = []
    info = read_bundle(target) if target.is_dir() else None
    metadata = artifact_metadata(target) if info is None else {}
    preprocessing = target_preprocessing(info, metadata)
    scratch = tempfile.TemporaryDirectory(prefix="edge-ad-bench-")
    files = sample_files(Path(data) if data else None, preprocessing.image_size, max(batches), Path(scratch.name))
    images = [read_image(p) for p in files]
    memory = DeviceMemory(device, probe=lambda: device_memory_used())  # looked up here: tests replace it
    rows: list[BenchRow] = []
    reference_fps: dict[int, float] = {}
    reference_note = "not run" if info is not None else "not run (no bundle)"
    if reference and info is not None:
        if importlib.util.find_spec("torch") is None:
            reason = unavailable_reason(target, "torch", "fp32", device) or "torch is not installed"
            not_available.append({"backend": "reference (authors' path)", "precision": "fp32", "reason": reason})
        else:
            from edge_ad.models.registry import load_model

            model = load_model(target)[0]
            baseline_cls = _reference_class(model)
            reference_note = (
                f"none: the {info.family} family declares no authors' inference path"
                if baseline_cls is None
                else f"{baseline_cls.__module__}.{baseline_cls.__name__}"
            )
            if baseline_cls is not None:
                sync = _cuda_sync(device, "torch")
                baseline_used = memory.used()
                baseline = baseline_cls(model, device=device)
                for b in batches:
                    x = preprocessing.batch(images[:b])  # sample_files gave max(batches) images
                    memory.start_row(baseline_used, torch_row=True)
                    times = time_calls(lambda x=x: baseline.predict(x), warmup, iters, sync)
                    stats = LatencyStats.from_times(times, b)
                    reference_fps[b] = stats.images_per_s
                    row = _row("reference (authors' path)", "fp32", device, b, stats, reference_fps[b])
                    row.peak_device_mib, row.torch_allocator_peak_mib = memory.stop_row()
                    rows.append(row)
                del baseline
            del model
            memory.release()
    paper_fps = paper_fps_for(info, metadata)
    plan = _RowPlan(
        target, info, device, batches, data, images, files, preprocessing, warmup, iters, reference_fps, paper_fps
    )
    for backend in backends:
        for precision in precisions:
            reason = unavailable_reason(target, backend, precision, device) if check_available else None
            if reason is not None:
                not_available.append({"backend": backend, "precision": precision, "reason": reason})
                continue
            if backend in TORCH_BACKENDS and precision == "int8":
                continue  # INT8 exists only as a Q/DQ ONNX (onnxruntime, TensorRT)
            for pp in postprocesses:
                rows.extend(_bench_runtime(plan, backend, precision, pp, runtime_factory, memory))
    for row in rows:  # the work of the graph each row runs, counted from its ONNX
        row_flops = None if row.error else _graph_flops_of(target, row.precision)
        row.gflop_per_image = None if row_flops is None else round(row_flops["total"] / 1e9, 4)
    report = {
        "edge_ad_bench": 1,
        "target": str(target),
        # a remote target (--backend triton: http://HOST:PORT/MODEL) has no file here to hash
        "artifact_sha256": file_sha256(info.weights_path if info else target) if info or target.is_file() else None,
        "paper_fps": paper_fps,
        "machine": machine_info(),
        "settings": {
            "warmup": warmup,
            "iters": iters,
            "batches": list(batches),
            "device": device,
            "postprocess": list(postprocesses),
        },
        "reference": reference_note,
        "rows": [asdict(r) for r in rows],
        "not_available": not_available,  # rows this machine cannot run, and why: never results
    }
    report["flops"] = _graph_flops_of(target, "fp32")
    scratch.cleanup()
    return report


@dataclass
class _RowPlan:
    """What every runtime of one bench run is timed on."""

    target: Path
    info: Any
    device: str
    batches: Sequence[int]
    data: str | Path | None
    images: list[np.ndarray]
    files: list[Path]
    preprocessing: Preprocessing
    warmup: int
    iters: int
    reference_fps: dict[int, float]
    paper_fps: float | None = PAPER_FPS


def _bench_runtime(
    plan: _RowPlan,
    backend: str,
    precision: str,
    pp: str,
    runtime_factory: Callable[..., Any],
    memory: DeviceMemory,
) -> list[BenchRow]:
    """The rows of one runtime, one per batch size; an unavailable runtime is one error row."""
    label = backend if pp == "torch" else f"{backend} + cuda kernel"
    device, preprocessing, iters = plan.device, plan.preprocessing, plan.iters
    size = preprocessing.image_size
    baseline_used = memory.used()
    try:
        extra = {} if pp == "torch" else {"postprocess": pp}
        runtime = runtime_factory(plan.target, backend, precision, device, **extra)
    except Exception as exc:  # noqa: BLE001 - one unavailable backend must not stop the table
        row = _error_row(label, precision, device, plan.batches[0], exc)
        row.postprocess = pp
        memory.release()
        return [row]
    sync = _cuda_sync(device, backend)
    ran = what_ran(runtime, plan.target, backend, precision)
    label = ran["backend"] if pp == "torch" else f"{ran['backend']} + cuda kernel"
    metrics: dict[str, float] = {}  # accuracy does not depend on the batch size: measured once per runtime
    if plan.data is not None and plan.info is not None and (Path(plan.data) / "test").exists():
        from edge_ad.evaluation.evaluate import evaluate

        overall = evaluate(runtime, Path(plan.data), preprocessing)["overall"]
        metrics = {k: round(v, 4) for k, v in overall.items() if k in ("image_auroc", "pixel_auroc")}
    head = numpy_head(runtime)
    rows = []
    for b in plan.batches:
        batch_imgs = plan.images[:b]
        x = preprocessing.batch(batch_imgs)
        memory.start_row(baseline_used, torch_row=backend in TORCH_BACKENDS)
        net = LatencyStats.from_times(
            time_calls(lambda x=x, rt=runtime: rt.predict(x), plan.warmup, iters, sync), b
        )
        pre = time_calls(lambda imgs=batch_imgs: preprocessing.batch(imgs), 1, max(2, iters // 2))
        patch = patch_map_of(runtime, x)
        post = time_calls(lambda p=patch: head(p, (size, size)), 1, max(2, iters // 2))
        e2e = time_calls(  # from image files, one step after the other: decode + preprocess, then predict
            lambda fs=plan.files[:b], rt=runtime: rt.predict(preprocessing.batch([read_image(f) for f in fs])),
            1,
            max(2, iters // 2),
            sync,
        )
        pipelined = pipelined_images_per_s(runtime.predict, plan.files[:b], preprocessing, max(4, iters), sync)
        row = _row(label, ran["precision"], device, b, net, plan.reference_fps.get(b), plan.paper_fps)
        row.postprocess, row.artifact = pp, ran["artifact"]
        row.peak_device_mib, row.torch_allocator_peak_mib = memory.stop_row()
        row.preprocess_ms_per_image = float(np.median(pre) * 1e3 / b)
        row.postprocess_ms_per_image = float(np.median(post) * 1e3 / b)
        row.end_to_end_images_per_s = pipelined
        row.end_to_end_sequential_images_per_s = float(b / np.median(e2e))
        row.metrics = dict(metrics)
        rows.append(row)
    del runtime
    memory.release()
    return rows


def pipelined_images_per_s(
    predict: Callable[[np.ndarray], Any],
    files: Sequence[Path],
    preprocessing: Preprocessing,
    batches: int,
    sync: Callable[[], None] | None = None,
) -> float:
    """Images per second from files to scores and maps as ``predict`` / ``eval`` run them: ``batches`` batches of
    ``files`` through :func:`score_batches` with ``read_ahead=1`` (the next batch is read, gated and preprocessed in a
    worker thread while ``predict`` runs this one), wall clock from the first file read to the last map, after one
    untimed batch."""

    def load(chunk: Sequence[Path]) -> np.ndarray:
        return preprocessing.batch([read_image(f) for f in chunk])

    b = len(files)
    score_batches(predict, list(files), load, batch_size=b)  # warm-up
    items = list(files) * batches
    t0 = time.perf_counter()
    score_batches(predict, items, load, batch_size=b, read_ahead=1)
    if sync:
        sync()
    return float(len(items) / (time.perf_counter() - t0))


def _row(
    backend: str,
    precision: str,
    device: str,
    b: int,
    stats: LatencyStats,
    ref: float | None,
    paper_fps: float | None = PAPER_FPS,
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
        vs_paper_77fps=ratio(stats.images_per_s, paper_fps) if paper_fps else None,
        vs_reference=ratio(stats.images_per_s, ref or 0.0),
        peak_host_mib=peak_host_mib(),
        peak_device_mib=None,  # filled in by DeviceMemory.stop_row for the row
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


def _cuda_sync(device: str, backend: str) -> Callable[[], None] | None:
    """torch's synchronise for torch rows on CUDA (CUDA-event timing); None (host clock) for every other row."""
    if not device.startswith("cuda") or backend not in TORCH_BACKENDS:
        return None
    import torch

    return torch.cuda.synchronize


def _graph_onnx(target: Path, precision: str) -> Path | None:
    """The ONNX file of the graph a row on ``target`` runs: the target itself, an engine's ``.onnx`` beside it, or a
    bundle's ``model.<precision>.onnx`` (its ``model.fp32.onnx`` for the torch rows, the same graph); else None."""
    if target.suffix == ".onnx":
        return target
    if target.suffix == ".engine":
        return target.with_suffix(".onnx") if target.with_suffix(".onnx").is_file() else None
    found = [artifact_path(target, precision), artifact_path(target, "fp32")] if target.is_dir() else []
    return next((path for path in found if path.is_file()), None)


_FLOPS_CACHE: dict[tuple[Path, float], dict[str, float] | None] = {}


def _graph_flops_of(target: Path, precision: str) -> dict[str, float] | None:
    """FLOPs per image by stage and ``"total"`` (:func:`edge_ad.export.onnx_graph.graph_flops`: Conv, ConvTranspose,
    Gemm, MatMul, shapes from ONNX shape inference) of the graph a row runs; None where there is no ONNX to count or
    the ``onnx`` package is absent. Torch-free, counted once per file."""
    path = _graph_onnx(target, precision)
    if path is None:
        return None
    key = (path, path.stat().st_mtime)
    if key not in _FLOPS_CACHE:
        try:
            from edge_ad.onnx_tools.onnx_graph import graph_flops

            _FLOPS_CACHE[key] = graph_flops(path)
        except Exception:  # noqa: BLE001 - FLOPs are informative; never fail a benchmark on them (or on no onnx)
            _FLOPS_CACHE[key] = None
    return _FLOPS_CACHE[key]
