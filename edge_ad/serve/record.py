"""The one JSON record every scored (or refused) input produces, in results.jsonl, the API and the webhook."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from edge_ad.results import Prediction

__all__ = ["error_record", "make_record", "new_record_id", "utc_now"]


def utc_now() -> str:
    """UTC time as ISO 8601 with milliseconds and a ``Z``: sortable, unambiguous across plants and time zones."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_record_id() -> str:
    """Time-sortable, unguessable id; also the overlay file name, so it holds only ``[0-9a-zT-]``."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"


def make_record(
    prediction: Prediction, *, id: str, source: str, name: str, latency_ms: float, model_sha256: str | None
) -> dict[str, Any]:
    """Record of a scored input: verdict against the stored threshold, end-to-end latency, the model's hash."""
    return {
        "id": id,
        "time": utc_now(),
        "source": source,
        "name": name,
        "image_score": round(float(prediction.image_score), 6),
        "verdict": prediction.verdict,
        "threshold": round(float(prediction.threshold), 6),
        "latency_ms": round(float(latency_ms), 3),
        "model_sha256": model_sha256,
    }


def error_record(*, id: str, source: str, name: str, error: str, persisted: bool = True) -> dict[str, Any]:
    """Record of an input that got no verdict (unreadable, refused by the gate, failed inference).

    ``persisted=False`` marks a record handed back without being written to results.jsonl (the service is stopping,
    the log is not writable): a source must not consume that input, it is to be scored again later.
    """
    record = {"id": id, "time": utc_now(), "source": source, "name": name, "error": error}
    if not persisted:
        record["persisted"] = False
    return record
