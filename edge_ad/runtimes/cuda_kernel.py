"""The CUDA anomaly-map kernels' source and launch geometry, shared by every Python CUDA binding.

Split from :mod:`edge_ad.runtimes.cuda_postprocess` so the facts all bindings must agree on (where the ``.cu``
file lives, the kernel names, block sizes, grid limits and the per-batch launch plan) sit in one small module
that needs no GPU binding at all; :func:`find_nvcc` is here because ``edge-ad doctor`` asks for it too.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

KERNEL_NAMES = ("anomaly_map_hpass", "anomaly_map_vpass", "anomaly_map_image_max")
KERNEL_RESOURCE = ("kernels", "anomaly_map.cu")

# Launch geometry (see the comments above each kernel in anomaly_map.cu).
HPASS_BLOCK = (128, 1, 1)
VPASS_BLOCK = (32, 8, 1)
MAX_BLOCK = (256, 1, 1)  # power of two <= IMAGE_MAX_THREADS
MAX_GRID_YZ = 65535


def kernel_source() -> str:
    """The CUDA source shipped as package data of ``edge_ad.runtimes`` (``kernels/anomaly_map.cu``)."""
    return importlib.resources.files("edge_ad.runtimes").joinpath(*KERNEL_RESOURCE).read_text(encoding="utf-8")


def find_nvcc() -> str:
    """Path of ``nvcc``: PATH first, then ``$CUDA_HOME``/``$CUDA_PATH`` and ``/usr/local/cuda`` (JetPack's place)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return str(Path(root) / "bin" / "nvcc")
    raise RuntimeError(
        "pycuda compiles the kernel with nvcc, which is not on PATH nor in $CUDA_HOME/bin or /usr/local/cuda/bin "
        "(on JetPack: export PATH=/usr/local/cuda/bin:$PATH)"
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _launch_plan(n: int, h: int, w: int, height: int, width: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``kernel name -> (grid, block)`` for one batch."""
    if n > MAX_GRID_YZ or h > MAX_GRID_YZ or _ceil_div(height, VPASS_BLOCK[1]) > MAX_GRID_YZ:
        raise ValueError(f"batch {n} or map size {(h, w)} -> {(height, width)} exceeds the CUDA grid limits")
    return {
        "anomaly_map_hpass": ((_ceil_div(width, HPASS_BLOCK[0]), h, n), HPASS_BLOCK),
        "anomaly_map_vpass": (
            (_ceil_div(width, VPASS_BLOCK[0]), _ceil_div(height, VPASS_BLOCK[1]), n),
            VPASS_BLOCK,
        ),
        "anomaly_map_image_max": ((n, 1, 1), MAX_BLOCK),
    }
