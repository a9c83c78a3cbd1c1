"""``edge-ad doctor``: what this machine can run, found out without importing torch.

Everything the GPU paths depend on is probed the way the runtime would meet it: the CUDA driver through
``libcuda`` itself (no binding needed), TensorRT and onnxruntime by importing them (neither imports torch),
Jetson identity from the device tree and ``nvpmodel -q``, and each Python CUDA binding (pycuda, cuda-python,
CuPy, torch) in a short child process, so that probing torch or creating a CUDA context never happens in the
caller's interpreter. From the findings, :func:`capabilities` says which ``edge-ad export --format engine``
and serving (runtime) configurations will work here and, where one will not, why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_ad import __version__
from edge_ad.extras import extra_status

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CUDA_ROOTS = ("/usr/local/cuda",)
TRTEXEC_PLACES = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack and NVIDIA's containers
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}
BINDING_TIMEOUT_S = 60.0


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cuda_version(encoded: int) -> str:
    """CUDA's ``1000 * major + 10 * minor`` (12040 -> ``"12.4"``)."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


# --- probes (each returns plain JSON data; tests replace them) ------------------------------------------------


def probe_onnxruntime() -> dict[str, Any]:
    if not _installed("onnxruntime"):
        return {"installed": False, "version": None, "providers": []}
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        return {"installed": True, "version": onnxruntime.__version__, "providers": providers}
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding, not a crash
        return {"installed": False, "version": None, "providers": [], "error": f"{type(exc).__name__}: {exc}"}


def probe_tensorrt() -> dict[str, Any]:
    if not _installed("tensorrt"):
        return {"installed": False, "version": None, "error": "tensorrt is not importable"}
    try:
        import tensorrt

        return {"installed": True, "version": str(tensorrt.__version__)}
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "version": None, "error": f"{type(exc).__name__}: {exc}"}


def probe_cuda_driver() -> dict[str, Any]:
    """Driver version and every device's name, compute capability and memory, straight from ``libcuda``."""
    try:
        lib = ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
    except OSError as exc:
        return {"driver_version": None, "devices": [], "error": f"no CUDA driver library ({exc})"}
    version = ctypes.c_int(0)
    driver = _cuda_version(version.value) if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else None
    rc = lib.cuInit(0)
    if rc != 0:
        return {"driver_version": driver, "devices": [], "error": f"cuInit failed with CUresult {rc}"}
    count = ctypes.c_int(0)
    lib.cuDeviceGetCount(ctypes.byref(count))
    devices = []
    for index in range(count.value):
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        major, minor, total = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_size_t(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
        lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev)
        devices.append(
            {
                "index": index,
                "name": name.value.decode(errors="replace"),
                "compute_capability": f"{major.value}.{minor.value}",
                "memory_mib": total.value // 2**20,
            }
        )
    return {"driver_version": driver, "devices": devices}


def probe_cuda_runtime() -> dict[str, Any]:
    """The CUDA runtime library a binding or TensorRT would load (``libcudart``), and its version."""
    names = [ctypes.util.find_library("cudart")] + [f"libcudart.so.{v}" for v in (13, 12, 11)]
    for root in CUDA_ROOTS:
        names.append(str(Path(root) / "lib64" / "libcudart.so"))
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
            return {"version": _cuda_version(version.value), "library": name}
    return {"version": None, "library": None}


def probe_jetson() -> dict[str, Any]:
    """Jetson model (device tree), L4T release and power mode (``nvpmodel -q``); ``is_jetson`` False elsewhere."""
    try:
        model = DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    except OSError:
        model = None
    try:
        l4t = TEGRA_RELEASE.read_text().splitlines()[0].strip().lstrip("# ")
    except (OSError, IndexError):
        l4t = None
    is_jetson = bool(model and ("jetson" in model.lower() or "tegra" in model.lower())) or l4t is not None
    power = parse_nvpmodel(run_nvpmodel()) if is_jetson else None
    return {"is_jetson": is_jetson, "model": model if is_jetson else None, "l4t": l4t, "power_mode": power}


