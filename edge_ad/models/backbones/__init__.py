"""Frozen feature extractors, one file per architecture, and the registry that names them."""
