"""A fake ``pycuda`` that keeps CUDA's context rules: a context is current per thread, on a stack.

``pycuda.autoinit`` makes a new (non-primary) context current in the importing thread only, as the real one
does; ``pycuda.autoprimaryctx`` retains and pushes the primary context there. Allocations, streams and
copies need a current context in the calling thread, and memory belongs to the context it was allocated in
(the primary context is one per device, shared by every thread that pushes it). Device memory lives in
``tests.fake_tensorrt.MEMORY`` so the fake TensorRT engine computes on it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import itertools
import sys
import threading
import types
from typing import Any

import numpy as np

from tests.fake_tensorrt import MEMORY


class LogicError(RuntimeError):
    pass


def make_pycuda() -> dict[str, types.ModuleType]:
    """Fresh fake modules: pycuda, pycuda.driver; autoinit/autoprimaryctx run their side effect on import."""
    drv = types.ModuleType("pycuda.driver")
    tls = threading.local()
    handles = itertools.count(1)

    def stack() -> list:
        if not hasattr(tls, "stack"):
            tls.stack = []
        return tls.stack

    def current(what: str) -> Context:
        if not stack():
            raise LogicError(f"{what} failed: invalid device context (no context is current in this thread)")
        return stack()[-1]

    class Context:
        def __init__(self, device: Device, primary: bool) -> None:
            self.device, self.primary, self.refs, self.alive = device, primary, 1, True

        def push(self) -> None:
            if not self.alive:
                raise LogicError("context is destroyed")
            stack().append(self)

        @staticmethod
        def pop() -> None:
            if not stack():
                raise LogicError("cuCtxPopCurrent failed: no context")
            stack().pop()

        @staticmethod
        def get_current() -> Context | None:
            return stack()[-1] if stack() else None

        def detach(self) -> None:
            self.refs -= 1
            if self.refs == 0:
                self.alive = False
                while self in stack():
                    stack().remove(self)

        def get_device(self) -> Device:
            return self.device

    class Device:
        _primary: dict[int, Context] = {}

        def __init__(self, index: int) -> None:
            if index != 0:
                raise LogicError("invalid device ordinal")
            self.index = index

        def name(self) -> str:
            return "Fake Orin"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def make_context(self) -> Context:
            ctx = Context(self, primary=False)
            ctx.push()
            return ctx

        def retain_primary_context(self) -> Context:
            ctx = Device._primary.get(self.index)
            if ctx is None or not ctx.alive:
                ctx = Device._primary[self.index] = Context(self, primary=True)
            else:
                ctx.refs += 1
            return ctx

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.context = current("cuMemAlloc")
            self.ptr = MEMORY.alloc(nbytes)

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            MEMORY.free(self.ptr)

    class HostAllocation(np.ndarray):
        def get_device_pointer(self) -> int:
            return self._device_ptr

    class Stream:
        def __init__(self) -> None:
            self.context = current("cuStreamCreate")
            self.handle = next(handles)

        def synchronize(self) -> None:
            current("cuStreamSynchronize")

    def check(what: str, dev: DeviceAllocation, stream: Stream) -> None:
        ctx = current(what)
        if dev.context is not ctx or stream.context is not ctx:
            raise LogicError(f"{what} failed: invalid device context (memory belongs to another context)")

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        current("cuMemHostAlloc")
        raw = HostAllocation(shape, dtype)  # owns its memory, as pycuda's does
        raw.fill(0)
        if mem_flags & drv.host_alloc_flags.DEVICEMAP:
            raw._device_ptr = MEMORY.register(raw.view(np.ndarray))
        return raw.view(np.ndarray)

    def memcpy_htod_async(dev: DeviceAllocation, host: np.ndarray, stream: Stream) -> None:
        check("cuMemcpyHtoDAsync", dev, stream)
        MEMORY.view(dev.ptr, (host.nbytes,), np.uint8)[...] = host.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(host: np.ndarray, dev: DeviceAllocation, stream: Stream) -> None:
        check("cuMemcpyDtoHAsync", dev, stream)
        host.reshape(-1).view(np.uint8)[...] = MEMORY.view(dev.ptr, (host.nbytes,), np.uint8)

    drv.init = lambda flags=0: None
    drv.Context, drv.Device, drv.Stream, drv.LogicError = Context, Device, Stream, LogicError
    drv.mem_alloc, drv.pagelocked_empty = mem_alloc, pagelocked_empty
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    drv.host_alloc_flags = types.SimpleNamespace(PORTABLE=1, DEVICEMAP=2, WRITECOMBINED=4)
    drv.stack = stack

    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []  # a package
    pkg.driver = drv
    return {"pycuda": pkg, "pycuda.driver": drv}


class _SideEffectFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of pycuda.autoinit / autoprimaryctx run their effect in the importing thread, like the real ones."""

    def __init__(self, drv: types.ModuleType) -> None:
        self.drv = drv

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name in ("pycuda.autoinit", "pycuda.autoprimaryctx"):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        dev = self.drv.Device(0)
        if module.__name__ == "pycuda.autoinit":
            module.context = dev.make_context()
        else:
            module.context = dev.retain_primary_context()
            module.context.push()
        module.device = dev


def install(monkeypatch: Any) -> types.ModuleType:
    """Install the fake for one test; returns ``pycuda.driver``."""
    for name in [m for m in sys.modules if m == "pycuda" or m.startswith("pycuda.")]:
        monkeypatch.delitem(sys.modules, name)
    modules = make_pycuda()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "meta_path", [_SideEffectFinder(modules["pycuda.driver"]), *sys.meta_path])
    return modules["pycuda.driver"]
