"""One Redis pub/sub connection per backend process, fanned out to every log viewer in it.

The process holds a single pattern subscription (`mlops:logs:*`) opened at start, instead of
one SUBSCRIBE per pipeline managed by refcount: a viewer's subscription is then an in-process
registration that is live the instant it returns, so "subscribe, then read history" has no
window in which a line is neither in the history read nor delivered live, and no
subscribe/unsubscribe confirmations have to be matched up. Hundreds of viewers, on any number
of pipelines, cost one Redis connection. The price is that a process also receives lines of
pipelines nobody in it watches; those are dropped after a dictionary lookup, without parsing.

A viewer that falls behind (its queue is full) or that may have missed lines (the Redis
connection dropped and came back) is sent a `RESYNC` marker instead of the lost lines: it then
re-reads the replay list after the last seq it sent, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from backend.log_history import LogEntry
from mlops_core.log_events import LOG_CHANNEL_PATTERN, pipeline_id_of_channel
from mlops_core.settings import Settings

logger = logging.getLogger(__name__)

# Live lines a viewer may have waiting before it is told to re-read the replay list instead.
VIEWER_QUEUE_SIZE: Final = 2000
RECONNECT_MAX_DELAY_SECONDS: Final = 5.0


class Resync:
    """Marker: lines may have been lost for this viewer; re-read the history."""


RESYNC: Final = Resync()
LiveItem = LogEntry | Resync


class LogStreamUnavailable(RuntimeError):
    """Redis is not reachable, so live lines cannot be followed right now."""


class LogSubscription:
    """One viewer's live feed of one pipeline."""

    def __init__(self, pipeline_id: int) -> None:
        self.pipeline_id = pipeline_id
        self._queue: asyncio.Queue[LiveItem] = asyncio.Queue(VIEWER_QUEUE_SIZE)

    def offer(self, item: LiveItem) -> None:
        """Queue an item without ever blocking the fan-out; overflow becomes one RESYNC."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            logger.warning(
                "a viewer of pipeline %s fell behind; it re-reads history", self.pipeline_id
            )
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    def ready(self) -> list[LiveItem]:
        """Every item already queued, without waiting (the viewer sends them as one batch)."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def next(self, wait_seconds: float) -> LiveItem | None:
        """The next live item, or None if nothing arrived within `wait_seconds`."""
        if not self._queue.empty():  # the common case while lines flow: skip the timer
            return self._queue.get_nowait()
        try:
            return await asyncio.wait_for(self._queue.get(), wait_seconds)
        except TimeoutError:
            return None


class LogFanout:
    """Reads the pattern subscription and hands each line to the viewers of its pipeline."""

    def __init__(self, redis_url: str, *, health_check_seconds: float = 15.0) -> None:
        # Named after the process so operators (and tests) can see its connections in CLIENT LIST.
        self.client: aioredis.Redis = aioredis.from_url(
            redis_url,
            socket_keepalive=True,
            socket_connect_timeout=5,
            client_name=f"mlops-backend-{os.getpid()}",
        )
        self._health_check_seconds = health_check_seconds
        self._viewers: dict[int, set[LogSubscription]] = {}
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def viewer_count(self) -> int:
        return sum(len(viewers) for viewers in self._viewers.values())

    async def start(self) -> None:
        """Start reading in the background; a Redis that is down is retried, not fatal."""
        self._task = asyncio.create_task(self._run(), name="log-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, pipeline_id: int, *, wait_seconds: float = 3.0
    ) -> AsyncIterator[LogSubscription]:
        """Register a viewer; once entered, every line published afterwards reaches it.

        Raises LogStreamUnavailable when the pattern subscription is not up within
        `wait_seconds` (Redis down).
        """
        try:
            await asyncio.wait_for(self._connected.wait(), wait_seconds)
        except TimeoutError as exc:
            raise LogStreamUnavailable("the log stream (Redis) is unavailable") from exc
        subscription = LogSubscription(pipeline_id)
        self._viewers.setdefault(pipeline_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            viewers = self._viewers.get(pipeline_id)
            if viewers is not None:
                viewers.discard(subscription)
                if not viewers:
                    del self._viewers[pipeline_id]

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as exc:
                if self._connected.is_set():
                    logger.warning("log fan-out lost Redis (%s); reconnecting", exc)
                self._connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
            else:
                delay = 0.1

    async def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            await pubsub.psubscribe(LOG_CHANNEL_PATTERN)
            confirmation = await pubsub.get_message(timeout=5.0)
            if confirmation is None or confirmation["type"] != "psubscribe":
                raise RedisError(f"unexpected answer to PSUBSCRIBE: {confirmation!r}")
            # Lines published while disconnected never reached us: viewers re-read history.
            for viewers in self._viewers.values():
                for viewer in viewers:
                    viewer.offer(RESYNC)
            self._connected.set()
            logger.info("log fan-out subscribed to %s", LOG_CHANNEL_PATTERN)
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=self._health_check_seconds)
                if message is None:
                    # A silent half-open connection would block forever: PING it, and give up
                    # on it when even the PONG does not come back.
                    if pinged:
                        raise RedisConnectionError("no answer to PING on the log subscription")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                if message["type"] == "pmessage":
                    self._dispatch(message["channel"], message["data"])
        finally:
            self._connected.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        pipeline_id = pipeline_id_of_channel(channel.decode())
        viewers = self._viewers.get(pipeline_id) if pipeline_id is not None else None
        if not viewers:
            return
        raw = data.decode()
        try:
            event = LogEntry.from_raw(raw)
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping malformed log event on %s: %.200s", channel, raw)
            return
        for viewer in viewers:
            viewer.offer(event)


@contextlib.asynccontextmanager
async def running_log_fanout(settings: Settings) -> AsyncIterator[LogFanout]:
    """The process-wide fan-out, listening while the app runs."""
    fanout = LogFanout(settings.redis_url)
    await fanout.start()
    try:
        yield fanout
    finally:
        await fanout.stop()
