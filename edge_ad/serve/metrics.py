"""Prometheus metrics of one service, in its own registry (two services in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# End-to-end seconds from intake to record written: CPU batches take ~0.1-1 s, a Jetson engine a few ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's counters; sources and sinks call the helpers, ``render()`` answers ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "edge_ad_latency_seconds", "Intake to record written, per image", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "edge_ad_batch_size", "Images per inference batch", buckets=(1, 2, 4, 8, 16, 32), registry=r
        )
        self.images_scored = Counter("edge_ad_images_scored", "Images given a verdict", ["source"], registry=r)
        self.ng = Counter("edge_ad_ng", "Images judged anomalous (NG)", ["source"], registry=r)
        self.queue_depth = Gauge("edge_ad_queue_depth", "Jobs waiting for the inference worker", registry=r)
        self.dropped = Counter(
            "edge_ad_dropped", "Frames dropped by a source's drop-oldest policy", ["source"], registry=r
        )
        self.errors = Counter("edge_ad_errors", "Inputs refused or failed, by reason", ["source", "reason"], registry=r)
        self.rejected_busy = Counter(
            "edge_ad_rejected_busy", "HTTP requests answered 503 because the queue was full", registry=r
        )
        self.source_up = Gauge("edge_ad_source_up", "1 when the source is delivering, else 0", ["source"], registry=r)
        self.queue_policy = Gauge(
            "edge_ad_queue_policy", "The queue policy each source applies (value is always 1)", ["source", "policy"],
            registry=r,
        )
        self.webhook_sent = Counter("edge_ad_webhook_sent", "Records delivered to the webhook", registry=r)
        self.webhook_failed = Counter(
            "edge_ad_webhook_failed", "Records the webhook could not take after every retry, or dropped", ["reason"],
            registry=r,
        )

    # Helpers, so sources need not know label names.
    def count_drop(self, source: str, n: int = 1) -> None:
        self.dropped.labels(source=source).inc(n)

    def count_error(self, source: str, reason: str) -> None:
        self.errors.labels(source=source, reason=reason).inc()

    def set_source_up(self, source: str, up: bool) -> None:
        self.source_up.labels(source=source).set(1 if up else 0)

    def set_policy(self, source: str, policy: str) -> None:
        """State a source's policy (``reject-503``, ``drop-oldest``, ``back-pressure``) where a scraper sees it."""
        self.queue_policy.labels(source=source, policy=policy).set(1)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
