"""Start the ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel, directly, for tests and benchmarks.

pytriton's own launcher (``pytriton/triton.py``) copies ``pytriton/tritonserver`` into a workspace, puts the stub
built for the running Python (``python_backend_stubs/<X.Y>/triton_python_backend_stub``) into
``backends/python/``, adds ``nvidia_pytriton.libs`` to ``LD_LIBRARY_PATH`` and runs
``bin/tritonserver --backend-directory <workspace>/backends``. This does the same with only the Python backend's
three files, and puts this interpreter's folder first on ``PATH``: the backend stub uses the packages of the first
``python`` there (numpy and onnxruntime for edge-ad's Python-backend model). The wheel itself is only located
(``importlib.util.find_spec``), never imported: its Python package pins numpy < 2, so it is installed without
dependencies. Torch-free.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TritonServer", "find_tritonserver", "free_port"]


@dataclass(frozen=True)
class TritonDist:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_tritonserver() -> TritonDist | None:
    """The wheel's binary, Python backend, stub for this Python and bundled libraries; None when not installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonDist(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=root.parent / "nvidia_pytriton.libs",
    )
    backend = found.python_backend / "libtriton_python.so"
    if not (found.binary.is_file() and found.stub.is_file() and backend.is_file()):
        return None
    return found


def _stub_python_env(env: dict[str, str]) -> dict[str, str]:
    """Make the backend stub's embedded Python this interpreter: its folder first on PATH, its libpython first on
    LD_LIBRARY_PATH (the stub otherwise links the system's libpython3.X), its home and its site-packages."""
    import site
    import sysconfig

    out = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and any(Path(libdir).glob(f"libpython{sys.version_info[0]}.{sys.version_info[1]}*.so*")):
        out["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    out["PYTHONHOME"] = sys.base_prefix
    paths = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    out["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    return out


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonServer:
    """``with TritonServer(repo) as server:`` runs tritonserver on loopback; always stopped (SIGTERM, then SIGKILL)."""

    repository: Path
    startup_timeout_s: float = 120.0
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    last_log: str = ""
    _workspace: tempfile.TemporaryDirectory[str] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> TritonServer:
        dist = find_tritonserver()
        if dist is None:
            raise RuntimeError("tritonserver not found: pip install --no-deps nvidia-pytriton")
        self._workspace = tempfile.TemporaryDirectory(prefix="edge-ad-tritonserver-")
        work = Path(self._workspace.name)
        backend = work / "backends" / "python"
        backend.mkdir(parents=True)
        for item in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(dist.python_backend / item, backend / item)
        shutil.copy2(dist.stub, backend / "triton_python_backend_stub")
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(dist.libs), env.get("LD_LIBRARY_PATH", "")) if p)
        env.update(_stub_python_env(env))
        command = [
            str(dist.binary),
            "--model-repository", str(Path(self.repository).resolve()),
            "--backend-directory", str(work / "backends"),
            "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port),
            "--allow-metrics", "true", "--allow-gpu-metrics", "false",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--exit-timeout-secs", "5",
        ]  # fmt: skip
        self.log_path = work / "tritonserver.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes it for its lifetime
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"tritonserver not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return self.last_log[-chars:]
        return self.log_path.read_text(errors="replace")[-chars:]

    def metrics(self) -> str:
        """The Prometheus text of the metrics endpoint."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        """SIGTERM, wait up to 15 s, then SIGKILL; idempotent."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if self._workspace is not None:
            self.last_log = self.log_tail(1 << 20)  # kept for failure messages after the workspace is gone
            self._workspace.cleanup()
            self._workspace = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric_values(text: str, name: str) -> dict[str, float]:
    """``{model: value}`` for a per-model counter in Prometheus text (``name{model="m",version="1"} v``)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels, _, value = line[len(name) + 1 :].partition("} ")
        fields = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        model = fields.get("model", "").strip('"')
        values[model] = values.get(model, 0.0) + float(value)
    return values
