"""The prediction log's record and the Redis stream that carries it from model servers.

Model servers append one record per answered prediction to PREDICTION_LOG_STREAM, off the
request's path (model_server/prediction_log.py); the backend reads the stream with a consumer
group and stores the records (backend/prediction_store.py). The stream is capped in length, so
a backend that is down for long loses the oldest records, never blocks a model server.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

PREDICTION_LOG_STREAM = "mlops:prediction-log"
# The stream field holding a record as JSON.
RECORD_FIELD = "record"
# The request header a caller sets to name its request (answered with the same header).
REQUEST_ID_HEADER = "X-Request-ID"


class PredictionRecord(BaseModel):
    """One answered prediction request, as logged."""

    request_id: str = Field(max_length=200)
    at: datetime
    model: str
    version: str
    replica: str
    # Each row keyed by feature name when the model knows its names, else by position.
    inputs: list[dict[str, Any]]
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    latency_ms: float

    def stream_fields(self) -> dict[str, str]:
        return {RECORD_FIELD: self.model_dump_json()}

    @classmethod
    def from_stream(cls, fields: dict[bytes, bytes]) -> PredictionRecord:
        """Raises ValueError for an entry that is not a record."""
        raw = fields.get(RECORD_FIELD.encode())
        if raw is None:
            raise ValueError("stream entry has no record field")
        return cls.model_validate_json(raw)


def request_id(presented: str | None) -> str:
    """The caller's request id when usable (printable, at most 200 characters), else a new one."""
    if presented is not None:
        presented = presented.strip()
        if 0 < len(presented) <= 200 and presented.isprintable():
            return presented
    return uuid.uuid4().hex


def keyed_rows(rows: list[list[Any]], names: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """Rows as objects keyed by feature name (by position "0", "1", ... when names are unknown)."""
    keys = list(names) if names is not None else None
    return [
        dict(zip(keys if keys is not None else map(str, range(len(row))), row, strict=False))
        for row in rows
    ]
