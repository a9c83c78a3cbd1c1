"""The image error type, in its own module so that the reader (images.py) and the input gate (gate.py) share it."""

from __future__ import annotations

__all__ = ["ImageError"]


class ImageError(ValueError):
    """An image or mask file is missing, unreadable, corrupt or has an unsupported format."""
