"""The prediction log in the database: stored from the model servers' stream, pruned, queried.

The stream carries answered predictions (table `prediction_log`) and failed requests to a
served version (table `prediction_errors`); both are stored, deduplicated and pruned alike.

`prediction_log_service` is the backend's background consumer of the stream
(mlops_core/prediction_log.py). It reads with a consumer group, so several backends share the
work and each record is stored once; a record is acknowledged only after its row is committed,
and records another backend read but never acknowledged (it died) are claimed after
CLAIM_IDLE_MS. The stream id is unique in the table, so a record stored and then read again
is not stored twice. The functions below it are transport-free: the routes and the tests call
them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import ResponseError
from sqlalchemy import Select, delete, func, select, tuple_

from mlops_core.database import session_scope
from mlops_core.prediction_log import (
    PREDICTION_LOG_STREAM,
    PredictionErrorRecord,
    PredictionRecord,
    from_stream,
)
from mlops_core.schema import Pipeline, PredictionErrorRow, PredictionLogRow
from mlops_core.settings import Settings

log = logging.getLogger(__name__)

GROUP = "backend"
BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000
PRUNE_INTERVAL_SECONDS = 600.0

STORED = Counter(
    "mlops_prediction_log_stored",
    "Prediction records stored from the stream, by outcome (stored, duplicate, malformed).",
    ["outcome"],
)


@dataclass(frozen=True)
class Page:
    items: list[PredictionLogRow]
    total: int


def store_records(
    database_url: str, entries: Sequence[tuple[str, PredictionRecord | PredictionErrorRecord]]
) -> int:
    """Store (stream id, record) pairs not stored yet, answered predictions with the commit of
    each version, failed requests beside them; the number stored."""
    if not entries:
        return 0
    answered = [(sid, r) for sid, r in entries if isinstance(r, PredictionRecord)]
    failed = [(sid, r) for sid, r in entries if isinstance(r, PredictionErrorRecord)]
    with session_scope(database_url) as session:
        known = set(
            session.scalars(
                select(PredictionLogRow.stream_id).where(
                    PredictionLogRow.stream_id.in_([sid for sid, _ in answered])
                )
            )
        )
        known.update(
            session.scalars(
                select(PredictionErrorRow.stream_id).where(
                    PredictionErrorRow.stream_id.in_([sid for sid, _ in failed])
                )
            )
        )
        versions = {(record.model, record.version) for _, record in answered}
        commits = dict(
            ((name, version), sha)
            for name, version, sha in session.execute(
                select(Pipeline.model_name, Pipeline.model_version, Pipeline.commit_sha).where(
                    tuple_(Pipeline.model_name, Pipeline.model_version).in_(list(versions))
                )
            )
        )
        fresh = [(sid, record) for sid, record in answered if sid not in known]
        fresh_failures = [(sid, record) for sid, record in failed if sid not in known]
        session.add_all(
            PredictionLogRow(
                stream_id=sid,
                request_id=record.request_id,
                at=record.at,
                model_name=record.model,
                model_version=record.version,
                commit_sha=commits.get((record.model, record.version)),
                replica=record.replica,
                inputs=record.inputs,
                predictions=record.predictions,
                probabilities=record.probabilities,
                latency_ms=record.latency_ms,
                shadow=record.shadow,
            )
            for sid, record in fresh
        )
        session.add_all(
            PredictionErrorRow(
                stream_id=sid,
                request_id=record.request_id,
                at=record.at,
                model_name=record.model,
                model_version=record.version,
                replica=record.replica,
                reason=record.reason.value,
                status=record.status,
                shadow=record.shadow,
            )
            for sid, record in fresh_failures
        )
    stored = len(fresh) + len(fresh_failures)
    STORED.labels("stored").inc(stored)
    STORED.labels("duplicate").inc(len(entries) - stored)
    return stored


def prune(
    database_url: str, retention_days: int, max_rows: int, now: datetime | None = None
) -> int:
    """Delete rows older than the retention, then the oldest past `max_rows`, of answered
    predictions and of failed requests alike (each table capped on its own); rows deleted."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    removed = 0
    with session_scope(database_url) as session:
        for table in (PredictionLogRow, PredictionErrorRow):
            deleted = session.execute(delete(table).where(table.at < cutoff))
            removed += deleted.rowcount or 0
            total = session.scalar(select(func.count()).select_from(table)) or 0
            if total > max_rows:
                boundary = session.scalar(
                    select(table.at).order_by(table.at.desc()).offset(max_rows)
                )
                if boundary is not None:  # rows as old as the first one past the cap, and older
                    oldest = delete(table).where(table.at <= boundary)
                    removed += session.execute(oldest).rowcount or 0
    return removed


