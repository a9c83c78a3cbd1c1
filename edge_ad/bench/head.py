"""The post-processing column of ``edge-ad bench``: the head a runtime's graph declares, in numpy, on its own map.

Why: the column is there to say what the head costs off the graph (on a Jetson's CPU, say). It must time the head
of the family being benchmarked -- SimpleNet's (max, resize, sigma 4) and NSA's (mean, its own sigma, no resize)
cost very different amounts -- so it reads the declaration the graph carries (:class:`HeadDeclaration`) and runs
on the patch map the runtime itself produces. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from edge_ad.postprocess.image_score import HeadDeclaration
from edge_ad.postprocess.numpy_ops import postprocess

__all__ = ["head_of", "numpy_head", "patch_map_of"]


def head_of(runtime: Any) -> HeadDeclaration:
    """What the runtime's graph does after its patch map (image score, smoothing sigma): from the graph itself for
    the torch backends, from what the exported runtimes read of their metadata (``declared_head``: ONNX, engine
    sidecar), else from any ``metadata`` the runtime keeps. The post-processing column times the numpy form of
    exactly that head."""
    if hasattr(runtime, "graph"):
        return HeadDeclaration.of_graph(runtime.graph)
    declared = getattr(runtime, "declared_head", None)
    if isinstance(declared, HeadDeclaration):
        return declared
    return HeadDeclaration.of_metadata(getattr(runtime, "metadata", None) or {}, repr(runtime))


def patch_map_of(runtime: Any, x: np.ndarray) -> np.ndarray:
    """The runtime's own patch-score map ``[N, h, w]`` to time the post-processing on; a random one of the engine's
    patch-map size (or, lacking that, a 1/8 grid) where the runtime cannot hand it back."""
    if getattr(runtime, "has_patch_scores", True) and hasattr(runtime, "patch_scores"):
        patch = runtime.patch_scores(x)
        return np.asarray(patch.cpu().numpy() if hasattr(patch, "cpu") else patch)[:, 0]
    shape = getattr(runtime, "io", {}).get("patch_scores", {}).get("shape")
    grid = tuple(int(d) for d in shape[-2:]) if shape else (x.shape[-1] // 8, x.shape[-1] // 8)
    return np.random.default_rng(0).standard_normal((x.shape[0], *grid)).astype(np.float32)


def numpy_head(runtime: Any) -> Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, np.ndarray]]:
    """``head(patch[N, h, w], (H, W)) -> (image_score[N], anomaly_map[N, H, W])``: the runtime graph's head in numpy."""
    head = head_of(runtime)
    return partial(postprocess, sigma=head.smoothing_sigma, image_score=head.image_score)
