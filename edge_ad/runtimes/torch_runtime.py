"""Torch backend: runs the same fused graph that is exported (CPU or CUDA, fp32 or fp16)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from edge_ad.runtimes.base import AnomalyModel, check_batch


class TorchRuntime:
    """Wraps :meth:`SimpleNet.inference_graph`; fp16 runs the network in half precision, maps in fp32.

    The caller's model is never changed: the graph shares the model's backbone, so a cast to fp16 or a move to
    another device works on a copy of it. In fp16 only the network (backbone, folded discriminator) is cast;
    the post-processing head, with its 33 Gaussian taps, stays in fp32 exactly as exported.

    ``postprocess="cuda"`` (CUDA devices only) replaces the graph's torch post-processing head by the fused
    CUDA kernel (``edge_ad/runtimes/kernels/anomaly_map.cu``) working on the same device tensors.
    """

    name = "torch"

    def __init__(self, model: AnomalyModel, device: str = "cpu", precision: str = "fp32", postprocess: str = "graph"):
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch runtime supports fp32 and fp16, not {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        self.device = torch.device(device)
        self.precision = precision
        self.image_size = model.image_size
        if postprocess not in ("graph", "cuda"):
            raise ValueError(f"postprocess must be graph or cuda, not {postprocess!r}")
        if postprocess == "cuda" and self.device.type != "cuda":
            raise ValueError("postprocess='cuda' needs a CUDA device")
        graph = model.eval().inference_graph()
        if precision == "fp16" or _device_of(model) != _resolved(self.device):
            graph = copy.deepcopy(graph)  # .half() and .to() work in place, on modules shared with the model
        self.graph = graph.to(self.device)
        if precision == "fp16":
            # Network only: the aggregator's float64 weights are cast per use, the head keeps its fp32 taps.
            for part in (self.graph.backbone, self.graph.parts, self.graph.out):
                part.half()
        self._kernel = None
        if postprocess == "cuda":
            from edge_ad.runtimes.cuda_postprocess import CudaAnomalyMap

            grid = (model.grid_size, model.grid_size)
            size = (model.image_size, model.image_size)
            self._kernel = CudaAnomalyMap(grid, size, sigma=self.graph.smoothing_sigma, backend="torch")

    @torch.no_grad()
    def patch_scores(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(check_batch(batch, self.image_size)).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        return self.graph.patch_scores(x).float()

    @torch.no_grad()
    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        patch = self.patch_scores(batch)
        if self._kernel is not None:
            image_score, anomaly_map = self._kernel(patch[:, 0].contiguous())
        else:
            image_score, anomaly_map = self.graph.head(patch)
        return image_score.cpu().numpy(), anomaly_map.cpu().numpy()


def _device_of(model: AnomalyModel) -> torch.device:
    return _resolved(next(model.parameters()).device)


def _resolved(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so that the same device compares equal however it was named."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
