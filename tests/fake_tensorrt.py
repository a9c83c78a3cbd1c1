"""A fake ``tensorrt`` module that behaves like TensorRT 10.x / 11.x's Python API, for tests without a GPU.

Not a recorder: the parser turns the ONNX into a network of layers with real tensor names, shapes and dtypes;
the builder applies flags and precision rules (strongly typed networks follow the ONNX's types and refuse
precision flags; weakly typed FP16 runs every layer in FP16 unless the layer's precision is set *and*
OBEY/PREFER_PRECISION_CONSTRAINTS is on; TensorRT 11 has no precision flags at all); a dynamic input needs an
optimisation profile; a static engine refuses other batch sizes; ``set_input_shape`` returns False outside
the profile; ``set_timing_cache`` returns False for a cache from another "device"; the engine inspector
returns per-layer JSON in the version's schema; and ``execute_async_v3`` really computes the engine's outputs
(onnxruntime on the embedded ONNX) from and into "device memory" -- numpy arrays addressed by integer
pointers in :data:`MEMORY` -- refusing to run with an unset address or shape.

:class:`FakeBuffers` is a buffer layer for :class:`edge_ad.runtimes.tensorrt_runtime.TensorRTRuntime` on
that memory; ``tests/fake_pycuda.py`` allocates in the same memory.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx

MAGIC = b"FAKETRT1"
DEVICE = "FakeGPU sm 8.7"


class DeviceMemory:
    """Integer "device pointers" to numpy byte arrays; reading past an allocation is an illegal access."""

    def __init__(self) -> None:
        self._next = itertools.count(0x7F0000000000, 1 << 20)
        self.blocks: dict[int, np.ndarray] = {}

    def alloc(self, nbytes: int) -> int:
        ptr = next(self._next)
        self.blocks[ptr] = np.zeros(max(int(nbytes), 1), np.uint8)
        return ptr

    def register(self, raw: np.ndarray) -> int:
        """Map existing host memory into the device address space (zero-copy)."""
        ptr = next(self._next)
        self.blocks[ptr] = raw.reshape(-1).view(np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        self.blocks.pop(ptr)

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        block = self.blocks.get(int(ptr))
        if block is None:
            raise RuntimeError(f"illegal memory access: {ptr:#x} is not an allocation")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > block.nbytes:
            raise RuntimeError(f"illegal memory access: {nbytes} bytes at {ptr:#x}, allocation is {block.nbytes}")
        return block[:nbytes].view(dtype).reshape(shape)


MEMORY = DeviceMemory()


# ----------------------------------------------------------------------------------------- buffer layer
class FakeDeviceArray:
    """What ``device_array`` hands a kernel backend: device memory that has not been copied to the host."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.ptr, self.shape, self.dtype = ptr, tuple(shape), np.dtype(dtype)

    def get(self) -> np.ndarray:
        return MEMORY.view(self.ptr, self.shape, self.dtype).copy()


class FakeBuffers:
    """A buffer layer over :data:`MEMORY`, counting what the runtime does with it."""

    name = "fake"

    def __init__(self) -> None:
        from edge_ad.runtimes.tensorrt_runtime import DeviceBuffer

        self._make = DeviceBuffer
        self.handle = 1234
        self.counts = {"alloc": 0, "upload": 0, "download": 0, "sync": 0, "capture": 0, "active": 0, "free": 0}
        self.downloaded: list[int] = []
        self.closed = False

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.counts["active"] += 1
        yield

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        self.counts["alloc"] += 1
        dtype = np.dtype(dtype)
        ptr = MEMORY.alloc(int(np.prod(shape)) * dtype.itemsize)
        return self._make(tuple(shape), dtype, ptr, np.zeros(shape, dtype), MEMORY.view(ptr, shape, dtype))

    def upload(self, buf: Any) -> None:
        self.counts["upload"] += 1
        buf.native[...] = buf.host

    def download(self, buf: Any) -> None:
        self.counts["download"] += 1
        self.downloaded.append(buf.ptr)
        buf.host[...] = buf.native

    def synchronize(self) -> None:
        self.counts["sync"] += 1

    def device_array(self, buf: Any, kind: str, shape: tuple[int, ...]) -> FakeDeviceArray:
        return FakeDeviceArray(buf.ptr, shape, buf.dtype)

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        self.counts["capture"] += 1
        return launch

    def free(self, buf: Any) -> None:
        self.counts["free"] += 1
        MEMORY.free(buf.ptr)

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------------------ the module
class _Enum:
    def __init__(self, kind: str, **members: Any) -> None:
        for name, value in members.items():
            setattr(self, name, value)
        self._kind = kind


