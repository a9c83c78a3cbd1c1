"""Torch-TensorRT backend: the bundle's fused graph compiled by Torch-TensorRT (dynamo) on a CUDA desktop.

The graph compiled is the torch runtime's own (:class:`~edge_ad.runtimes.torch_runtime.TorchRuntime`): the same
fused SimpleNet graph that is exported to ONNX, with the network in fp16 and the post-processing head in fp32 for
``precision="fp16"``. Where Torch-TensorRT supports ``use_explicit_typing`` (2.6 and later) the engine keeps
exactly those types; an older release gets ``enabled_precisions={float16}`` (weak typing, which lets TensorRT
pick fp16 for the head too) and says so in :attr:`TorchTensorRTRuntime.typing`. One optimisation profile covers
batch 1 (its optimum, for line inspection) to ``max_batch``; larger batches are chunked.

``torch_tensorrt`` is an optional extra (``pip install 'edge-ad[torch-tensorrt]'`` next to a CUDA build of
torch); it is imported only when this runtime is created.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_ad.extras import EXTRA_BY_NAME, MissingExtra, missing_extra_message
from edge_ad.runtimes.base import AnomalyModel, check_batch
from edge_ad.runtimes.torch_runtime import TorchRuntime

PRECISIONS = ("fp32", "fp16")


class TorchTensorRTUnavailable(MissingExtra, RuntimeError):
    """torch_tensorrt is not installed (or cannot load) here."""


def import_torch_tensorrt() -> Any:
    try:
        import torch_tensorrt
    except ImportError as exc:
        message = missing_extra_message(EXTRA_BY_NAME["torch-tensorrt"], "torch_tensorrt", "--backend torch-tensorrt")
        raise TorchTensorRTUnavailable(message) from exc
    return torch_tensorrt


def _require_cuda(device: str) -> None:
    if not device.startswith("cuda"):
        raise ValueError(f"the torch-tensorrt backend runs on a CUDA device, not {device!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("the torch-tensorrt backend needs a CUDA device, and torch sees none")


class _Compiled(nn.Module):
    """images float32 -> (image_score, anomaly_map, patch_scores), dtypes as the torch runtime runs them."""

    def __init__(self, runtime: TorchRuntime) -> None:
        super().__init__()
        self.graph = runtime.graph
        self.half = runtime.precision == "fp16"

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = images.half() if self.half else images
        patch = self.graph.patch_scores(x).float()
        image_score, anomaly_map = self.graph.head(patch)
        return image_score, anomaly_map, patch


def compile_settings(torch_tensorrt: Any, precision: str, workspace_mib: int) -> tuple[dict[str, Any], str]:
    """Keyword arguments for ``torch_tensorrt.compile(ir="dynamo")`` and the typing they give ("explicit"/"weak")."""
    accepted = inspect.signature(torch_tensorrt.dynamo.compile).parameters
    settings: dict[str, Any] = {"workspace_size": int(workspace_mib) << 20, "min_block_size": 1}
    if "use_explicit_typing" in accepted:
        # The module's own dtypes decide: network fp16, head fp32 (enabled_precisions must stay fp32 then).
        settings["use_explicit_typing"] = True
        return settings, "explicit"
    settings["enabled_precisions"] = {torch.float16} if precision == "fp16" else {torch.float32}
    return settings, "weak"


class TorchTensorRTRuntime:
    """``predict(batch) -> (image_score, anomaly_map)`` through a Torch-TensorRT-compiled fused graph."""

    name = "torch-tensorrt"

    def __init__(
        self,
        model: AnomalyModel,
        precision: str = "fp16",
        device: str = "cuda",
        max_batch: int = 8,
        workspace_mib: int = 1024,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"the torch-tensorrt backend supports {', '.join(PRECISIONS)}, not {precision!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.torch_tensorrt = import_torch_tensorrt()
        _require_cuda(device)
        self.device = torch.device(device)
        self.precision = precision
        self.image_size = model.image_size
        self.max_batch = int(max_batch)
        self.module = _Compiled(TorchRuntime(model, device=device, precision=precision)).eval()
        s = self.image_size
        self.inputs = [
            self.torch_tensorrt.Input(
                min_shape=(1, 3, s, s), opt_shape=(1, 3, s, s), max_shape=(self.max_batch, 3, s, s), dtype=torch.float32
            )
        ]
        settings, self.typing = compile_settings(self.torch_tensorrt, precision, workspace_mib)
        with torch.no_grad():
            self.compiled = self.torch_tensorrt.compile(self.module, ir="dynamo", inputs=self.inputs, **settings)

    @torch.no_grad()
    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = check_batch(batch, self.image_size)
        if len(batch) == 0:
            return np.zeros((0,), np.float32), np.zeros((0, self.image_size, self.image_size), np.float32)
        scores, maps = [], []
        for start in range(0, len(batch), self.max_batch):
            x = torch.from_numpy(batch[start : start + self.max_batch]).to(self.device)
            image_score, anomaly_map, _ = self.compiled(x)
            scores.append(image_score.float().cpu().numpy().reshape(-1))
            maps.append(anomaly_map.float().cpu().numpy())
        return np.concatenate(scores), np.concatenate(maps)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the compiled program (TensorRT engine inside) as a Torch-TensorRT ExportedProgram (``.ep``).

        Reload with ``torch_tensorrt.load(path).module()`` on the same GPU and TensorRT version.
        """
        path = Path(path)
        example = torch.zeros((1, 3, self.image_size, self.image_size), dtype=torch.float32, device=self.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic like edge_ad.io.atomic_path, but the temporary file keeps the suffix torch's archive writer checks.
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        try:
            self.torch_tensorrt.save(self.compiled, str(tmp), output_format="exported_program", arg_inputs=[example])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
