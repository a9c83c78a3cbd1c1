"""A CPU stand-in for the part of Torch-TensorRT that ``edge_ad.runtimes.torch_tensorrt_runtime`` uses.

It checks what the real package checks on the way in: ``Input`` needs a shape or a full min/opt/max triple
with ``min <= opt <= max``; ``compile`` knows only its IRs, rejects dynamo settings the installed release does
not have (two signatures: 2.5, before ``use_explicit_typing``, and 2.9 with it), and refuses reduced precisions
in ``enabled_precisions`` under explicit typing. The compiled module runs the given module (on the CPU here)
and, as a TensorRT engine does, refuses a batch outside its optimisation profile. ``save`` needs example
inputs for an ExportedProgram and writes an archive.
"""

from __future__ import annotations

import importlib.machinery
import json
import types
from typing import Any

import torch
from torch import nn

_COMMON = [
    "exported_program", "inputs", "arg_inputs", "kwarg_inputs", "device", "disable_tf32", "enabled_precisions",
    "workspace_size", "min_block_size", "truncate_double", "optimization_level", "timing_cache_path",
]  # fmt: skip
SIGNATURES = {"2.5.0": _COMMON, "2.9.0": [*_COMMON, "use_explicit_typing", "enable_autocast"]}


class Input:
    def __init__(
        self,
        shape: tuple[int, ...] | None = None,
        *,
        min_shape: tuple[int, ...] | None = None,
        opt_shape: tuple[int, ...] | None = None,
        max_shape: tuple[int, ...] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if shape is not None:
            min_shape = opt_shape = max_shape = tuple(shape)
        if None in (min_shape, opt_shape, max_shape):
            raise ValueError("Input needs a shape, or min_shape, opt_shape and max_shape together")
        dims = {len(min_shape), len(opt_shape), len(max_shape)}
        if len(dims) != 1 or not all(a <= b <= c for a, b, c in zip(min_shape, opt_shape, max_shape, strict=True)):
            raise ValueError(f"shape range must satisfy min <= opt <= max: {min_shape}, {opt_shape}, {max_shape}")
        self.shape = {"min_shape": tuple(min_shape), "opt_shape": tuple(opt_shape), "max_shape": tuple(max_shape)}
        self.dtype = dtype


class CompiledModule(nn.Module):
    """What compile returns: runs the module inside the profile of its inputs."""

    def __init__(self, module: nn.Module, inputs: list[Input], settings: dict[str, Any]) -> None:
        super().__init__()
        self.inner, self.spec, self.settings = module, inputs, settings
        self.batches: list[int] = []

    def forward(self, *args: torch.Tensor) -> Any:
        if len(args) != len(self.spec):
            raise RuntimeError(f"expected {len(self.spec)} inputs, got {len(args)}")
        for x, spec in zip(args, self.spec, strict=True):
            lo, hi = spec.shape["min_shape"], spec.shape["max_shape"]
            inside = x.dim() == len(lo) and all(a <= d <= b for a, d, b in zip(lo, x.shape, hi, strict=True))
            if x.dtype != spec.dtype or not inside:
                raise RuntimeError(f"input {tuple(x.shape)} {x.dtype} is outside the engine's profile {spec.shape}")
            self.batches.append(int(x.shape[0]))
        return self.inner(*args)


def make(version: str = "2.9.0") -> types.ModuleType:
    """A module object to put at ``sys.modules["torch_tensorrt"]``."""
    mod = types.ModuleType("torch_tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("torch_tensorrt", None)
    mod.__version__ = version
    mod.Input = Input
    mod.calls = []
    names = SIGNATURES[version]
    code = "def compile(" + ", ".join(f"{n}=None" for n in names) + "):\n    pass\n"
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # a function with the release's real keyword names, for inspect.signature
    mod.dynamo = types.SimpleNamespace(compile=namespace["compile"])

    def compile(module: nn.Module, ir: str = "default", inputs: Any = None, **settings: Any) -> CompiledModule:
        if ir not in ("default", "dynamo", "torch_compile", "ts", "fx"):
            raise ValueError(f"Unknown ir was requested: {ir}")
        unknown = set(settings) - set(names)
        if unknown:
            raise TypeError(f"compile() got unexpected keyword arguments {sorted(unknown)} (torch_tensorrt {version})")
        if not inputs or not all(isinstance(i, Input | torch.Tensor) for i in inputs):
            raise ValueError("inputs must be a list of torch_tensorrt.Input or tensors")
        precisions = set(settings.get("enabled_precisions") or {torch.float32})
        if settings.get("use_explicit_typing") and precisions != {torch.float32}:
            raise AssertionError("use_explicit_typing allows only torch.float32 in enabled_precisions")
        mod.calls.append({"ir": ir, **settings})
        specs = [i if isinstance(i, Input) else Input(tuple(i.shape), dtype=i.dtype) for i in inputs]
        return CompiledModule(module, specs, settings)

    def save(module: nn.Module, file_path: str, output_format: str = "exported_program", **kw: Any) -> None:
        if output_format not in ("exported_program", "torchscript", "aot_inductor"):
            raise ValueError(f"Provided output_format {output_format} is not supported")
        if output_format == "exported_program" and not (kw.get("arg_inputs") or kw.get("inputs")):
            raise ValueError("Provided model is a torch.fx.GraphModule, however the inputs or arg_inputs are empty")
        with open(file_path, "w") as fh:
            json.dump({"format": output_format, "inputs": [list(t.shape) for t in kw.get("arg_inputs") or []]}, fh)

    mod.compile = compile
    mod.save = save
    return mod
