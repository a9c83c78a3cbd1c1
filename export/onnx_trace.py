"""Tracing a family's inference graph to ONNX: which exporter, and node names every exporter shares.

A graph may declare the exporter it needs (``onnx_exporter`` on the module: ``"torchscript"``, the default, or
``"dynamo"``); export reads the attribute and never checks a family's name. ``"torchscript"`` is the legacy
``torch.onnx.export(..., dynamo=False)``, which folds eval-mode BatchNorm into convolutions and names nodes by module
path (``/backbone/_blocks.0/Conv``); when it fails on an undeclared graph, one warning line says so and the
torch.export-based exporter is tried. ``"dynamo"`` goes to that exporter directly, without trying the other one:
for a graph the legacy exporter cannot take (RealNet's RRS BatchNorm follows a Concat whose channel count the
tracer does not know), so its export prints nothing.

The torch.export-based exporter writes opset 18 (:data:`DYNAMO_OPSET`) itself; asked for less, it converts down and
fails for ``Pad`` with a logged traceback, so a lower request is raised to 18 (TensorRT 10 reads up to 20). Its
nodes are named ``node_Conv_12``; :func:`scope_names` renames them from the module scopes it records
(``pkg.torch.onnx.name_scopes``) to the legacy form, so the node-name patterns of a graph's ``int8_layout`` mean the
same with both exporters, and drops the per-node metadata (source paths and stack traces of the exporting machine).
"""

from __future__ import annotations

import ast
import io
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from edge_ad.artifacts import INPUT_NAME, ArtifactCheckError

__all__ = ["DYNAMO_OPSET", "EXPORTERS", "ExportError", "exporter_of", "scope_names", "trace_export"]

EXPORTERS = ("torchscript", "dynamo")
DYNAMO_OPSET = 18  # the torch.export-based exporter's own opset: no down-conversion
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class ExportError(ArtifactCheckError):
    """The exported graph failed a check (checker, TensorRT ops, parity, fp16 range)."""


def exporter_of(graph: nn.Module) -> str:
    """The exporter ``graph`` declares (``onnx_exporter``), ``"torchscript"`` when it declares none."""
    exporter = getattr(graph, "onnx_exporter", "torchscript")
    if exporter not in EXPORTERS:
        raise ExportError(f"{type(graph).__name__}.onnx_exporter is {exporter!r}; expected one of {EXPORTERS}")
    return str(exporter)


def _legacy(module: nn.Module, example: Tensor, names: dict[str, Any], dynamic_batch: bool) -> onnx.ModelProto:
    dynamic_axes = {name: {0: "batch"} for name in (INPUT_NAME, *names["output_names"])} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*will be removed.*")
        warnings.filterwarnings("ignore", message=r".*Constant folding not applied.*")  # strided Slice: stays a Slice
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, do_constant_folding=True, dynamic_axes=dynamic_axes, **names
        )
    return onnx.load_from_string(buffer.getvalue())


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Silence the exporter's own INFO/WARNING chatter (ERROR still shows)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _dynamo(module: nn.Module, example: Tensor, names: dict[str, Any], dynamic_batch: bool) -> onnx.ModelProto:
    dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim("batch")}} if dynamic_batch else None
    if dynamic_batch and example.shape[0] == 1:  # torch.export specialises a size-1 axis: trace on two images
        example = torch.cat([example, example])
    names = {**names, "opset_version": max(int(names["opset_version"]), DYNAMO_OPSET)}
    with _quiet_loggers("torch.onnx", "torch.export", "onnxscript"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), None, dynamo=True, dynamic_shapes=dynamic_shapes, optimize=True, verbose=False, **names
        )
    return scope_names(program.model_proto)


def trace_export(
    module: nn.Module, example: Tensor, opset: int, dynamic_batch: bool, output_names: tuple[str, ...]
) -> onnx.ModelProto:
    """ONNX of ``module`` traced on ``example`` with the exporter the module declares (:func:`exporter_of`)."""
    names = {"input_names": [INPUT_NAME], "output_names": list(output_names), "opset_version": opset}
    if exporter_of(module) == "dynamo":
        try:
            return _dynamo(module, example, names, dynamic_batch)
        except Exception as exc:
            raise ExportError(f"ONNX export failed (torch.export-based exporter): {exc!r}") from exc
    try:
        return _legacy(module, example, names, dynamic_batch)
    except Exception as legacy_exc:  # an undeclared graph the legacy path cannot take: one line, then the other
        first = (str(legacy_exc).strip().splitlines() or [type(legacy_exc).__name__])[0][:200]
        warnings.warn(
            f"TorchScript ONNX export failed ({first}); retrying with the torch.export-based exporter "
            f"(declare onnx_exporter = 'dynamo' on {type(module).__name__} to go there directly)",
            RuntimeWarning,
            stacklevel=3,
        )
        try:
            return _dynamo(module, example, names, dynamic_batch)
        except Exception as exc:
            raise ExportError(f"ONNX export failed with both exporters: {first}; then {exc!r}") from exc


def _scope_path(scopes: list[str]) -> list[str]:
    """``['', 'parts.0', 'parts.0.rrs', 'topk']`` -> ``['parts.0', 'rrs']``: each module relative to its parent."""
    path, parent = [], ""
    for scope in scopes[1:-1]:
        path.append(scope[len(parent) + 1 :] if parent and scope.startswith(parent + ".") else scope)
        parent = scope
    return path


def scope_names(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Rename the nodes of a torch.export-based ONNX to ``/module/path/OpType`` (``_1``, ``_2`` ... when repeated),
    the legacy exporter's form, from the scopes it records; nodes without scopes keep their names. Node metadata is
    dropped. Returns ``proto``, changed in place."""
    taken = Counter[str]()
    existing = {node.name for node in proto.graph.node}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        del node.metadata_props[:]
        try:
            scopes = ast.literal_eval(meta[_SCOPES_KEY])
        except (KeyError, ValueError, SyntaxError):
            continue
        if not isinstance(scopes, list) or not scopes:
            continue
        base = "/" + "/".join([*_scope_path([str(s) for s in scopes]), node.op_type])
        while True:
            count = taken[base]
            taken[base] += 1
            name = base if count == 0 else f"{base}_{count}"
            if name not in existing:
                break
        existing.add(name)
        node.name = name
    return proto
