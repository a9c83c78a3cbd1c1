"""Model families (one file each) and the registry that saves and loads them as bundles. Needs torch."""

from edge_ad.models.registry import FAMILIES, load_model, save_model

__all__ = ["FAMILIES", "load_model", "save_model"]
