"""Peak device memory of each ``edge-ad bench`` row, for any backend: the device's used memory sampled while the
row runs. Torch is touched only for torch rows (and when it is loaded already and no cuda-python is installed).
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DeviceMemory", "device_memory_used"]


def device_memory_used() -> int | None:
    """Bytes in use on the current CUDA device (``total - free`` from ``cudaMemGetInfo``), or None.

    Through cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6), else torch's
    ``mem_get_info`` when torch is already loaded. Device-wide: other processes' memory counts too, which is
    why rows report a difference to the value before their runtime was created.
    """
    cudart = _cudart()
    if cudart is not None:
        try:
            err, free, total = cudart.cudaMemGetInfo()
        except Exception:  # noqa: BLE001 - no driver: no figure
            return None
        return int(total - free) if int(err) == 0 else None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return int(total - free)
    return None


def _cudart() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


class DeviceMemory:
    """Peak device memory of each row, for any backend; reset between rows.

    ``start_row(baseline)`` begins sampling the device's used memory on a background thread (and, for torch
    rows, resets torch's allocator peak); ``stop_row()`` returns ``(peak MiB above baseline, torch allocator
    peak MiB)``, each None where it cannot be measured. ``release()`` frees what a finished runtime left in
    torch's cache so that the next runtime starts from a clean device.
    """

    def __init__(self, device: str, interval_s: float = 0.002, probe: Callable[[], int | None] | None = None):
        self.enabled = device.startswith("cuda")
        self.interval_s = interval_s
        self.probe = probe or device_memory_used
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._peak: int | None = None
        self._baseline: int | None = None
        self._torch_row = False

    def used(self) -> int | None:
        return self.probe() if self.enabled else None

    def _sample(self) -> None:
        value = self.probe()
        if value is not None:
            self._peak = value if self._peak is None else max(self._peak, value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start_row(self, baseline: int | None, torch_row: bool = False) -> None:
        if not self.enabled:
            return
        self._baseline, self._peak, self._torch_row = baseline, None, torch_row
        if torch_row:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edge-ad-bench-memory", daemon=True)
        self._thread.start()

    def stop_row(self) -> tuple[float | None, float | None]:
        if not self.enabled:
            return None, None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()
        peak = None
        if self._peak is not None and self._baseline is not None:
            peak = max(self._peak - self._baseline, 0) / 2**20
        allocator = None
        if self._torch_row:
            import torch

            allocator = torch.cuda.max_memory_allocated() / 2**20
        return (peak if peak is not None else allocator), allocator

    def release(self) -> None:
        gc.collect()
        torch = sys.modules.get("torch")
        if self.enabled and torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
