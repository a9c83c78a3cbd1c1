"""The one prepared GPU check: everything edge-ad's GPU code claims, run on a lent GPU in under 8 minutes.

    bash benchmarks/gpu_check.sh [--out DIR]          # or: python benchmarks/gpu_check.py [--out DIR]

Writes into one folder (default ``gpu_check-<UTC time>/`` in the current directory): ``results.json`` (every
step's status, seconds and figures; rewritten after each step, so a killed run keeps what it measured) and a
``<step>.log`` per step. Steps, each isolated (a failure is recorded and the next step runs):

``doctor``          ``edge-ad doctor --json`` and ``nvidia-smi``: what the machine is.
``pytest_gpu``      every test marked ``gpu`` (``pytest -m gpu``).
``kernel_accuracy`` the CUDA kernel (every binding that runs here) against the torch head and against numpy:
                    odd sizes, downsampling, batch 64, and one batch of more than 2**31 map elements (64-bit
                    indexing), with TF32 off (the pass criterion, 1e-4) and on (reported).
``kernel_timing``   CUDA-event timings of the kernel and of the torch head, batch 1, 8 and 64 at 28 -> 224.
``fake_tensorrt``   the fake TensorRT engine of ``tests/fake_tensorrt.py`` driven through the real buffer layer
                    (torch, pycuda) on the GPU: real device pointers, the runtime's stream, chunking to the
                    engine's profile, and an engine without its head post-processed by the kernel.
``sanitizer``       compute-sanitizer memcheck and racecheck on the kernel, where the tool is installed.
``bench``           a short-trained demo model, then ``edge-ad bench --device cuda --backend torch --precision
                    fp32,fp16 --batch 1,8`` and the same with ``--postprocess torch,cuda``.

Without a CUDA GPU it says so and exits 0 within seconds (``tests/test_gpu_check.py``). It needs no network
and no pip: when edge-ad is not installed it imports it from this checkout through a folder of links.
Exit status: 0 when no step failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 7.5 * 60  # the whole check, on an H200; later steps are skipped when it runs out
LARGE_ELEMENTS = 2**31  # the large batch has more anomaly-map elements than an int32 can index


# --- no-GPU gate (ctypes only: nothing heavy is imported before we know there is a GPU) ----------------------


def cuda_devices() -> tuple[list[str], str]:
    """Names of the CUDA devices the driver sees, and why there are none when the list is empty."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return [], f"no CUDA driver library ({exc})"
    rc = lib.cuInit(0)
    if rc != 0:
        return [], f"cuInit failed (CUresult {rc})"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return [], "the CUDA driver sees no device"
    names = []
    for index in range(count.value):
        dev, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
        lib.cuDeviceGet(ctypes.byref(dev), index)
        lib.cuDeviceGetName(name, 256, dev)
        names.append(name.value.decode(errors="replace"))
    return names, ""


def large_batch(height: int, width: int, elements: int = LARGE_ELEMENTS) -> int:
    """Smallest batch whose ``[N, H, W]`` map has more than ``elements`` entries."""
    return elements // (height * width) + 1


# --- making edge-ad importable without pip -------------------------------------------------------------------


def make_shim(scratch: Path) -> Path:
    """A folder from which ``import edge_ad`` finds this checkout laid out as installed (returns the folder)."""
    shim = scratch / "shim" / "edge_ad"
    shim.mkdir(parents=True, exist_ok=True)
    for item in (ROOT / "edge_ad").iterdir():
        link = shim / item.name
        if not link.exists():
            link.symlink_to(item)
    for sub in ("export", "calibration", "benchmarks"):  # package-dir mapping of pyproject.toml
        link = shim / sub
        if not link.exists():
            link.symlink_to(ROOT / sub)
    return shim.parent


