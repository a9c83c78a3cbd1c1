"""SimpleNet's synthetic validation per epoch, kept cheap: the backbone is frozen, so its maps of the validation set
are computed once; each epoch runs only the fused adapter + discriminator and the graph's shared head on them.

Why not the whole graph per epoch: the WideResNet50 trunk is most of the inference cost and its output never
changes during training. The maps are cached in float16 like the training features (the spec's tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from edge_ad.models.simplenet.model import SimpleNet
from edge_ad.synthesis.validation import ValidationScores, ValidationSet, scores_from_outputs


class CachedLayerScorer:
    """Scores a :class:`ValidationSet` with the model's current weights from cached backbone maps."""

    def __init__(
        self,
        model: SimpleNet,
        vset: ValidationSet,
        normalize: Callable[[np.ndarray], np.ndarray],
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        dtype: torch.dtype = torch.float16,
    ):
        self.model = model
        self.vset = vset
        self.device = torch.device(device)
        self.batch_size = batch_size
        chunks: list[list[Tensor]] = []
        with torch.no_grad():
            for start in range(0, len(vset), batch_size):
                x = np.stack([normalize(im) for im in vset.images[start : start + batch_size]]).astype(np.float32)
                maps = model.backbone(torch.from_numpy(x).to(self.device))
                chunks.append([m.to("cpu", dtype) for m in maps])
        self.maps = [torch.cat(layer) for layer in zip(*chunks, strict=True)]

    @torch.no_grad()
    def outputs(self, score_center: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(image scores N, anomaly maps N x H x W) of the whole set; ``score_center`` replaces the config's
        centre for ``two_sided`` scores (it is only fixed after training)."""
        graph = self.model.inference_graph()  # needs eval mode: the caller (EpochValidation) has set it
        if score_center is not None:
            graph.score_center = float(score_center)
        scores, maps = [], []
        for start in range(0, len(self.vset), self.batch_size):
            layers = [m[start : start + self.batch_size].to(self.device, torch.float32) for m in self.maps]
            image_score, anomaly_map = graph.head(graph.patch_scores_from_layers(layers))
            scores.append(image_score.cpu().numpy())
            maps.append(anomaly_map.cpu().numpy())
        return np.concatenate(scores), np.concatenate(maps)

    def __call__(self, vset: ValidationSet, score_center: float | None = None) -> ValidationScores:
        if vset is not self.vset:
            raise ValueError("this scorer cached the maps of another validation set")
        return scores_from_outputs(vset, *self.outputs(score_center))