def run_nvpmodel() -> str | None:
    exe = shutil.which("nvpmodel") or ("/usr/sbin/nvpmodel" if Path("/usr/sbin/nvpmodel").is_file() else None)
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_nvpmodel(text: str | None) -> dict[str, Any] | None:
    """``nvpmodel -q`` prints ``NV Power Mode: MAXN`` and then the mode's number on its own line."""
    if not text:
        return None
    match = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if match is None:
        return None
    rest = text[match.end() :].split()
    return {"name": match.group(1), "id": int(rest[0]) if rest and rest[0].isdigit() else None}


_BINDING_CODE = {
    "pycuda": (
        "import pycuda, pycuda.driver as d\nd.init()\n"
        "r = {'version': pycuda.VERSION_TEXT, 'devices': d.Device.count()}"
    ),
    "cuda-python": (
        "try:\n    from cuda.bindings import runtime as rt\nexcept ImportError:\n    from cuda import cudart as rt\n"
        "err, n = rt.cudaGetDeviceCount()\nr = {'devices': n if int(err) == 0 else 0, 'error': None if int(err) == 0 "
        "else str(err)}"
    ),
    "cupy": "import cupy\nr = {'version': cupy.__version__, 'devices': cupy.cuda.runtime.getDeviceCount()}",
    "torch": (
        "import torch\nr = {'version': torch.__version__, 'cuda': torch.version.cuda, "
        "'devices': torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    ),
}
_BINDING_MODULES = {"pycuda": "pycuda", "cuda-python": "cuda", "cupy": "cupy", "torch": "torch"}


def probe_binding(name: str) -> dict[str, Any]:
    """Is the binding installed, and does it reach a GPU? Asked in a child process (torch never loads here)."""
    if not _installed(_BINDING_MODULES[name]) or (name == "cuda-python" and not _cuda_python_installed()):
        return {"installed": False, "version": None, "reaches_gpu": False}
    code = _BINDING_CODE[name] + "\nimport json\nprint('EDGE_AD_DOCTOR ' + json.dumps(r))\n"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=BINDING_TIMEOUT_S, env=os.environ
        )
    except subprocess.TimeoutExpired:
        return {"installed": True, "version": None, "reaches_gpu": False, "error": "probe timed out"}
    found = [line for line in done.stdout.splitlines() if line.startswith("EDGE_AD_DOCTOR ")]
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"installed": True, "version": None, "reaches_gpu": False, "error": last[:300]}
    result = json.loads(found[-1].split(" ", 1)[1])
    version = result.get("version") or _version(name)
    info = {"installed": True, "version": version, "reaches_gpu": int(result.get("devices") or 0) > 0}
    if result.get("cuda") is not None or name == "torch":
        info["cuda"] = result.get("cuda")
    if result.get("error"):
        info["error"] = result["error"]
    return info


def _cuda_python_installed() -> bool:
    return _installed("cuda.bindings") or _installed("cuda.cudart")


def probe_tools() -> dict[str, Any]:
    """nvcc (pycuda compiles with it; torch extensions need it), trtexec, ninja, compute-sanitizer."""
    from edge_ad.runtimes.cuda_kernel import find_nvcc

    try:
        nvcc = find_nvcc()
    except RuntimeError:
        nvcc = None
    nvcc_version = None
    if nvcc:
        try:
            text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
            match = re.search(r"release (\d+\.\d+)", text)
            nvcc_version = match.group(1) if match else None
        except (OSError, subprocess.SubprocessError):
            pass
    trtexec = shutil.which("trtexec") or next((p for p in TRTEXEC_PLACES if Path(p).is_file()), None)
    return {
        "nvcc": nvcc,
        "nvcc_on_path": shutil.which("nvcc") is not None,
        "nvcc_version": nvcc_version,
        "trtexec": trtexec,
        "ninja": shutil.which("ninja"),
        "compute_sanitizer": shutil.which("compute-sanitizer"),
    }


# --- report ---------------------------------------------------------------------------------------------------


