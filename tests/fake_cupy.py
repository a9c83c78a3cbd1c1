"""A CPU stand-in for the slice of CuPy that ``edge_ad.runtimes.cuda_postprocess`` uses.

It behaves like the real API where the runner depends on it: ``RawModule(code=...)`` compiles lazily and
``get_function`` raises ``CompileException`` for a broken toolchain; kernels are called as
``kernel(grid, block, args)`` and check CUDA's grid and block limits (``CUDADriverError`` as the driver
reports them), the argument types of the ``.cu`` signatures (``np.int32`` scalars, float32 arrays) and then
compute what the kernel computes, in numpy, only on the threads the launch covers; ``empty`` allocates from a
pool with a limit and raises ``OutOfMemoryError`` like CuPy's memory pool. Nothing here touches a GPU.
"""

from __future__ import annotations

import importlib.machinery
import types
import weakref
from typing import Any

import numpy as np

from edge_ad.postprocess.numpy_ops import resize_matrix

MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_BLOCK_THREADS = 1024


class CUDADriverError(RuntimeError):
    pass


class CompileException(Exception):
    pass


class OutOfMemoryError(MemoryError):
    def __init__(self, size: int, total: int) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


class _Pool:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.allocations = 0

    def check(self, nbytes: int) -> None:
        if self.used + nbytes > self.limit:
            raise OutOfMemoryError(nbytes, self.used)

    def take(self, nbytes: int) -> None:
        self.check(nbytes)
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        self.allocations += 1

    def give(self, nbytes: int) -> None:
        self.used -= nbytes


class _Device:
    current = 0

    def __init__(self, device: int | None = None) -> None:
        self.id = _Device.current if device is None else int(device)
        self._previous: list[int] = []

    def __enter__(self) -> _Device:
        self._previous.append(_Device.current)
        _Device.current = self.id
        return self

    def __exit__(self, *exc: object) -> None:
        _Device.current = self._previous.pop()


class FakeArray:
    """A device array: numpy storage, accounted in the pool, not a numpy subclass (as with CuPy)."""

    def __init__(self, data: np.ndarray, pool: _Pool) -> None:
        pool.take(data.nbytes)
        self._data = data
        self.device = _Device(_Device.current)
        weakref.finalize(self, pool.give, data.nbytes)

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    size = property(lambda self: self._data.size)
    ndim = property(lambda self: self._data.ndim)

    def reshape(self, *shape: Any) -> FakeArray:
        view = object.__new__(FakeArray)
        view._data, view.device = self._data.reshape(*shape), self.device
        return view

    def get(self) -> np.ndarray:
        return self._data.copy()


def _hpass(patch: np.ndarray, h: int, w: int, W: int, taps: np.ndarray, radius: int, rows: np.ndarray) -> np.ndarray:
    resized = np.matmul(patch.reshape(-1, h, w).astype(np.float64), resize_matrix(w, W).T)  # [N, h, W]
    return _correlate(resized, taps, radius, axis=2)


def _vpass(rows: np.ndarray, h: int, W: int, H: int, taps: np.ndarray, radius: int) -> np.ndarray:
    resized = np.matmul(resize_matrix(h, H), rows.reshape(-1, h, W).astype(np.float64))  # [N, H, W]
    return _correlate(resized, taps, radius, axis=1)


