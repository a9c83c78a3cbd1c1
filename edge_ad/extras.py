"""The optional parts of edge-ad (pyproject's extras): which modules each brings, what it enables, how to install it.

Why one table: a command that meets a missing optional module must say, in one line, which extra to install and the
exact pip line (never a traceback), and ``edge-ad doctor`` lists the same extras as installed or not. Both read
:data:`EXTRAS`, so the two can never disagree. Nothing here imports an optional module: presence is looked up with
``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXTRAS",
    "EXTRA_BY_NAME",
    "Extra",
    "MissingExtra",
    "extra_for_module",
    "extra_status",
    "missing_extra_message",
    "pip_line",
    "require",
]


@dataclass(frozen=True)
class Extra:
    """One pyproject extra: its name, the import names that tell whether it is installed, what it enables."""

    name: str
    modules: tuple[str, ...]
    enables: str
    #: what to do before installing it (torch-tensorrt needs a CUDA build of torch first)
    note: str = ""


EXTRAS: tuple[Extra, ...] = (
    Extra("train", ("torch", "onnx", "onnxscript", "scipy"), "training, the demo, ONNX export, the torch backend"),
    Extra("serve", ("starlette", "uvicorn", "prometheus_client", "multipart"), "the HTTP service (edge-ad serve)"),
    Extra("triton", ("tritonclient",), "--backend triton (a Triton Inference Server client)"),
    Extra("photos", ("skimage",), "real texture photographs (demo-data --source photos)"),
    Extra("sdas", ("torch", "diffusers"), "edge-ad sdas: RealNet's diffusion anomaly source (SDAS)"),
    Extra(
        "torch-tensorrt",
        ("torch_tensorrt",),
        "--backend torch-tensorrt (compiles the torch graph with TensorRT)",
        note="install the CUDA build of torch first",
    ),
    Extra("cuda", ("cuda",), "cuda-python: CUDA helpers outside torch (bench's device memory)"),
)
EXTRA_BY_NAME = {extra.name: extra for extra in EXTRAS}


class MissingExtra(Exception):
    """An optional part a command needs is not installed; the message is the one line to show."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None in sys.modules
        return False


def _checkout() -> Path | None:
    """The source checkout edge-ad runs from (an editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def pip_line(extra: str) -> str:
    """The pip command that installs ``extra`` for this edge-ad: from its checkout when it runs from one."""
    root = _checkout()
    return f"pip install -e '{root}[{extra}]'" if root else f"pip install 'edge-ad[{extra}]'"


def extra_for_module(module: str | None) -> Extra | None:
    """The extra that brings ``module`` (or its top-level package), if any."""
    if not module:
        return None
    top = module.split(".")[0]
    return next((extra for extra in EXTRAS if top in extra.modules), None)


def missing_extra_message(extra: Extra, module: str, needed_for: str | None = None) -> str:
    """``starlette is not installed: edge-ad serve needs the [serve] extra: pip install ...``: the line to show."""
    if needed_for:
        what = f": {needed_for} needs the [{extra.name}] extra"
    else:
        what = f"; it comes with the [{extra.name}] extra ({extra.enables})"
    first = f"; {extra.note}" if extra.note else ""
    return f"{module} is not installed{what}{first}: {pip_line(extra.name)}"


def require(name: str, needed_for: str | None = None) -> None:
    """Raise :class:`MissingExtra` (one line) unless every module of extra ``name`` can be imported."""
    extra = EXTRA_BY_NAME[name]
    for module in extra.modules:
        if not _installed(module):
            raise MissingExtra(missing_extra_message(extra, module, needed_for))


def extra_status() -> list[dict[str, object]]:
    """Every extra: installed or not (and which modules are missing), what it enables, and its pip line."""
    rows: list[dict[str, object]] = []
    for extra in EXTRAS:
        missing = [m for m in extra.modules if not _installed(m)]
        rows.append(
            {
                "extra": extra.name,
                "installed": not missing,
                "missing": missing,
                "enables": extra.enables,
                "pip": pip_line(extra.name),
            }
        )
    return rows
