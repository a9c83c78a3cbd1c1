"""Intake for ``edge-ad serve`` besides HTTP: ``parse_source`` turns one ``--source`` value into a :class:`Source`.

``http`` is not a Source object (the app answers POST /v1/predict itself), so the service checks for it first and
``parse_source("http")`` raises ValueError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ad.serve.sources.base import Source, SourceStatus
from edge_ad.serve.sources.capture import CaptureFactory, CaptureSource
from edge_ad.serve.sources.folder import FolderSource

if TYPE_CHECKING:
    from edge_ad.data.gate import InputLimits

__all__ = ["SOURCE_FORMS", "VIDEO_SUFFIXES", "CaptureSource", "FolderSource", "Source", "SourceStatus", "parse_source"]

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".mjpeg", ".h264")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
SOURCE_FORMS = (
    "http, folder:DIR, camera:N, rtsp://..., http(s)://... (a video stream), a video file "
    f"({', '.join(VIDEO_SUFFIXES)}) or a GStreamer pipeline ending in appsink (contains '!')"
)


def parse_source(
    spec: str,
    *,
    fps: float | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    loop: bool = False,
    limits: InputLimits | None = None,
    settle_s: float = 0.5,
    capture_factory: CaptureFactory | None = None,
) -> Source:
    """One ``--source`` value as a Source; ValueError (one line) for anything not understood.

    ``results_dir`` is the folder holding ``results.jsonl``: the hot folder reads it after a crash so that a file
    whose record was written is not scored twice. ``fps`` limits camera/stream/video sources; ``loop`` replays a
    video file.
    """
    text = spec.strip()
    if not text:
        raise ValueError(f"empty --source; use one of: {SOURCE_FORMS}")
    if text.lower() == "http":
        raise ValueError("'http' is answered by the service's own HTTP endpoint, not by a Source object")
    if "!" in text:
        return CaptureSource(text, kind="gstreamer", fps=fps, limits=limits, capture_factory=capture_factory)
    if text.lower().startswith("folder:"):
        folder = text[len("folder:") :]
        if not folder:
            raise ValueError("folder: needs a folder, e.g. folder:/srv/incoming")
        if not Path(folder).is_dir():
            raise ValueError(f"hot folder not found or not a folder: {folder}")
        return FolderSource(folder, results_dir=results_dir, settle_s=settle_s, limits=limits)
    if text.lower().startswith("camera:"):
        index = text[len("camera:") :]
        if not re.fullmatch(r"\d{1,3}", index):
            raise ValueError(f"camera:N needs a camera index (0, 1, ...), not {index!r}")
        return CaptureSource(int(index), kind="camera", fps=fps, limits=limits, capture_factory=capture_factory)
    if text.lower().startswith(STREAM_SCHEMES):
        return CaptureSource(text, kind="stream", fps=fps, limits=limits, capture_factory=capture_factory)
    if text.startswith("/dev/video"):
        return CaptureSource(text, kind="camera", fps=fps, limits=limits, capture_factory=capture_factory)
    if Path(text).suffix.lower() in VIDEO_SUFFIXES:
        if not Path(text).is_file():
            raise ValueError(f"video file not found: {text}")
        return CaptureSource(
            text, kind="file", fps=fps, loop=loop, limits=limits, capture_factory=capture_factory
        )
    raise ValueError(f"cannot use --source {spec!r}; use one of: {SOURCE_FORMS}")