class _DType:
    def __init__(self, name: str, np_type: Any) -> None:
        self.name, self.np_type = name, np_type

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.BOOL: np.bool_,
}


def make_tensorrt(version: str = "10.3.0", dla_cores: int = 0, device: str = DEVICE) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module; ``version`` 11.x drops every weak-typing API, as TensorRT 11 does."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    dtypes = {
        "FLOAT": _DType("FLOAT", np.float32),
        "HALF": _DType("HALF", np.float16),
        "INT8": _DType("INT8", np.int8),
        "INT32": _DType("INT32", np.int32),
        "INT64": _DType("INT64", np.int64),
        "BOOL": _DType("BOOL", np.bool_),
    }
    trt.DataType = _Enum("DataType", **dtypes)
    trt.float32, trt.float16, trt.int8, trt.int32, trt.int64, trt.bool = (
        dtypes[k] for k in ("FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL")
    )
    by_np = {np.dtype(d.np_type): d for d in dtypes.values()}

    def nptype(dt: _DType) -> Any:
        return dt.np_type

    trt.nptype = nptype
    trt.TensorIOMode = _Enum("TensorIOMode", NONE=0, INPUT=1, OUTPUT=2)
    trt.NetworkDefinitionCreationFlag = _Enum("NetworkDefinitionCreationFlag", STRONGLY_TYPED=1)
    trt.MemoryPoolType = _Enum("MemoryPoolType", WORKSPACE="WORKSPACE")
    flags = {"GPU_FALLBACK": "GPU_FALLBACK", "DEBUG": "DEBUG", "REFIT": "REFIT"}
    if major < 11:
        flags.update(
            FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY", PREFER_PRECISION_CONSTRAINTS="PREFER"
        )
    trt.BuilderFlag = _Enum("BuilderFlag", **flags)
    trt.DeviceType = _Enum("DeviceType", GPU="GPU", DLA="DLA")
    trt.ProfilingVerbosity = _Enum("ProfilingVerbosity", LAYER_NAMES_ONLY=0, NONE=1, DETAILED=2)
    trt.LayerInformationFormat = _Enum("LayerInformationFormat", ONELINE=0, JSON=1)

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity
            self.messages: list[str] = []

        def log(self, severity: int, msg: str) -> None:
            self.messages.append(msg)

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: _DType) -> None:
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class ILayer:
        def __init__(self, name: str, op: str, inputs: list, outputs: list) -> None:
            self.name, self.type = name, op
            self._inputs, self._outputs = inputs, outputs
            self._precision: _DType | None = None
            self._output_types: dict[int, _DType] = {}

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))

        def get_input(self, i: int) -> ITensor | None:
            return self._inputs[i]

        def get_output(self, i: int) -> ITensor:
            return self._outputs[i]

        @property
        def precision(self) -> _DType:
            return self._precision or trt.float32

        @precision.setter
        def precision(self, value: _DType) -> None:
            self._precision = value

        @property
        def precision_is_set(self) -> bool:
            return self._precision is not None

        def set_output_type(self, index: int, dtype: _DType) -> None:
            if not 0 <= index < len(self._outputs):
                raise IndexError(index)
            self._output_types[index] = dtype

        def get_output_type(self, index: int) -> _DType:
            return self._output_types.get(index, self._outputs[index].dtype)

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.strongly_typed = major >= 11 or bool(flags & (1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
            self.layers: list[ILayer] = []
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.onnx: bytes = b""

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_layer(self, i: int) -> ILayer:
            return self.layers[i]

        def get_input(self, i: int) -> ITensor:
            return self.inputs[i]

        def get_output(self, i: int) -> ITensor:
            return self.outputs[i]

        def mark_output(self, tensor: ITensor) -> None:
            self.outputs.append(tensor)

        def unmark_output(self, tensor: ITensor) -> None:
            self.outputs = [t for t in self.outputs if t is not tensor]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse(self, data: bytes) -> bool:
            try:
                model = onnx.shape_inference.infer_shapes(onnx.load_from_string(bytes(data)))
            except Exception as exc:  # noqa: BLE001 - the real parser reports, it does not raise
                self.errors.append(f"ModelImporter: {exc}")
                return False
            graph = model.graph
            types_: dict[str, tuple[tuple[int, ...], _DType]] = {}
            for v in [*graph.input, *graph.value_info, *graph.output]:
                tt = v.type.tensor_type
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
                types_[v.name] = (dims, by_np[np.dtype(_ONNX_TO_NP.get(tt.elem_type, np.float32))])
            inits = {t.name for t in graph.initializer}
            tensors: dict[str, ITensor] = {}

            def tensor(name: str) -> ITensor | None:
                if not name:
                    return None
                if name not in tensors:
                    shape, dt = types_.get(name, ((), trt.float32))
                    tensors[name] = ITensor(name, shape, dt)
                return tensors[name]

            net = self.network
            net.inputs = [tensor(i.name) for i in graph.input if i.name not in inits]
            for k, node in enumerate(graph.node):
                name = node.name or f"node_of_{node.output[0] if node.output else k}"
                ins = [tensor(n) for n in node.input if n not in inits]
                net.layers.append(ILayer(name, node.op_type, ins, [tensor(n) for n in node.output]))
            net.outputs = [tensor(o.name) for o in graph.output]
            net.onnx = bytes(data)
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002 - TRT's names
            if not all(a <= b <= c for a, b, c in zip(min, opt, max, strict=True)):
                raise ValueError("profile must satisfy min <= opt <= max")
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, name: str) -> tuple:
            return self.shapes[name]

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return f"FAKE-CACHE:{device}".encode()

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.pools: dict[str, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.profiling_verbosity = trt.ProfilingVerbosity.LAYER_NAMES_ONLY
            self.default_device_type = trt.DeviceType.GPU
            self.DLA_core = -1
            self.cache: ITimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.pools[pool] = int(size)

        def get_memory_pool_limit(self, pool: str) -> int:
            return self.pools[pool]

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def get_flag(self, flag: str) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> ITimingCache:
            return ITimingCache(bytes(data))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if cache.data and cache.data != f"FAKE-CACHE:{device}".encode() and not ignore_mismatch:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.cache

    def layer_precision(net: INetworkDefinition, config: IBuilderConfig, layer: ILayer) -> str:
        out = layer.get_output(0).dtype if layer.num_outputs else trt.float32
        if out not in (trt.float32, trt.float16):
            return {trt.int8: "int8"}.get(out, "int")
        if net.strongly_typed:
            return "fp16" if out is trt.float16 else "fp32"
        constrained = layer.precision_is_set and bool(config.flags & {"OBEY", "PREFER"})
        if constrained:
            return "fp16" if layer.precision is trt.float16 else "fp32"
        return "fp16" if "FP16" in config.flags else "fp32"

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def _error(self, msg: str) -> None:
            self.logger.log(Logger.ERROR, msg)

        @staticmethod
        def _resolve_output_shapes(net: INetworkDefinition, io: dict[str, dict[str, Any]]) -> None:
            import onnxruntime as ort

            session = ort.InferenceSession(net.onnx, providers=["CPUExecutionProvider"])
            feeds = {}
            for name, e in io.items():
                if e["mode"] == 1:
                    shape = e.get("profile", [e["shape"]])[0]
                    feeds[name] = np.zeros(shape, dtypes[e["dtype"]].np_type)
            outputs = [n for n, e in io.items() if e["mode"] == 2]
            for name, value in zip(outputs, session.run(outputs, feeds), strict=True):
                shape = io[name]["shape"]
                io[name]["shape"] = [shape[0], *value.shape[1:]] if shape and shape[0] < 0 else list(value.shape)

        def build_serialized_network(self, net: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
            if net.strongly_typed and config.flags & {"FP16", "INT8"}:
                return self._error("precision flags are not allowed with a strongly typed network")
            dla = config.default_device_type == trt.DeviceType.DLA
            if dla and not 0 <= config.DLA_core < dla_cores:
                return self._error(f"DLA core {config.DLA_core} does not exist")
            ranges = [shapes for p in config.profiles for shapes in p.shapes.values()]
            if dla and any(len(set(shapes)) > 1 for shapes in ranges):
                return self._error("DLA does not support dynamic dimensions: profile min, opt and max must be equal")
            io: dict[str, dict[str, Any]] = {}
            for t in net.inputs:
                entry = {"mode": 1, "dtype": t.dtype.name, "shape": list(t.shape)}
                if any(d < 0 for d in t.shape):
                    if not config.profiles or t.name not in config.profiles[0].shapes:
                        return self._error(f"{t.name} is dynamic but no optimization profile defines it")
                    entry["profile"] = [list(s) for s in config.profiles[0].shapes[t.name]]
                elif (
                    config.profiles
                    and t.name in config.profiles[0].shapes
                    and any(tuple(s) != t.shape for s in config.profiles[0].shapes[t.name])
                ):
                    return self._error(f"profile for static input {t.name} differs from its shape")
                io[t.name] = entry
            for t in net.outputs:
                io[t.name] = {"mode": 2, "dtype": t.dtype.name, "shape": list(t.shape)}
            if any(d < 0 for e in io.values() if e["mode"] == 2 for d in e["shape"][1:]):
                self._resolve_output_shapes(net, io)  # TensorRT's own shape analysis fixes every non-batch dim
            layers = [
                {"name": layer.name, "type": layer.type, "precision": layer_precision(net, config, layer)}
                for layer in net.layers
            ]
            header = {
                "version": version,
                "device": device,
                "io": io,
                "layers": layers,
                "detailed": config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED,
                "dla": config.DLA_core if config.default_device_type == trt.DeviceType.DLA else None,
                "flags": sorted(config.flags),
                "workspace": config.pools.get("WORKSPACE"),
            }
            return MAGIC + json.dumps(header).encode() + b"\n" + net.onnx

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.batch: int | None = None if engine.dynamic else engine.static_batch
            self.addresses: dict[str, int] = {}
            self.runs = 0
            self.threads: set[str] = set()

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            entry = self.engine.io.get(name)
            if entry is None or entry["mode"] != 1 or len(shape) != len(entry["shape"]):
                return False
            lo, _, hi = entry.get("profile", [entry["shape"]] * 3)
            if any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi, strict=True)):
                return False  # TensorRT logs an error and returns False
            self.batch = int(shape[0])
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            shape = list(self.engine.io[name]["shape"])
            if shape and shape[0] < 0:
                shape[0] = self.batch if self.batch is not None else -1
            return tuple(shape)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            if name not in self.engine.io:
                return False
            self.addresses[name] = int(ptr)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self.addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            if self.batch is None or set(self.addresses) != set(self.engine.io) or not isinstance(stream_handle, int):
                return False  # unset input shape or tensor address: TensorRT refuses to enqueue
            self.runs += 1
            self.threads.add(threading.current_thread().name)
            io = self.engine.io
            feeds = {
                n: MEMORY.view(self.addresses[n], self.get_tensor_shape(n), dtypes[e["dtype"]].np_type)
                for n, e in io.items()
                if e["mode"] == 1
            }
            outputs = [n for n, e in io.items() if e["mode"] == 2]
            for name, value in zip(outputs, self.engine.session.run(outputs, feeds), strict=True):
                MEMORY.view(self.addresses[name], self.get_tensor_shape(name), value.dtype)[...] = value
            return True

    class EngineInspector:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine, self.execution_context = engine, None

        def get_engine_information(self, fmt: int) -> str:
            if fmt != trt.LayerInformationFormat.JSON:
                return "\n".join(layer["name"] for layer in self.engine.layers)
            if not self.engine.detailed:
                layers: list[Any] = [layer["name"] for layer in self.engine.layers]
            else:
                layers = []
                ctx = self.execution_context
                # As TensorRT documents: formats of a dynamic engine need a context with the input shapes set.
                formats = not self.engine.dynamic or (ctx is not None and ctx.batch is not None)
                for layer in self.engine.layers:
                    p = layer["precision"]
                    if not formats:
                        out = {"Name": f"{layer['name']}_out", "Dimensions": [-1]}
                    elif major >= 11:
                        word = {"fp16": "Half", "int8": "Int8"}.get(p, "Float")
                        out = {"Name": f"{layer['name']}_out", "DataType": word, "Format": "Row major linear"}
                    else:
                        word = {"fp16": "FP16", "int8": "Int8"}.get(p, "FP32")
                        out = {"Name": f"{layer['name']}_out", "Format/Datatype": f"Row major linear {word}"}
                    layers.append({"Name": layer["name"], "LayerType": layer["type"], "Outputs": [out]})
            io_key = "I/O Tensors" if major >= 11 else "Bindings"
            return json.dumps({"Layers": layers, io_key: list(self.engine.io)})

    class ICudaEngine:
        def __init__(self, header: dict[str, Any], onnx_bytes: bytes) -> None:
            self.io = header["io"]
            self.layers = header["layers"]
            self.detailed = header["detailed"]
            self.header = header
            self._onnx = onnx_bytes
            self._session = None
            first = next(e for e in self.io.values() if e["mode"] == 1)
            self.dynamic = "profile" in first
            self.static_batch = None if self.dynamic else first["shape"][0]
            self.contexts: list[IExecutionContext] = []

        @property
        def session(self) -> Any:
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.log_severity_level = 3
                self._session = ort.InferenceSession(self._onnx, options, providers=["CPUExecutionProvider"])
            return self._session

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: 1)
        num_layers = property(lambda self: len(self.layers))

        def get_tensor_name(self, i: int) -> str:
            return list(self.io)[i]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.io[name]["shape"])

        def get_tensor_dtype(self, name: str) -> _DType:
            return dtypes[self.io[name]["dtype"]]

        def get_tensor_mode(self, name: str) -> int:
            return self.io[name]["mode"] if name in self.io else trt.TensorIOMode.NONE

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            entry = self.io[name]
            if profile_index != 0 or entry["mode"] != 1:
                raise IndexError("no such profile / not an input")
            return [tuple(s) for s in entry.get("profile", [entry["shape"]] * 3)]

        def create_execution_context(self) -> IExecutionContext:
            ctx = IExecutionContext(self)
            self.contexts.append(ctx)
            return ctx

        def create_engine_inspector(self) -> EngineInspector:
            return EngineInspector(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            data = bytes(data)
            if not data.startswith(MAGIC):
                self.logger.log(Logger.ERROR, "magic tag does not match")
                return None
            head, _, onnx_bytes = data[len(MAGIC) :].partition(b"\n")
            header = json.loads(head)
            if header["version"] != version or header["device"] != device:
                self.logger.log(Logger.ERROR, "the engine plan file is not compatible with this version/device")
                return None
            return ICudaEngine(header, onnx_bytes)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    trt.ICudaEngine, trt.IExecutionContext = ICudaEngine, IExecutionContext
    return trt


# ------------------------------------------------------------------------------------- a tiny edge-ad ONNX
def tiny_edge_onnx(
    path: Any, precision: str = "fp32", batch: int | str = 1, size: int = 32, metadata: dict[str, str] | None = None
) -> Any:
    """An ONNX shaped like edge-ad's export (``images`` -> ``image_score``, ``anomaly_map``, ``patch_scores``).

    Network: channel mean, 8x8 average pool (fp16 for an "fp16" export, with Casts as edge-ad writes them);
    head: bilinear resize x8, 3x3 smoothing conv, reshape, ReduceMax -- the same op types as the real head.
    """
    from pathlib import Path

    from onnx import TensorProto, helper, numpy_helper

    from edge_ad import BUNDLE_FORMAT_VERSION
    from edge_ad.data.preprocess import Preprocessing

    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    grid = size // 8
    nodes = []
    src = "images"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["images"], ["images_fp16"], to=f16, name="cast_in"))
        src = "images_fp16"
    nodes += [
        helper.make_node("ReduceMean", [src], ["gray"], axes=[1], keepdims=1, name="net/mean"),
        helper.make_node("AveragePool", ["gray"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8], name="net/pool"),
    ]
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", ["pooled"], ["patch_scores"], to=f32, name="cast_out"))
    else:
        nodes.append(helper.make_node("Identity", ["pooled"], ["patch_scores"], name="net/out"))
    nodes += [
        helper.make_node("Resize", ["patch_scores", "", "scales"], ["up"], mode="linear", name="head/resize"),
        helper.make_node("Conv", ["up", "taps"], ["smooth"], pads=[1, 1, 1, 1], name="head/smooth"),
        helper.make_node("Reshape", ["smooth", "map_shape"], ["anomaly_map"], name="head/reshape"),
        helper.make_node("ReduceMax", ["anomaly_map"], ["image_score"], axes=[1, 2], keepdims=0, name="head/max"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 1, 8, 8], np.float32), "scales"),
        numpy_helper.from_array(np.full((1, 1, 3, 3), 1 / 9, np.float32), "taps"),
        numpy_helper.from_array(np.array([-1, size, size], np.int64), "map_shape"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_edge_ad",
        [helper.make_tensor_value_info("images", f32, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info("image_score", f32, [batch]),
            helper.make_tensor_value_info("anomaly_map", f32, [batch, size, size]),
            helper.make_tensor_value_info("patch_scores", f32, [batch, 1, grid, grid]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "edge_ad_version": "test",
        "bundle_format_version": str(BUNDLE_FORMAT_VERSION),
        "family": "simplenet",
        "preprocessing": json.dumps(Preprocessing(image_size=size, resize=None).to_dict()),
        "image_size": str(size),
        "threshold": "0.5",
        "score_stats": json.dumps({"mean": 0.0, "std": 1.0}),
        "precision": precision,
        "bundle_weights_sha256": "ab" * 32,
    }
    if metadata is not None:
        meta = {k: v for k, v in {**meta, **metadata}.items() if v is not None}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
