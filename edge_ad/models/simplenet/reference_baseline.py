"""The paper's inference path as its authors run it, written here as the in-run speed baseline.

Torch eager, one batch at a time: unfold of layer2/layer3 (C*9 values per position), resize of the unfolded
layer3, two adaptive poolings, 1536x1536 adapter and the discriminator on every position (on another backbone:
its levels, the config's widths); then the scores go back to the CPU, are upsampled, and
``scipy.ndimage.gaussian_filter`` smooths each map on the CPU. Users of the authors' code see 3-7 FPS on the
RTX 3080 Ti the paper quotes at 77 FPS because of that tail.
Every ``edge-ad bench`` row is reported as a ratio to this baseline measured in the same run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edge_ad.models.simplenet.model import SimpleNet


class ReferenceBaseline:
    """``predict(batch) -> (image_score, anomaly_map)`` the authors' way; shares the model's weights."""

    name = "reference"

    def __init__(self, model: SimpleNet, device: str = "cpu"):
        from scipy.ndimage import gaussian_filter  # the authors' smoothing; scipy ships with the train extra

        self.gaussian_filter = gaussian_filter
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.image_size = model.image_size

    @torch.no_grad()
    def patch_scores(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        cfg = model.config
        maps = model.backbone(x)
        n = x.shape[0]
        grid = maps[0].shape[-2:]
        per_layer = []
        for t in maps:
            c, h, w = t.shape[1:]
            p = F.unfold(t, 3, padding=1)
            if (h, w) != grid:
                p = F.interpolate(p.reshape(n, c * 9, h, w), size=grid, mode="bilinear", align_corners=False)
                p = p.reshape(n, c * 9, -1)
            dim = cfg.pretrain_embed_dim or c  # 0 (EfficientNet-Lite): each channel's 3x3 mean
            per_layer.append(F.adaptive_avg_pool1d(p.permute(0, 2, 1).reshape(-1, 1, c * 9), dim).squeeze(1))
        if cfg.pretrain_embed_dim:  # the paper's second pooling over the concatenation
            stacked = torch.stack(per_layer, 1).reshape(-1, 1, len(per_layer) * cfg.pretrain_embed_dim)
            feats = F.adaptive_avg_pool1d(stacked, cfg.target_embed_dim).squeeze(1)
        else:
            feats = torch.cat(per_layer, 1)
        logits = model.discriminate(feats)
        return model.patch_score_from_logits(logits).reshape(n, 1, *grid)

    @torch.no_grad()
    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        patch = self.patch_scores(x)
        scores = patch.flatten(1).max(dim=1).values.cpu().numpy()
        maps = F.interpolate(patch, size=x.shape[-2:], mode="bilinear", align_corners=False).cpu().numpy()[:, 0]
        return scores, np.stack([self.gaussian_filter(m, sigma=4) for m in maps])
