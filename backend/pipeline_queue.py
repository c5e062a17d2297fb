"""Puts pipelines on the Celery broker and makes sure none is left off it.

Callers commit the pipeline row first and only then send. When the broker is down the row
keeps `enqueued_at` NULL and the re-queue loop sends it once Redis answers again, so an accepted
webhook is never lost. The loop also sends again a pipeline whose message vanished after the send
(`release_vanished`). A send to a dead broker must fail in milliseconds (kombu's connection
retries off, short socket timeouts): a burst of webhooks during an outage still has to be
answered within GitHub's 10 s. After one failure, request handlers stop trying for a moment
and leave the probing to the loop, so an unreachable (not just refused) broker costs each
request nothing.

Tasks are sent by name, so the backend never imports the worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Final

import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from backend.metrics import ENQUEUE_FAILURES, PIPELINE_QUEUE_DEPTH, PIPELINES_AWAITING_ENQUEUE
from backend.periodic import every
from mlops_core.database import engine_for, session_scope
from mlops_core.pipeline_lease import stale_after
from mlops_core.schema import Pipeline, utcnow
from mlops_core.settings import Settings
from mlops_core.states import PipelineStatus
from mlops_core.task_queue import (
    CANCEL_CHANNEL,
    PIPELINE_QUEUE,
    RUN_PIPELINE_TASK,
    answering_workers,
    make_celery,
    waiting_pipeline_ids,
)

logger = logging.getLogger(__name__)

BROKER_SOCKET_TIMEOUT_SECONDS: Final = 2.0
# After a failed send, request handlers skip sending for this long (the loop keeps probing).
BROKER_DOWN_BACKOFF_SECONDS: Final = 2.0
REQUEUE_BATCH: Final = 500


class PipelineQueue:
    """The backend's side of the Celery queue: send, record, re-send, and ask to cancel."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._celery = make_celery(settings, name="backend")
        options = dict(self._celery.conf.broker_transport_options)
        options.update(
            max_retries=0,
            socket_connect_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
        )
        self._celery.conf.broker_transport_options = options
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
            socket_timeout=BROKER_SOCKET_TIMEOUT_SECONDS,
        )
        self._lock = threading.Lock()
        # Pipelines being sent, or sent and not yet marked in the DB: not to be re-sent.
        self._in_flight: set[int] = set()
        self._unmarked: set[int] = set()
        self._marking = False
        self._down_until = 0.0

    def enqueue(self, pipeline_id: int, *, probe: bool = False) -> bool:
        """Send the pipeline to the workers; True once it is on the broker.

        False means it stays for the re-queue loop. `probe` sends even while the broker was
        recently seen down (the loop uses it to find out that Redis is back).
        """
        if not probe and time.monotonic() < self._down_until:
            return False
        with self._lock:
            self._in_flight.add(pipeline_id)
        try:
            self._celery.send_task(RUN_PIPELINE_TASK, args=[pipeline_id], retry=False)
        except Exception as exc:  # kombu and redis-py raise many kinds; all mean "not sent"
            with self._lock:
                self._in_flight.discard(pipeline_id)
            self._down_until = time.monotonic() + BROKER_DOWN_BACKOFF_SECONDS
            ENQUEUE_FAILURES.inc()
            logger.warning(
                "pipeline %s not queued, broker unreachable (%s); it will be re-queued",
                pipeline_id,
                exc,
            )
            return False
        self._down_until = 0.0
        self._mark_enqueued(pipeline_id)
        return True

    def _mark_enqueued(self, pipeline_id: int) -> None:
        """Record sends in `enqueued_at`, many per transaction under load (group commit).

        With SQLite each commit waits for the disk, so one UPDATE per delivery would cap a
        burst at a few hundred per second. The first thread to arrive writes every send
        recorded so far; threads arriving meanwhile leave theirs to it and return. Until its
        mark is written a pipeline stays in `_in_flight`, which the re-queue loop skips.
        """
        with self._lock:
            self._unmarked.add(pipeline_id)
            if self._marking:
                return
            self._marking = True
        batch: set[int] = set()
        try:
            while True:
                with self._lock:
                    self._unmarked -= batch
                    self._in_flight -= batch
                    batch = set(self._unmarked)
                    if not batch:
                        self._marking = False  # under the lock: no send can slip past
                        return
                with engine_for(self._settings.database_url).begin() as conn:
                    conn.execute(
                        update(Pipeline)
                        .where(Pipeline.id.in_(batch), Pipeline.enqueued_at.is_(None))
                        .values(enqueued_at=utcnow())
                    )
        except SQLAlchemyError:
            # Left in _unmarked: the next send or re-queue pass writes them.
            logger.exception("could not record that pipelines %s were queued", batch)
        finally:
            with self._lock:
                self._marking = False

    def requeue_pending(self) -> int:
        """Send queued pipelines that never reached the broker; return how many were sent.

        Rows younger than one interval are left alone: their request may still be sending them
        (in this process or another replica), and a second message would only be skipped later.
        """
        with self._lock:
            stranded = next(iter(self._unmarked), None)
        if stranded is not None:
            self._mark_enqueued(stranded)  # marks left over by a failed or ended batch
        self.release_vanished()
        cutoff = utcnow() - timedelta(seconds=self._settings.requeue_interval_seconds)
        pending = (Pipeline.status == PipelineStatus.QUEUED) & Pipeline.enqueued_at.is_(None)
        with session_scope(self._settings.database_url) as session:
            waiting = session.scalar(select(func.count()).select_from(Pipeline).where(pending))
            ids = session.scalars(
                select(Pipeline.id)
                .where(pending, Pipeline.created_at <= cutoff)
                .order_by(Pipeline.id)
                .limit(REQUEUE_BATCH)
            ).all()
        PIPELINES_AWAITING_ENQUEUE.set(waiting or 0)
        with self._lock:
            idle = [pipeline_id for pipeline_id in ids if pipeline_id not in self._in_flight]
        if idle:
            # Read again: a request's send may have been marked (and left _in_flight) since
            # the read above, which would otherwise send its pipeline a second time.
            with session_scope(self._settings.database_url) as session:
                still = set(
                    session.scalars(select(Pipeline.id).where(pending, Pipeline.id.in_(idle)))
                )
            idle = [pipeline_id for pipeline_id in idle if pipeline_id in still]
        sent = 0
        for pipeline_id in idle:
            with self._lock:
                busy = pipeline_id in self._in_flight
            if busy:
                continue
            if not self.enqueue(pipeline_id, probe=True):
                break
            sent += 1
        if sent:
            logger.info("re-queued %d pipeline(s) that had not reached the broker", sent)
        return sent

    def release_vanished(self) -> int:
        """Mark for sending again the queued pipelines whose message is gone; return how many.

        A message can vanish after the send, before any worker claims its pipeline: Redis came
        back without its data (restarted with no persistence, or replaced), or a worker died
        between taking the message and claiming the pipeline (kombu then keeps the message in
        its `unacked` hash for the visibility timeout, an hour by default). Nothing else would
        ever send such a pipeline. One still `queued` PIPELINE_RECOVERY_SECONDS / 2 after its
        send, with no message in the queue, gets `enqueued_at` NULL: the pass sends it again.

        Only pipelines sent that long ago are looked up on the broker, so with no backlog the
        queue is not read at all. The UPDATE comes after the queue is read and checks that the
        pipeline is still queued, so only a message a worker took in the milliseconds between
        that read and its claim could be sent twice. A second message is harmless: the first
        delivery claims the pipeline and the other finds it running or ended
        (worker/run_lock.py). While Redis is down this does nothing.
        """
        cutoff = utcnow() - timedelta(seconds=stale_after(self._settings))
        sent_long_ago = (Pipeline.status == PipelineStatus.QUEUED) & (Pipeline.enqueued_at < cutoff)
        with session_scope(self._settings.database_url) as session:
            candidates = set(session.scalars(select(Pipeline.id).where(sent_long_ago)))
        if not candidates:  # the usual case: no queue read, no write (no lock on SQLite)
            return 0
        try:
            candidates -= waiting_pipeline_ids(self.redis)
        except redis.RedisError:
            return 0
        if not candidates:
            return 0
        with session_scope(self._settings.database_url) as session:
            vanished = session.scalars(
                update(Pipeline)
                .where(sent_long_ago, Pipeline.id.in_(candidates))
                .values(enqueued_at=None)
                .returning(Pipeline.id)
                .execution_options(synchronize_session=False)
            ).all()
        if vanished:
            logger.warning(
                "pipelines %s were sent but their message is gone and no worker claimed them; "
                "sending them again",
                sorted(vanished),
            )
        return len(vanished)

    def measure_depth(self) -> None:
        """Record how many pipelines wait on the broker for a worker (PIPELINE_QUEUE_DEPTH).

        Celery's Redis transport keeps a queue's waiting messages in a list named after the
        queue (a message a worker took moves to its `unacked` hash), so the list's length is
        the backlog. Read here, off the request path, rather than at each scrape.
        """
        try:
            depth = self.redis.llen(PIPELINE_QUEUE)
        except redis.RedisError:
            PIPELINE_QUEUE_DEPTH.set(math.nan)
            return
        PIPELINE_QUEUE_DEPTH.set(depth)

    def request_cancel(self, pipeline_id: int) -> bool:
        """Tell the worker running the pipeline to stop now; False if Redis is unreachable.

        The DB flag `cancel_requested` is the durable request; this message makes it immediate.
        """
        try:
            self.redis.publish(CANCEL_CHANNEL, str(pipeline_id))
        except redis.RedisError as exc:
            logger.warning("cancel of pipeline %s not announced (%s)", pipeline_id, exc)
            return False
        return True

    def workers(self, timeout: float) -> list[str]:
        """Node names of the workers consuming the pipelines queue that answer within `timeout`.

        Blocks for the whole timeout (call it from a thread); raises when Redis is unreachable.
        """
        return answering_workers(self._celery, timeout=timeout, queue=PIPELINE_QUEUE)

    def close(self) -> None:
        """Release broker and Redis connections."""
        self._celery.close()
        self.redis.close()


@asynccontextmanager
async def requeue_loop(settings: Settings, queue: PipelineQueue) -> AsyncIterator[None]:
    """Run a re-queue pass and read the queue's depth at start, then every
    REQUEUE_INTERVAL_SECONDS (the queue itself is its owner's to close)."""

    def requeue_pass() -> None:
        try:
            queue.requeue_pending()
        finally:
            queue.measure_depth()

    async with every(settings.requeue_interval_seconds, requeue_pass, name="pipeline-requeue"):
        yield
