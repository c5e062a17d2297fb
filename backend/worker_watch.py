"""The Celery workers on the pipelines queue as last seen, so /ready answers from memory.

Asking workers is a control broadcast that waits out its whole reply window (any number may
answer): done per request, it made every /ready take over a second and sent one broadcast per
probe. Instead a background pass asks every WORKER_CHECK_INTERVAL_SECONDS, together with the
kernel-isolation report of each node that answered, and /ready serves the last sighting with its
age. A pass that hangs (a broker that stops answering mid-call) shows as an ageing sighting,
which /ready then reports as stale rather than as the last good answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import redis

from backend.periodic import every
from backend.pipeline_queue import PipelineQueue
from mlops_core.task_queue import KERNEL_ISOLATION_KEY, PIPELINE_QUEUE

# Workers answer a control request within milliseconds; the wait is spent in full (any number
# may answer), so it is kept short.
WORKER_REPLY_SECONDS: Final = 1.0
# A sighting older than this many check intervals (plus the reply window) comes from a pass that
# has not finished: the broker no longer answers.
STALE_AFTER_INTERVALS: Final = 3
# /ready asked before the first pass ends waits for it this long (the reply window and a slow
# broker connection), then answers without it.
FIRST_SIGHTING_WAIT_SECONDS: Final = 1.5
NOT_CHECKED_YET: Final = "not checked yet (the first check is under way)"


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:300]


@dataclass(frozen=True)
class WorkerSighting:
    """One pass's answer: "ok" with the answering nodes, else why none could be counted."""

    state: str
    nodes: list[str] = field(default_factory=list)
    # node → what contains its notebooks, as the worker reported it at start (worker/celery_app).
    isolation: dict[str, str] = field(default_factory=dict)
    # time.monotonic() when the pass ended.
    seen_at: float = field(default_factory=time.monotonic)

    @property
    def age_seconds(self) -> float:
        return max(0.0, time.monotonic() - self.seen_at)


def isolation_reports(client: redis.Redis, nodes: list[str]) -> dict[str, str]:
    """What each answering worker reported about its kernel sandbox (empty when unknown)."""
    if not nodes:
        return {}
    try:
        states = client.hmget(KERNEL_ISOLATION_KEY, nodes)
    except redis.RedisError:
        return {}
    return {node: state.decode() for node, state in zip(nodes, states, strict=True) if state}


class WorkerWatch:
    """Holds the latest WorkerSighting; `look` (blocking) makes a new one."""

    def __init__(self, queue: PipelineQueue, interval_seconds: float) -> None:
        self._queue = queue
        self.interval_seconds = interval_seconds
        self._latest: WorkerSighting | None = None
        self._first = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def look(self) -> None:
        """Ask the workers once and keep the answer (runs on a worker thread)."""
        try:
            nodes = self._queue.workers(WORKER_REPLY_SECONDS)
        except Exception as exc:  # kombu raises several unrelated types when Redis is away
            sighting = WorkerSighting(_describe(exc))
        else:
            if nodes:
                sighting = WorkerSighting("ok", nodes, isolation_reports(self._queue.redis, nodes))
            else:
                sighting = WorkerSighting(f"no worker answered on queue {PIPELINE_QUEUE!r}")
        self._latest = sighting
        self._loop.call_soon_threadsafe(self._first.set)

    async def latest(self) -> WorkerSighting:
        """The last sighting (waiting briefly for the first one); a stale one says so."""
        if self._latest is None:
            try:
                await asyncio.wait_for(self._first.wait(), FIRST_SIGHTING_WAIT_SECONDS)
            except TimeoutError:
                return WorkerSighting(NOT_CHECKED_YET)
        sighting = self._latest
        assert sighting is not None  # set before the event
        stale_after = STALE_AFTER_INTERVALS * self.interval_seconds + WORKER_REPLY_SECONDS
        if sighting.age_seconds > stale_after:
            return WorkerSighting(
                f"the broker has not answered the worker check for {sighting.age_seconds:.0f}s",
                seen_at=sighting.seen_at,
            )
        return sighting


@asynccontextmanager
async def running_worker_watch(
    queue: PipelineQueue, interval_seconds: float
) -> AsyncIterator[WorkerWatch]:
    """A WorkerWatch looking now and every `interval_seconds` until the context ends."""
    watch = WorkerWatch(queue, interval_seconds)
    async with every(interval_seconds, watch.look, name="worker-watch"):
        yield watch
