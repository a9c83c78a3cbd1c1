"""Torch backend: runs the same fused graph that is exported (CPU or CUDA, fp32 or fp16)."""

from __future__ import annotations

import numpy as np
import torch

from edge_ad.models.simplenet import SimpleNet
from edge_ad.runtimes.base import check_batch


class TorchRuntime:
    """Wraps :meth:`SimpleNet.inference_graph`; fp16 runs the network in half precision, maps in fp32."""

    name = "torch"

    def __init__(self, model: SimpleNet, device: str = "cpu", precision: str = "fp32"):
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch runtime supports fp32 and fp16, not {precision!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        self.device = torch.device(device)
        self.precision = precision
        self.image_size = model.image_size
        self.graph = model.eval().inference_graph().to(self.device)
        if precision == "fp16":
            self.graph.half()
            self.graph.head.float()  # smoothing and max stay in fp32

    @torch.no_grad()
    def patch_scores(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(check_batch(batch, self.image_size)).to(self.device)
        if self.precision == "fp16":
            x = x.half()
        return self.graph.patch_scores(x).float()

    @torch.no_grad()
    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image_score, anomaly_map = self.graph.head(self.patch_scores(batch))
        return image_score.cpu().numpy(), anomaly_map.cpu().numpy()
