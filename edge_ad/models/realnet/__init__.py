"""RealNet's torch modules (Zhang et al., CVPR 2024), a DRAFT not yet wired into training, export or the family
table: anomaly-aware feature selection (:mod:`.afs`), the per-level reconstruction networks G_k
(:mod:`.reconstruction`) and reconstruction-residual selection with its segmentation decoder (:mod:`.rrs`).

What joins them into a family (backbone levels -> AFS gather -> G_k -> residuals -> RRS -> head, the trainer, the
bundle) waits for the family table and the backbone registry.
"""

from edge_ad.models.realnet.afs import AfsScorer, gather_channels, select_channels
from edge_ad.models.realnet.reconstruction import Reconstruction
from edge_ad.models.realnet.rrs import ResidualSelection, SegmentationDecoder, residuals

__all__ = [
    "AfsScorer",
    "Reconstruction",
    "ResidualSelection",
    "SegmentationDecoder",
    "gather_channels",
    "residuals",
    "select_channels",
]
