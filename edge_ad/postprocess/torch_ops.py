"""Anomaly-map post-processing as a torch module that exports to ONNX (opset 17) and TensorRT.

:class:`AnomalyMapHead` computes what :func:`edge_ad.postprocess.numpy_ops.postprocess` computes: image score = max
of the raw patch map; anomaly map = bilinear resize (``align_corners=False``) to the crop size, then a separable
33-tap Gaussian (sigma 4) with scipy's "reflect" boundary. Both steps are linear per axis, so the head applies the
very matrices numpy does (:func:`~edge_ad.postprocess.numpy_ops.head_matrix`, ``M = G @ R``, ``[H, h]``):
``anomaly_map = M_y @ P @ M_x^T``, two MatMuls with constant operands in the ONNX graph (1.6 M multiply-adds per
image for 28 -> 224; the former resize + two 33-tap convolutions at 224 x 224 ran 10-20x slower, see
``benchmarks/bench_postprocess.py``). :meth:`~AnomalyMapHead.smooth`, the Gaussian alone on a map already at full
size (NSA's), is the same with ``R`` the identity. The matrices depend on the map's size, so they are built
(float64, rounded to the map's dtype) the first time a size is seen and cached per size, dtype and device; they
are graph constants, not part of the state dict. The exported head holds only MatMul, ReduceMax, Squeeze and
constants; the "reflect" boundary (``d c b a | a b c d``, the edge sample repeated: *not* ``F.pad(mode="reflect")``
nor ONNX ``Pad(reflect)``, which are scipy's "mirror") is folded into the matrices.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from edge_ad.postprocess.gaussian import SIGMA, TRUNCATE, gaussian_taps, min_map_size
from edge_ad.postprocess.numpy_ops import head_matrix

__all__ = ["AnomalyMapHead", "reflect_pad"]


def reflect_pad(x: Tensor, radius: int, dim: int) -> Tensor:
    """Pad ``x`` by ``radius`` on both sides of ``dim`` with scipy's "reflect" (edge sample repeated).

    Needs ``x.shape[dim] >= radius`` (a single reflection). The head folds this boundary into its matrices; this
    slice form (ONNX-exportable, unlike ``F.pad``'s mirror) states it for tests and for graphs that pad explicitly.
    """
    if radius == 0:
        return x
    # Slices with constant (negative) bounds, so the ONNX graph needs no Shape arithmetic.
    head = [slice(None)] * (dim % x.dim())
    left = x[(*head, slice(0, radius))].flip(dim)
    right = x[(*head, slice(-radius, None))].flip(dim)
    return torch.cat([left, x, right], dim=dim)


class AnomalyMapHead(nn.Module):
    """``patch_scores[N, 1, h, w] -> (image_score[N], anomaly_map[N, H, W])``.

    ``out_size`` is the full-resolution ``(H, W)``; each side must be at least ``radius + 1`` (17 for
    sigma 4), otherwise ``ValueError`` (scipy's repeated reflection for tiny maps is not supported).
    A ``[N, h, w]`` input is accepted too.
    """

    def __init__(self, out_size: tuple[int, int], sigma: float = SIGMA, truncate: float = TRUNCATE) -> None:
        super().__init__()
        height, width = (int(s) for s in out_size)
        smallest = min_map_size(sigma, truncate)
        if height < smallest or width < smallest:
            raise ValueError(
                f"anomaly map size {(height, width)} is too small for sigma={sigma}, truncate={truncate}: "
                f"each side must be at least {smallest} (Gaussian radius + 1)"
            )
        self.out_size = (height, width)
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        taps = torch.from_numpy(gaussian_taps(sigma, truncate)).float()
        self.radius = (taps.numel() - 1) // 2
        # The 1-D taps the matrices are built from (as numpy builds them), kept as float32 buffers: the state dict
        # keeps its keys and a runtime that casts the network can be seen to leave the head's taps alone.
        self.register_buffer("kernel_h", taps.view(1, 1, 1, -1).clone())  # along W
        self.register_buffer("kernel_v", taps.view(1, 1, -1, 1).clone())  # along H
        self._cache: dict[tuple[int, int, int, int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, sigma={self.sigma}, truncate={self.truncate}, radius={self.radius}"

    def smooth(self, maps: Tensor) -> Tensor:
        """Separable Gaussian of ``[N, 1, H, W]`` maps with scipy "reflect" boundaries, at their own size (NSA's
        full-size maps): ``G_H @ maps @ G_W^T``, each side at least ``radius + 1``."""
        rows, cols_t = self._matrices(maps.shape[-2:], maps.shape[-2:], maps)
        return torch.matmul(torch.matmul(rows, maps), cols_t)

    def head_matrices(self, patch_hw: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor]:
        """``(M_y [H, h], M_x^T [w, W])`` that take a ``patch_hw`` map to the smoothed ``out_size`` map, in
        ``like``'s dtype and device (built once per size, dtype and device)."""
        return self._matrices(patch_hw, self.out_size, like)

    def _matrices(self, in_hw: tuple[int, int], out_hw: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor]:
        with warnings.catch_warnings():
            # Traced for export, the sizes are tensors read as constants: right, as an exported graph's map sizes
            # are fixed (only its batch axis is dynamic) and the matrices are constants of those sizes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            (h, w), (height, width) = ((int(s) for s in hw) for hw in (in_hw, out_hw))
            key = (h, w, height, width, like.dtype, like.device)
            if key not in self._cache:
                dtype = "float64" if like.dtype == torch.float64 else "float32"
                rows = head_matrix(h, height, self.sigma, self.truncate, dtype)
                cols = head_matrix(w, width, self.sigma, self.truncate, dtype)
                self._cache[key] = (
                    torch.tensor(rows, dtype=like.dtype, device=like.device),
                    torch.tensor(cols.T, dtype=like.dtype, device=like.device),
                )
        return self._cache[key]

    def forward(self, patch_scores: Tensor) -> tuple[Tensor, Tensor]:
        if patch_scores.dim() == 3:
            patch_scores = patch_scores.unsqueeze(1)
        if not torch.jit.is_tracing() and (patch_scores.dim() != 4 or patch_scores.shape[1] != 1):
            raise ValueError(f"expected patch scores [N, 1, h, w], got {tuple(patch_scores.shape)}")
        image_score = torch.amax(patch_scores, dim=(1, 2, 3))
        rows, cols_t = self.head_matrices(patch_scores.shape[-2:], patch_scores)
        anomaly_map = torch.matmul(torch.matmul(rows, patch_scores), cols_t).squeeze(1)  # resize + Gaussian
        return image_score, anomaly_map