def query(
    database_url: str,
    *,
    model: str | None = None,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
    size: int = 50,
) -> Page:
    """Records newest first, filtered; `page` counts from 1."""
    statement: Select[tuple[PredictionLogRow]] = select(PredictionLogRow)
    if model is not None:
        statement = statement.where(PredictionLogRow.model_name == model)
    if version is not None:
        statement = statement.where(PredictionLogRow.model_version == version)
    if since is not None:
        statement = statement.where(PredictionLogRow.at >= since)
    if until is not None:
        statement = statement.where(PredictionLogRow.at < until)
    with session_scope(database_url) as session:
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        rows = session.scalars(
            statement.order_by(PredictionLogRow.at.desc(), PredictionLogRow.id.desc())
            .offset((page - 1) * size)
            .limit(size)
        )
        return Page(list(rows), total)


class PredictionLogConsumer:
    """Reads the stream with the backend's consumer group and stores what it reads."""

    def __init__(self, redis_url: str, database_url: str, retention_days: int, max_rows: int):
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=10)
        self._database_url = database_url
        self._retention_days = retention_days
        self._max_rows = max_rows
        self._consumer = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-log-consumer")

    async def stop(self) -> None:
        """End the loop: it checks for the stop between reads (a read blocks at most BLOCK_MS;
        redis-py can swallow a cancel that lands inside a blocking read, so it is not relied on)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=BLOCK_MS / 1000 + 5)
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def _run(self) -> None:
        backoff = 0.5
        last_prune = asyncio.get_running_loop().time()  # not at start: a fresh backend is busy
        while not self._stopping.is_set():
            try:
                await self._ensure_group()
                await self._claim_abandoned()
                while not self._stopping.is_set():
                    await self._read_once()
                    backoff = 0.5
                    now = asyncio.get_running_loop().time()
                    if now - last_prune > PRUNE_INTERVAL_SECONDS:
                        last_prune = now
                        await asyncio.to_thread(
                            prune, self._database_url, self._retention_days, self._max_rows
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or the database away: retry, never end the loop
                log.warning("prediction log consumer: %s; retrying in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 10.0)

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(PREDICTION_LOG_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim_abandoned(self) -> None:
        """Take over records a backend that died had read but not acknowledged."""
        start = "0-0"
        while True:
            answer = await self._redis.xautoclaim(
                PREDICTION_LOG_STREAM, GROUP, self._consumer, CLAIM_IDLE_MS, start, count=BATCH
            )
            start, claimed = answer[0], answer[1]
            await self._store(claimed)
            if not claimed or start in (b"0-0", "0-0"):
                return

    async def _read_once(self) -> None:
        answer = await self._redis.xreadgroup(
            GROUP, self._consumer, {PREDICTION_LOG_STREAM: ">"}, count=BATCH, block=BLOCK_MS
        )
        for _stream, entries in answer or []:
            await self._store(entries)

    async def _store(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        if not entries:
            return
        records: list[tuple[str, PredictionRecord | PredictionErrorRecord]] = []
        for stream_id, fields in entries:
            try:
                records.append((stream_id.decode(), from_stream(fields)))
            except ValueError:
                STORED.labels("malformed").inc()
        await asyncio.to_thread(store_records, self._database_url, records)
        await self._redis.xack(PREDICTION_LOG_STREAM, GROUP, *(sid for sid, _ in entries))


@asynccontextmanager
async def prediction_log_consumer(settings: Settings) -> AsyncIterator[None]:
    """Stores the prediction log while the app runs."""
    consumer = PredictionLogConsumer(
        settings.redis_url,
        settings.database_url,
        settings.prediction_log_retention_days,
        settings.prediction_log_max_rows,
    )
    await consumer.start()
    try:
        yield
    finally:
        await consumer.stop()