def collect() -> dict[str, Any]:
    """Every probe's finding and the configurations that follow from them (JSON-ready)."""
    report: dict[str, Any] = {
        "edge_ad_doctor": 1,
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "edge_ad": __version__,
        "platform": platform.platform(),
        "onnxruntime": probe_onnxruntime(),
        "tensorrt": probe_tensorrt(),
        "cuda_driver": probe_cuda_driver(),
        "cuda_runtime": probe_cuda_runtime(),
        "jetson": probe_jetson(),
        "bindings": {name: probe_binding(name) for name in _BINDING_CODE},
        "tools": probe_tools(),
        "onnx_installed": _installed("onnx"),
        "torch_tensorrt_installed": _installed("torch_tensorrt"),
        "extras": extra_status(),
    }
    devices = report["cuda_driver"]["devices"]
    report["gpu"] = devices[0] if devices else None
    report.update(capabilities(report))
    return report


def _item(name: str, works: bool, why: str) -> dict[str, Any]:
    return {"name": name, "works": works, "why": why}


def capabilities(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Which ``export --format engine`` and serving configurations will work, each with the reason."""
    gpu = report["cuda_driver"]["devices"][0] if report["cuda_driver"]["devices"] else None
    trt = report["tensorrt"]
    bindings = report["bindings"]
    tools = report["tools"]
    providers = report["onnxruntime"].get("providers", [])
    no_gpu = "no CUDA GPU reachable (" + (report["cuda_driver"].get("error") or "driver sees no device") + ")"
    trt_major = int(str(trt["version"]).split(".")[0]) if trt.get("installed") and trt.get("version") else None

    def engine(name: str, extra: bool = True, extra_why: str = "") -> dict[str, Any]:
        if not trt.get("installed"):
            return _item(name, False, "TensorRT is not installed (JetPack ships it; desktop: pip install tensorrt)")
        if gpu is None:
            return _item(name, False, no_gpu)
        if not extra:
            return _item(name, False, extra_why)
        return _item(name, True, f"TensorRT {trt['version']} on {gpu['name']} (sm {gpu['compute_capability']})")

    engines = [
        engine("fp32 ONNX -> fp32 engine"),
        engine("fp16 ONNX -> fp16 engine (strongly typed)"),
        engine(
            "fp32 ONNX built as fp16 (TensorRT 10 FP16 builder flag)",
            trt_major is not None and trt_major < 11,
            f"TensorRT {trt.get('version')} removed the weakly typed FP16 flag: export an fp16 ONNX instead",
        ),
        engine("int8 Q/DQ ONNX -> int8 engine (strongly typed)"),
        _item(
            "--dry-run (print the trtexec line)",
            True,
            f"trtexec at {tools['trtexec']}" if tools.get("trtexec") else "prints the line; trtexec is not here",
        ),
    ]

    cuda_bufs = [n for n in ("pycuda", "cuda-python", "torch") if bindings.get(n, {}).get("reaches_gpu")]
    serve = [
        _item("onnxruntime CPU", bool(report["onnxruntime"]["installed"]), "onnxruntime " + str(
            report["onnxruntime"]["version"])),
        _item(
            "onnxruntime CUDA",
            "CUDAExecutionProvider" in providers and gpu is not None,
            "CUDAExecutionProvider " + ("present" if "CUDAExecutionProvider" in providers else "missing (pip "
            "install onnxruntime-gpu)") + ("" if gpu else f"; {no_gpu}"),
        ),
        _item(
            "onnxruntime TensorRT EP",
            "TensorrtExecutionProvider" in providers and gpu is not None and bool(trt.get("installed")),
            "TensorrtExecutionProvider " + ("present" if "TensorrtExecutionProvider" in providers else "missing"),
        ),
    ]
    engine_ok = bool(trt.get("installed")) and gpu is not None and bool(cuda_bufs)
    serve.append(
        _item(
            "TensorRT engine",
            engine_ok,
            f"buffers through {', '.join(cuda_bufs)}"
            if engine_ok
            else (engines[0]["why"] if not engines[0]["works"] else "no CUDA buffer layer (pip install pycuda)"),
        )
    )
    torch_b = bindings.get("torch", {})
    serve.append(_item("torch CPU", bool(torch_b.get("installed")), "torch " + str(torch_b.get("version"))))
    serve.append(
        _item(
            "torch CUDA",
            bool(torch_b.get("reaches_gpu")),
            f"torch {torch_b.get('version')} CUDA {torch_b.get('cuda')}" if torch_b.get("installed") else "no torch",
        )
    )
    serve.append(
        _item(
            "torch-tensorrt",
            bool(torch_b.get("reaches_gpu")) and bool(report.get("torch_tensorrt_installed")),
            "needs a CUDA build of torch and pip install 'edge-ad[torch-tensorrt]'",
        )
    )
    kernel = []
    if bindings.get("cupy", {}).get("reaches_gpu"):
        kernel.append("cupy")
    if bindings.get("pycuda", {}).get("reaches_gpu"):
        kernel.append("pycuda" if tools.get("nvcc") else "pycuda (no: needs nvcc, e.g. /usr/local/cuda/bin on PATH)")
    if torch_b.get("reaches_gpu"):
        kernel.append("torch" if tools.get("nvcc") and tools.get("ninja") else "torch (no: needs nvcc and ninja)")
    usable = [k for k in kernel if "(no:" not in k]
    serve.append(
        _item(
            "CUDA post-processing kernel (--postprocess cuda)",
            bool(usable),
            ", ".join(kernel) if kernel else "no binding reaches a GPU (cupy, pycuda or a CUDA build of torch)",
        )
    )
    return {"engine_export": engines, "serve": serve}


def render_lines(report: dict[str, Any]) -> list[str]:
    """The report for people: one finding per line."""
    gpu = report["gpu"]
    jet = report["jetson"]
    drv, rt = report["cuda_driver"], report["cuda_runtime"]
    ort, trt = report["onnxruntime"], report["tensorrt"]
    gpu_line = (
        f"{gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['memory_mib']} MiB)" if gpu else "none"
    )
    lines = [
        f"Python {report['python']['version']} ({report['python']['executable']}), edge-ad {report['edge_ad']}",
        f"onnxruntime: {ort['version'] or 'not installed'}; providers: {', '.join(ort['providers']) or '-'}",
        f"TensorRT: {trt['version'] if trt.get('installed') else 'not installed'}",
        f"CUDA driver: {drv['driver_version'] or 'none'}; CUDA runtime: {rt['version'] or 'none'}"
        + (f" ({drv['error']})" if drv.get("error") else ""),
        f"GPU: {gpu_line}",
    ]
    if jet["is_jetson"]:
        power = jet["power_mode"]
        mode = f"{power['name']} (mode {power['id']})" if power else "unknown (nvpmodel -q gave nothing)"
        lines.append(f"Jetson: {jet['model']}; {jet['l4t'] or 'L4T unknown'}; power mode {mode}")
    else:
        lines.append("Jetson: no")
    for name, b in report["bindings"].items():
        state = "not installed" if not b["installed"] else f"{b['version']}, " + (
            "reaches the GPU" if b["reaches_gpu"] else "no GPU" + (f" ({b['error']})" if b.get("error") else "")
        )
        lines.append(f"{name}: {state}")
    tools = report["tools"]
    off_path = tools["nvcc"] and not tools["nvcc_on_path"]
    lines.append(f"nvcc: {tools['nvcc'] or 'not found'}" + (" (not on PATH)" if off_path else ""))
    lines.append("extras (pip install the missing ones as shown):")
    lines += [
        f"  [{'ok' if e['installed'] else 'no'}] {e['extra']}: {e['enables']}"
        + ("" if e["installed"] else f" (missing {', '.join(e['missing'])}: {e['pip']})")
        for e in report.get("extras", [])
    ]
    lines.append("edge-ad export --format engine:")
    lines += [f"  [{'ok' if i['works'] else 'no'}] {i['name']}: {i['why']}" for i in report["engine_export"]]
    lines.append("serve / predict runtimes:")
    lines += [f"  [{'ok' if i['works'] else 'no'}] {i['name']}: {i['why']}" for i in report["serve"]]
    return lines
