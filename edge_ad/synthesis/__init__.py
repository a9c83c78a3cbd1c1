"""Synthetic anomalies for training and validation without defects (numpy + OpenCV only; no torch).

NSA (Schlueter et al. 2021): patches cut from one good image, rescaled and Poisson-blended into another.
"""

from edge_ad.synthesis.foreground import estimate_background, foreground_mask
from edge_ad.synthesis.generator import NsaGenerator, example_rng
from edge_ad.synthesis.nsa import Patch, Synthetic, synthesize
from edge_ad.synthesis.params import (
    AUTO,
    BLENDS,
    LABEL_MODES,
    NsaParams,
    known_categories,
    params_for,
    parse_background,
)
from edge_ad.synthesis.sets import batch_stream, synthetic_set

__all__ = [
    "AUTO",
    "BLENDS",
    "LABEL_MODES",
    "NsaGenerator",
    "NsaParams",
    "Patch",
    "Synthetic",
    "batch_stream",
    "estimate_background",
    "example_rng",
    "foreground_mask",
    "known_categories",
    "params_for",
    "parse_background",
    "synthesize",
    "synthetic_set",
]