def ensure_importable(scratch: Path) -> str:
    """Import edge-ad as installed, or else from this checkout through links that mirror the installed layout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests.fake_tensorrt and friends
    probe = subprocess.run([sys.executable, "-c", "import edge_ad.export, edge_ad.benchmarks"], capture_output=True)
    if probe.returncode == 0:
        return "installed"
    path = str(make_shim(scratch))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [path, str(ROOT), os.environ.get("PYTHONPATH")]))
    sys.path[:0] = [path, str(ROOT)]
    return f"from the checkout via {path}"


# --- the run ---------------------------------------------------------------------------------------------------


class Check:
    """Runs steps in order, each isolated, and keeps ``results.json`` current."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.start = time.monotonic()
        self.results: dict[str, Any] = {
            "edge_ad_gpu_check": 1,
            "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "steps": {},
        }

    def left(self) -> float:
        return BUDGET_S - (time.monotonic() - self.start)

    def save(self) -> None:
        tmp = self.out / ".results.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        os.replace(tmp, self.out / "results.json")

    def run(self, name: str, fn: Callable[[Check, Path], dict[str, Any]], need_s: float) -> None:
        log = self.out / f"{name}.log"
        if self.left() < need_s:
            self.results["steps"][name] = {"status": "skipped", "why": f"time budget: {self.left():.0f} s left"}
            self.save()
            return
        print(f"gpu_check: {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            figures = fn(self, log)
            status = figures.pop("status", "ok")
        except Exception as exc:  # noqa: BLE001 - one failing step must not stop the others
            with log.open("a") as fh:
                fh.write(traceback.format_exc())
            figures, status = {"error": f"{type(exc).__name__}: {exc}"}, "failed"
        entry = {"status": status, "seconds": round(time.monotonic() - t0, 1), **figures}
        self.results["steps"][name] = entry
        self.save()
        print(f"gpu_check: {name}: {status} ({entry['seconds']} s)", flush=True)

    def sh(self, log: Path, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> int:
        """Run a command with its output appended to ``log``; returns the exit status (124 on timeout)."""
        with log.open("a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            try:
                return subprocess.run(
                    cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT, env=env or os.environ.copy()
                ).returncode
            except subprocess.TimeoutExpired:
                fh.write(f"\n[timed out after {timeout:.0f} s]\n")
                return 124


CLI = [sys.executable, "-m", "edge_ad.cli"]


def step_doctor(check: Check, log: Path) -> dict[str, Any]:
    doctor_json = check.out / "doctor.json"
    with doctor_json.open("w") as fh:
        rc = subprocess.run([*CLI, "doctor", "--json"], stdout=fh, stderr=subprocess.PIPE, timeout=180, cwd=ROOT)
    smi = shutil.which("nvidia-smi")
    if smi:
        check.sh(log, [smi], 30)
    report = json.loads(doctor_json.read_text()) if rc.returncode == 0 else {}
    return {
        "status": "ok" if rc.returncode == 0 else "failed",
        "gpu": report.get("gpu"),
        "driver": report.get("cuda_driver", {}).get("driver_version"),
        "bindings": {k: v.get("reaches_gpu") for k, v in report.get("bindings", {}).items()},
    }


def step_pytest(check: Check, log: Path) -> dict[str, Any]:
    junit = check.out / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
           "--continue-on-collection-errors", f"--junitxml={junit}", "tests"]  # fmt: skip
    rc = check.sh(log, cmd, min(240.0, check.left() - 120))
    counts: dict[str, int] = {}
    if junit.is_file():
        import xml.etree.ElementTree as ET

        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    # Collection errors (a test module needing a package this machine lacks) are reported, not a GPU failure.
    ok = rc in (0, 1, 2, 5) and junit.is_file() and not counts.get("failures")
    return {"status": "ok" if ok else "failed", "exit_code": rc, **counts}


def _patch(torch: Any, n: int, h: int, w: int, seed: int) -> Any:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn((n, h, w), device="cuda", generator=g) * 2.0 + 1.5


def _to_torch(torch: Any, x: Any) -> Any:
    return x if isinstance(x, torch.Tensor) else torch.from_dlpack(x)


def _run_kernel(torch: Any, runner: Any, patch: Any) -> tuple[Any, Any]:
    """The kernel on a device array of its own binding (torch tensors are shared with CuPy through DLPack)."""
    if runner.backend == "torch":
        return runner(patch)
    if runner.backend == "cupy":
        import cupy

        score, amap = runner(cupy.from_dlpack(patch))
        return _to_torch(torch, score), _to_torch(torch, amap)
    score, amap = runner(patch.cpu().numpy())  # pycuda: through host memory
    return torch.from_numpy(score).cuda(), torch.from_numpy(amap).cuda()


def _torch_head(torch: Any, patch: Any, out_hw: tuple[int, int], chunk: int = 4096) -> tuple[Any, Any]:
    """The graph's head (torch ops) in chunks: the reference, not the thing tested, needs no >2**31 tensor."""
    from edge_ad.postprocess.torch_ops import AnomalyMapHead

    head = AnomalyMapHead(out_hw).cuda()
    scores, maps = [], []
    for start in range(0, patch.shape[0], chunk):
        s, m = head(patch[start : start + chunk, None])
        scores.append(s)
        maps.append(m)
    return torch.cat(scores), torch.cat(maps)


def step_kernel_accuracy(check: Check, log: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from edge_ad.postprocess.numpy_ops import postprocess
    from edge_ad.runtimes.cuda_postprocess import BACKENDS, CudaAnomalyMap

    cases = {  # name: (N, h, w, H, W)
        "odd": (3, 7, 9, 50, 33),
        "odd_large_map": (5, 28, 28, 225, 223),
        "downsampling": (3, 40, 30, 20, 19),
        "batch64": (64, 28, 28, 224, 224),
        "over_2^31_elements": (large_batch(224, 224), 28, 28, 224, 224),
    }
    figures: dict[str, Any] = {"cases": {k: list(v) for k, v in cases.items()}, "backends": {}, "skipped": {}}
    failed = False
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for name in BACKENDS:
        try:
            CudaAnomalyMap((28, 28), (224, 224), backend=name)
        except Exception as exc:  # noqa: BLE001
            figures["skipped"][name] = str(exc)[:300]
            continue
        per_case: dict[str, Any] = {}
        for case, (n, h, w, height, width) in cases.items():
            runner = CudaAnomalyMap((h, w), (height, width), backend=name)
            patch = _patch(torch, n, h, w, seed=n + h + width)
            score, amap = _run_kernel(torch, runner, patch)
            torch.cuda.synchronize()
            entry: dict[str, Any] = {"elements": n * height * width}
            for tf32 in (False, True):
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
                try:
                    ref_score, ref_map = _torch_head(torch, patch, (height, width))
                finally:
                    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
                key = "tf32_on" if tf32 else "tf32_off"
                entry[f"vs_torch_{key}_max_abs"] = float((amap - ref_map).abs().max())
                entry[f"vs_torch_{key}_scores_equal"] = bool(torch.equal(score, ref_score))
                del ref_map
            picks = sorted({0, n // 2, n - 1})  # numpy on a few images, the last one included (64-bit offsets)
            ref_s, ref_m = postprocess(patch[picks].cpu().numpy(), (height, width))
            entry["vs_numpy_max_abs"] = float(np.abs(amap[picks].cpu().numpy().astype(np.float64) - ref_m).max())
            entry["vs_numpy_scores_equal"] = bool(np.array_equal(score[picks].cpu().numpy(), ref_s))
            ok = (
                entry["vs_torch_tf32_off_max_abs"] <= 1e-4
                and entry["vs_numpy_max_abs"] <= 1e-4
                and entry["vs_numpy_scores_equal"]
                and entry["vs_torch_tf32_off_scores_equal"]
            )
            entry["ok"] = ok
            failed |= not ok
            per_case[case] = entry
            with log.open("a") as fh:
                fh.write(f"{name} {case}: {json.dumps(entry)}\n")
            del patch, score, amap
            torch.cuda.empty_cache()
        figures["backends"][name] = per_case
    if not figures["backends"]:
        return {**figures, "status": "failed", "error": "no CUDA binding could run the kernel"}
    return {**figures, "status": "failed" if failed else "ok"}


def _event_ms(torch: Any, fn: Callable[[], Any], warmup: int = 10, iters: int = 100) -> float:
    """Median CUDA-event time of ``fn`` in ms, through the one timing loop ``edge-ad bench`` uses."""
    from edge_ad.bench.run import time_calls

    times = sorted(time_calls(fn, warmup, iters, sync=torch.cuda.synchronize))
    return times[len(times) // 2] * 1e3


def step_kernel_timing(check: Check, log: Path) -> dict[str, Any]:
    import torch

    from edge_ad.postprocess.torch_ops import AnomalyMapHead
    from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

    runner = CudaAnomalyMap((28, 28), (224, 224))  # the binding CudaAnomalyMap picks here
    head = AnomalyMapHead((224, 224)).cuda()
    rows = []
    for tf32 in (False, True):
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            for batch in (1, 8, 64):
                patch = _patch(torch, batch, 28, 28, seed=batch)
                if runner.backend == "cupy":  # the same memory, on the same (legacy default) stream as torch's
                    import cupy

                    native = cupy.from_dlpack(patch)
                else:
                    native = patch if runner.backend == "torch" else patch.cpu().numpy()  # pycuda: via the host
                with torch.no_grad():
                    kernel = _event_ms(torch, lambda p=native: runner(p))
                    graph = _event_ms(torch, lambda p=patch: head(p[:, None]))
                rows.append({"batch": batch, "tf32": tf32, "kernel_ms": kernel, "torch_head_ms": graph,
                             "speedup": graph / kernel if kernel > 0 else None})  # fmt: skip
        finally:
            torch.backends.cudnn.allow_tf32 = saved
    with log.open("a") as fh:
        fh.write(json.dumps(rows, indent=2) + "\n")
    return {"median_ms_cuda_events": rows, "binding": runner.backend, "shape": "28x28 -> 224x224"}


def step_fake_tensorrt(check: Check, log: Path) -> dict[str, Any]:
    """The fake engine through the real buffer layer on the GPU (:mod:`edge_ad.benchmarks.gpu_check_tensorrt`)."""
    from edge_ad.benchmarks.gpu_check_tensorrt import fake_tensorrt_step

    return fake_tensorrt_step(check.out, log, ROOT)


_SANITIZED = """
import numpy as np
from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap
for shape in [(3, 28, 28, 224, 224), (2, 7, 9, 50, 33), (3, 40, 30, 20, 19)]:
    n, h, w, H, W = shape
    runner = CudaAnomalyMap((h, w), (H, W))
    runner(np.random.default_rng(0).standard_normal((n, h, w)).astype(np.float32))
print("sanitized backend:", runner.backend)
"""


def step_sanitizer(check: Check, log: Path) -> dict[str, Any]:
    tool = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if Path(p).is_file()), None
    )
    if tool is None:
        return {"status": "skipped", "why": "compute-sanitizer is not installed"}
    figures: dict[str, Any] = {"tool": tool}
    failed = False
    for mode in ("memcheck", "racecheck"):
        cmd = [tool, "--tool", mode, "--error-exitcode", "3", sys.executable, "-c", _SANITIZED]
        rc = check.sh(log, cmd, min(150.0, max(check.left() - 90, 30)))
        figures[mode] = {0: "clean", 3: "errors reported", 124: "timed out"}.get(rc, f"exit {rc}")
        failed |= rc == 3
    return {**figures, "status": "failed" if failed else "ok"}


def step_bench(check: Check, log: Path) -> dict[str, Any]:
    data, model = check.out / "demo", check.out / "model"
    if check.sh(log, [*CLI, "demo-data", str(data), "--category", "brushed_metal", "--n-train", "24"], 180) != 0:
        return {"status": "failed", "error": "demo-data failed (see bench.log)"}
    train = [*CLI, "train", str(data), "--category", "brushed_metal", "--out", str(model), "--random-backbone",
             "--epochs", "3", "--device", "cuda"]  # fmt: skip
    if check.sh(log, train, 240) != 0:
        return {"status": "failed", "error": "training the demo model failed (see bench.log)"}
    figures: dict[str, Any] = {}
    runs = {
        "bench_cuda": ["--precision", "fp32,fp16", "--batch", "1,8", "--data", str(data / "brushed_metal")],
        "bench_cuda_kernel": ["--precision", "fp32", "--batch", "1,8", "--postprocess", "torch,cuda", "--no-reference"],
    }
    failed = False
    for name, extra in runs.items():
        out = check.out / f"{name}.json"
        cmd = [*CLI, "bench", str(model), "--device", "cuda", "--backend", "torch", *extra, "--json", str(out)]
        rc = check.sh(log, cmd, max(30.0, min(180.0, check.left() - 10)))
        if rc != 0 or not out.is_file():
            figures[name] = {"exit_code": rc}
            failed = True
            continue
        report = json.loads(out.read_text())
        figures[name] = [
            {k: r.get(k) for k in ("backend", "precision", "batch", "error", "peak_device_mib", "metrics")}
            | {"p50_ms": r["latency"]["p50_ms"], "img_s": r["latency"]["images_per_s"]}
            for r in report["rows"]
        ]
        failed |= any(r["error"] for r in report["rows"])
    return {**figures, "status": "failed" if failed else "ok"}


STEPS: list[tuple[str, Callable[[Check, Path], dict[str, Any]], float]] = [
    ("doctor", step_doctor, 20),
    ("pytest_gpu", step_pytest, 60),
    ("kernel_accuracy", step_kernel_accuracy, 60),
    ("kernel_timing", step_kernel_timing, 20),
    ("fake_tensorrt", step_fake_tensorrt, 20),
    ("sanitizer", step_sanitizer, 40),
    ("bench", step_bench, 90),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Results folder (default: ./gpu_check-<UTC time>).")
    parser.add_argument("--only", default=None, help="Comma list of steps to run (default: all).")
    args = parser.parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = (args.out or Path(f"gpu_check-{stamp}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names, why = cuda_devices()
    if not names:
        message = f"gpu_check: no CUDA GPU here ({why}); nothing to check, exiting 0."
        print(message)
        (out / "results.json").write_text(json.dumps({"edge_ad_gpu_check": 1, "status": "no-gpu", "why": why}))
        return 0
    check = Check(out)
    check.results["gpus"] = names
    check.results["edge_ad_import"] = ensure_importable(out)
    wanted = set(args.only.split(",")) if args.only else {name for name, _, _ in STEPS}
    for name, fn, need in STEPS:
        if name in wanted:
            check.run(name, fn, need)
    steps = check.results["steps"]
    check.results["status"] = "failed" if any(s["status"] == "failed" for s in steps.values()) else "ok"
    check.results["seconds"] = round(time.monotonic() - check.start, 1)
    check.save()
    print(f"gpu_check: {check.results['status']} in {check.results['seconds']} s; results in {out}/results.json")
    return 0 if check.results["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
