"""The model server's side of the prediction log: record every answer, never slow one down.

A route hands each answered prediction to `PredictionLog.record`, and each request to a served
version that failed to `PredictionLog.record_error` (so the model page can show error rates per
version without Prometheus); both only sample and append to a bounded in-memory buffer.
Failures are sampled at the same rate as answers, so that their ratio stays the error rate. A
background task turns the buffer into records and appends them to the Redis stream in batches,
in a thread. When the buffer is full (Redis slow or down) or an append fails, the records are
dropped and counted in
`ml_prediction_log_dropped_total{reason}`: a prediction is never delayed or failed for its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from prometheus_client import Counter

from mlops_core.prediction_log import (
    PREDICTION_LOG_STREAM,
    ErrorReason,
    PredictionErrorRecord,
    answered_fields,
)
from mlops_core.settings import Settings

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.5
BATCH_SIZE = 500

DROPPED = Counter(
    "ml_prediction_log_dropped",
    "Prediction records not logged, by reason (buffer_full: Redis too slow or down; "
    "redis_error: an append failed; unrecordable: an answer that makes no valid record).",
    ["reason"],
)
for _reason in ("buffer_full", "redis_error", "unrecordable"):
    DROPPED.labels(_reason)  # known reasons start at 0: an alert on a rate sees the series


@dataclass(frozen=True)
class _Answered:
    """What a route knows of an answer; made into a record off the request's path."""

    request_id: str
    at: datetime
    model: str
    version: str
    feature_names: tuple[str, ...] | None
    rows: np.ndarray | list[list[Any]]
    predictions: list[Any]
    probabilities: list[list[float]] | None
    latency_ms: float
    shadow: bool = False


@dataclass(frozen=True)
class _Failed:
    """What a route knows of a failed request to a served version."""

    request_id: str
    at: datetime
    model: str
    version: str
    reason: ErrorReason
    status: int
    shadow: bool = False


class PredictionLog:
    """Buffered, batched appends of prediction records to the stream."""

    def __init__(self, settings: Settings, replica: str) -> None:
        self._settings = settings
        self._replica = replica
        self._buffer: deque[_Answered | _Failed] = deque()
        self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        request_id: str,
        model: str,
        version: str,
        feature_names: tuple[str, ...] | None,
        rows: np.ndarray | list[list[Any]],
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        latency_ms: float,
        *,
        shadow: bool = False,
    ) -> None:
        """Keep an answer for the log (sampled); O(1), never blocks. `shadow`: a challenger's
        answer to a copy of the request (mlops_core/canary.py)."""
        self._keep(
            _Answered(
                request_id,
                datetime.now(UTC),
                model,
                version,
                feature_names,
                rows,
                predictions,
                probabilities,
                latency_ms,
                shadow,
            )
        )

    def record_error(
        self,
        request_id: str,
        model: str,
        version: str,
        reason: ErrorReason,
        status: int,
        *,
        shadow: bool = False,
    ) -> None:
        """Keep a failed request for the log (sampled like answers); O(1), never blocks."""
        self._keep(_Failed(request_id, datetime.now(UTC), model, version, reason, status, shadow))

    def _keep(self, item: _Answered | _Failed) -> None:
        rate = self._settings.prediction_log_sample_rate
        if rate <= 0 or (rate < 1 and random.random() >= rate):
            return
        if len(self._buffer) >= self._settings.prediction_log_buffer:
            DROPPED.labels("buffer_full").inc()
            return
        self._buffer.append(item)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-log")

    async def stop(self) -> None:
        """Stop the loop, then append what is still buffered (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._buffer:
            await asyncio.to_thread(self._append, self._take())
        self._redis.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            while self._buffer:
                await asyncio.to_thread(self._append, self._take())

    def _take(self) -> list[_Answered | _Failed]:
        return [self._buffer.popleft() for _ in range(min(BATCH_SIZE, len(self._buffer)))]

    def _append(self, batch: list[_Answered | _Failed]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for item in batch:
            try:
                fields = self._fields(item)
            except (TypeError, ValueError) as exc:  # one odd answer must not end the log's task
                DROPPED.labels("unrecordable").inc()
                log.warning("dropped a prediction record that is not valid: %s", exc)
                continue
            pipe.xadd(
                PREDICTION_LOG_STREAM,
                fields,
                maxlen=self._settings.prediction_log_stream_max,
                approximate=True,
            )
        try:
            pipe.execute()
        except redis.RedisError as exc:
            DROPPED.labels("redis_error").inc(len(batch))
            log.warning("dropped %d prediction records: Redis append failed: %s", len(batch), exc)

    def _fields(self, item: _Answered | _Failed) -> Mapping[str, str | bytes]:
        if isinstance(item, _Failed):
            return PredictionErrorRecord(
                request_id=item.request_id,
                at=item.at,
                model=item.model,
                version=item.version,
                replica=self._replica,
                reason=item.reason,
                status=item.status,
                shadow=item.shadow,
            ).stream_fields()
        return answered_fields(
            request_id=item.request_id,
            at=item.at,
            model=item.model,
            version=item.version,
            replica=self._replica,
            columns=item.feature_names,
            rows=item.rows,
            predictions=item.predictions,
            probabilities=item.probabilities,
            latency_ms=item.latency_ms,
            shadow=item.shadow,
        )
