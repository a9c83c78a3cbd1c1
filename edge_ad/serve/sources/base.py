"""What every non-HTTP intake (hot folder, camera, stream, video file) offers the service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for the type checker: the worker and metrics are passed in at start()
    from edge_ad.serve.metrics import Metrics
    from edge_ad.serve.worker import InferenceWorker

__all__ = ["Source", "SourceStatus"]

SourceStatus = dict[str, Any]  # {"up": bool, "detail": str}: what /readyz reports per source


@runtime_checkable
class Source(Protocol):
    """A producer of jobs for the inference worker; it owns its thread(s) and its queue policy."""

    name: str

    def start(self, worker: InferenceWorker, metrics: Metrics) -> None:
        """Begin intake in background threads; returns at once."""

    def stop(self) -> None:
        """Stop intake (no new jobs); returns quickly, jobs already submitted are the worker's to drain."""

    def status(self) -> SourceStatus:
        """``{"up": bool, "detail": str}`` for ``/readyz`` and the live page."""
