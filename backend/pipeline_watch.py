"""The backend's watch over pipelines: what a worker could not finish still ends.

Each pass, every PIPELINE_RECOVERY_SECONDS / 8:
- a running pipeline whose worker stopped beating (mlops_core/pipeline_lease.py) is queued again,
  or failed with "worker lost during <phase> (attempt n of m)" once MAX_PIPELINE_ATTEMPTS
  attempts were lost (cancelled, if a cancel was asked for), and its log says so;
- an ended pipeline whose log is still only in Redis (Redis was down when it ended) gets it
  archived, until that succeeds.

It runs in every backend process: each change is a conditional UPDATE, so when several backends
find the same pipeline, exactly one acts on it. It needs the database, not Redis: a pipeline is
queued again in the database first (`enqueued_at` NULL), so the re-queue loop sends it once the
broker answers. After a pass that could not reach the database it judges no heartbeat for one
staleness window: the workers could not write theirs either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis
from sqlalchemy.exc import SQLAlchemyError

from backend.metrics import PIPELINES_LOST
from backend.periodic import every
from backend.pipeline_queue import PipelineQueue
from mlops_core import pipeline_lease
from mlops_core.database import session_scope
from mlops_core.log_archive import archive_pipeline_log, pending_archives
from mlops_core.log_events import LogPublisher
from mlops_core.pipeline_lease import LostPipeline, Settled
from mlops_core.schema import Pipeline
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

# An ended pipeline's log is left to its own worker for this long before the watch archives it.
ARCHIVE_GRACE_SECONDS: Final = 30.0


class PipelineWatch:
    """One backend's share of watching pipelines (see the module doc)."""

    def __init__(self, settings: Settings, queue: PipelineQueue) -> None:
        self._settings = settings
        self._queue = queue
        self._redis: redis.Redis = queue.redis
        # Monotonic time since which the database has answered every pass (None: it just failed).
        self._db_ok_since: float | None = float("-inf")

    def run_once(self) -> list[LostPipeline]:
        """One pass: settle pipelines whose worker is lost, then archive pending logs."""
        try:
            settled = self.recover_lost()
        except SQLAlchemyError:
            self._db_ok_since = None
            raise
        self.archive_logs()
        return settled

    def recover_lost(self) -> list[LostPipeline]:
        """Queue again (or fail, or cancel) each running pipeline whose heartbeat went stale."""
        settings = self._settings
        with session_scope(settings.database_url) as session:
            stale = [p.id for p in pipeline_lease.stale_running(session, settings)]
        now = time.monotonic()
        if self._db_ok_since is None:
            self._db_ok_since = now
        if now - self._db_ok_since < pipeline_lease.stale_after(settings):
            return []
        settled: list[LostPipeline] = []
        for pipeline_id in stale:
            with session_scope(settings.database_url) as session:
                pipeline = session.get(Pipeline, pipeline_id)
                lost = (
                    None
                    if pipeline is None
                    else pipeline_lease.settle_lost(session, pipeline, settings)
                )
            if lost:
                self._announce(lost)
                settled.append(lost)
        return settled

    def _announce(self, lost: LostPipeline) -> None:
        PIPELINES_LOST.labels(lost.outcome.value).inc()
        logger.warning("pipeline %s: %s", lost.pipeline_id, lost.message)
        if lost.outcome is Settled.REQUEUED:
            self._queue.enqueue(lost.pipeline_id, probe=True)
        publisher = LogPublisher(
            self._redis,
            lost.pipeline_id,
            max_lines=self._settings.log_replay_max_lines,
            ttl_seconds=self._settings.log_replay_ttl_seconds,
        )
        try:
            publisher.publish(lost.message, stream="error")
            if lost.outcome is not Settled.REQUEUED:
                status = lost.outcome.value
                publisher.publish(f"pipeline {status}", stream="status", status=status)
        except redis.RedisError as exc:
            logger.warning("pipeline %s: could not log that (%s)", lost.pipeline_id, exc)

    def archive_logs(self) -> int:
        """Archive the logs ended pipelines left in Redis; stop at the first Redis failure."""
        with session_scope(self._settings.database_url) as session:
            pending = pending_archives(session, ended_before_seconds=ARCHIVE_GRACE_SECONDS)
        done = 0
        for pipeline_id in pending:
            if not archive_pipeline_log(self._settings.database_url, self._redis, pipeline_id):
                break
            done += 1
        return done


@asynccontextmanager
async def pipeline_watch_loop(settings: Settings, queue: PipelineQueue) -> AsyncIterator[None]:
    """Run a watch pass now and then every PIPELINE_RECOVERY_SECONDS / 8."""
    watch = PipelineWatch(settings, queue)
    interval = pipeline_lease.heartbeat_interval(settings)
    async with every(interval, watch.run_once, name="pipeline-watch"):
        yield