def _correlate(arr: np.ndarray, taps: np.ndarray, radius: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * arr.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(arr, pad, mode="symmetric")
    n = arr.shape[axis]
    return sum(float(t) * np.take(padded, np.arange(k, k + n), axis=axis) for k, t in enumerate(taps))


# name -> (argument kinds of the .cu signature, coverage of (x, y, z) the launch must reach)
_SIGNATURES = {
    "anomaly_map_hpass": ("a i i i a i a", lambda a: (a[3], a[1], None)),  # x: W, y: h, z: N
    "anomaly_map_vpass": ("a i i i a i a", lambda a: (a[2], a[3], None)),  # x: W, y: H, z: N
    "anomaly_map_image_max": ("a i a", lambda a: (None, None, None)),  # one block per image
}


class _RawKernel:
    def __init__(self, module: FakeCupy, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        self.module.launches.append((self.name, tuple(grid), tuple(block)))
        if self.module.launch_error:
            raise CUDADriverError(self.module.launch_error)
        if len(grid) != 3 or any(g < 1 or g > m for g, m in zip(grid, MAX_GRID, strict=True)):
            raise CUDADriverError("CUDA_ERROR_INVALID_VALUE: invalid argument")
        if int(np.prod(block)) > MAX_BLOCK_THREADS:
            raise CUDADriverError("CUDA_ERROR_INVALID_VALUE: invalid argument")
        kinds, _ = _SIGNATURES[self.name]
        kinds = kinds.split()
        if len(args) != len(kinds):
            raise TypeError(f"{self.name} takes {len(kinds)} arguments, got {len(args)}")
        for kind, arg in zip(kinds, args, strict=True):
            if kind == "i" and not isinstance(arg, np.int32):
                raise TypeError(f"{self.name}: int argument passed as {type(arg).__name__}, not numpy.int32")
            if kind == "a" and not (isinstance(arg, FakeArray) and arg.dtype == np.float32):
                raise TypeError(f"{self.name}: pointer argument must be a float32 device array")
        getattr(self, "_" + self.name)(grid, block, args)

    @staticmethod
    def _covered(grid: tuple[int, ...], block: tuple[int, ...], axis: int) -> int:
        return grid[axis] * block[axis]

    def _anomaly_map_hpass(self, grid: Any, block: Any, args: Any) -> None:
        patch, h, w, width, taps, radius, rows = args
        n = patch.shape[0]
        full = _hpass(patch._data, int(h), int(w), int(width), taps._data, int(radius), rows._data)
        nx, ny, nz = min(self._covered(grid, block, 0), width), min(grid[1], h), min(grid[2], n)
        rows._data.reshape(n, h, width)[:nz, :ny, :nx] = full[:nz, :ny, :nx]

    def _anomaly_map_vpass(self, grid: Any, block: Any, args: Any) -> None:
        rows, h, width, height, taps, radius, out = args
        n = out.shape[0]
        full = _vpass(rows._data, int(h), int(width), int(height), taps._data, int(radius))
        nx = min(self._covered(grid, block, 0), width)
        ny, nz = min(self._covered(grid, block, 1), height), min(grid[2], n)
        out._data.reshape(n, height, width)[:nz, :ny, :nx] = full[:nz, :ny, :nx]

    def _anomaly_map_image_max(self, grid: Any, block: Any, args: Any) -> None:
        patch, count, score = args
        n = min(grid[0], score.shape[0])
        score._data[:n] = np.max(patch._data.reshape(-1, int(count))[:n], axis=1)


class _RawModule:
    def __init__(self, owner: FakeCupy, code: str) -> None:
        self.owner, self.code = owner, code

    def get_function(self, name: str) -> _RawKernel:
        if self.owner.compile_error:  # NVRTC runs on first use, as in CuPy
            raise CompileException(self.owner.compile_error)
        if f"void {name}(" not in self.code:
            raise CUDADriverError("CUDA_ERROR_NOT_FOUND: named symbol not found")
        return _RawKernel(self.owner, name)


class FakeCupy(types.ModuleType):
    """``sys.modules["cupy"] = FakeCupy(...)`` (with pytest's monkeypatch) makes the runner see CuPy."""

    float32 = np.float32

    def __init__(self, devices: int = 1, memory_limit: int = 1 << 30) -> None:
        super().__init__("cupy")
        self.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
        self.pool = _Pool(memory_limit)
        self.launches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        self.compile_error: str | None = None
        self.launch_error: str | None = None
        self.ndarray = FakeArray
        owner = self

        def get_device_count() -> int:
            if devices == 0:
                raise CUDADriverError("cudaErrorNoDevice: no CUDA-capable device is detected")
            return devices

        self.cuda = types.SimpleNamespace(
            Device=_Device,
            runtime=types.SimpleNamespace(getDeviceCount=get_device_count),
            memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
            compiler=types.SimpleNamespace(CompileException=CompileException),
            driver=types.SimpleNamespace(CUDADriverError=CUDADriverError),
        )
        self.RawModule = lambda code=None, **kw: _RawModule(owner, code or "")

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> FakeArray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.pool.check(nbytes)  # raise before numpy would try to allocate a huge host array
        return FakeArray(np.full(shape, np.nan, dtype=dtype), self.pool)

    def asarray(self, x: Any, dtype: Any = None) -> FakeArray:
        if isinstance(x, FakeArray):
            return x if dtype is None or x.dtype == dtype else FakeArray(x._data.astype(dtype), self.pool)
        return FakeArray(np.array(x, dtype=dtype), self.pool)

    def ascontiguousarray(self, x: Any, dtype: Any = None) -> FakeArray:
        return self.asarray(x, dtype)

    @staticmethod
    def asnumpy(x: FakeArray) -> np.ndarray:
        return x.get()
